"""Backbones and checkpoints: what training, the probe and the apps share.

``build_backbone`` makes an untrained backbone by name (``ARCHS``, or
``timm:NAME`` for a model of the optional timm package);
``save_checkpoint`` / ``load_checkpoint`` are the one writer and reader of
cwarp-train's checkpoint files; ``backbone_from_checkpoint`` gives a
checkpoint's trained backbone back. Nothing here knows how a backbone was
trained or how it is evaluated.
"""
from cwarp._constants import ARCHS
from cwarp.models.backbones import Backbone, build_backbone, check_backbone_args, convert_sync_batchnorm
from cwarp.models.checkpoint import (CheckpointError, CheckpointNotFoundError, backbone_from_checkpoint,
                                     backbone_from_config, load_checkpoint, save_checkpoint)

__all__ = ["ARCHS", "Backbone", "build_backbone", "check_backbone_args", "convert_sync_batchnorm", "CheckpointError",
           "CheckpointNotFoundError", "backbone_from_checkpoint", "backbone_from_config", "load_checkpoint",
           "save_checkpoint"]
