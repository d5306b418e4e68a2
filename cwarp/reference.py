"""The plain-PyTorch oracles of every op, in one namespace.

Each lives beside its op (``cwarp/ops/<op>/reference.py``); the tests check
every backend against these, and the benchmarks time them as the eager
baseline.
"""
from cwarp.ops.augment_views.reference import render as augment_views
from cwarp.ops.augment_views.reference import source_mean_gray
from cwarp.ops.contrastive_loss.reference import contrastive_loss
from cwarp.ops.local_warp.reference import base_grid, local_warp, local_warp_grid
from cwarp.ops.warp_points.reference import sampling_map, warp_points

__all__ = ["local_warp", "local_warp_grid", "base_grid", "warp_points", "sampling_map", "contrastive_loss", "augment_views", "source_mean_gray"]
