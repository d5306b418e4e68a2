"""Loads the CMake-built cwarp library (not the setup.py one) and runs its op.

Run in a fresh process, without importing cwarp: both builds register the
same operator library, which may happen only once per process.
"""
import sys

import torch

path = sys.argv[1]
torch.ops.load_library(path)
image = torch.rand(2, 3, 9, 11)
params = torch.tensor([[[0.0, 0.0, 0.5, 0.1, -0.05]], [[0.2, -0.1, 0.4, -0.1, 0.0]]])
out = torch.ops.cwarp.local_warp(image, params, None, 7, 8, "translate", "border", False)
# Independent check against grid_sample with the same field, written out here.
ys = (2 * torch.arange(7, dtype=torch.float64) + 1) / 7 - 1
xs = (2 * torch.arange(8, dtype=torch.float64) + 1) / 8 - 1
py, px = torch.meshgrid(ys, xs, indexing="ij")
grids = []
for b in range(2):
    cx, cy, r, dx, dy = params[b, 0].double().tolist()
    u = r * r - ((px - cx) ** 2 + (py - cy) ** 2)
    w = torch.where(u > 0, (u / (u + dx * dx + dy * dy)) ** 2, torch.zeros_like(u))
    grids.append(torch.stack([px - w * dx, py - w * dy], -1))
expected = torch.nn.functional.grid_sample(image.double(), torch.stack(grids), padding_mode="border",
                                           align_corners=False)
err = (out.double() - expected).abs().max().item()
print(f"cmake build {path}: local_warp max abs error {err:.2e}")
sys.exit(0 if err < 1e-5 else 1)
