"""Backbones: images (B, C, S, S) float -> features (B, feature_dim).

"resnet18" and "resnet50" are torchvision's, untrained; for images of at most
96 pixels their stem becomes a 3x3 stride-1 convolution without max pooling
(as for CIFAR), so a 64x64 face keeps an 8x8 map at the last stage.
"resnet18-small" is ResNet-18 at half width and "convnet-small" a plain stack
of conv-BN-ReLU blocks (widths 32-64-128-256); both are for short CPU runs.
"convnet-small-s2" is convnet-small whose stem convolution has stride 2: every
map has a quarter of the pixels, for a quarter of the arithmetic.
"timm:NAME" is any model of the optional timm package
(cwarp.models.timm_backbone).
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock

from cwarp._constants import ARCHS
from cwarp.models import timm_backbone

__all__ = ["ARCHS", "build_backbone", "check_backbone_args", "Backbone", "convert_sync_batchnorm"]

# Up to this size the stem keeps full resolution; above it, the ImageNet stem.
SMALL_STEM_MAX = 96
# With the small stem the network downsamples 8 times, so 16 pixels leave a
# 2x2 last map; below that the deepest stage computes on padding.
MIN_IMAGE_SIZE = 16
# The backbones whose small stem has stride 2 (and so downsample 16 times).
STRIDE2_STEM = ("convnet-small-s2",)


def _min_image_size(arch: str) -> int:
    return 2 * MIN_IMAGE_SIZE if arch in STRIDE2_STEM else MIN_IMAGE_SIZE


def _stem(in_channels: int, width: int, image_size: int, stride: int = 1) -> List[nn.Module]:
    if image_size <= SMALL_STEM_MAX:
        return [nn.Conv2d(in_channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True)]
    return [nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1)]


def check_backbone_args(arch: str, in_channels: int, image_size: int) -> None:
    """ValueError unless build_backbone can take these arguments (for timm:NAME, that timm has NAME; whether
    the model takes such images is found when it is built)."""
    timm = timm_backbone.is_timm_arch(arch)
    if not timm and arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)} or timm:NAME")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if timm:
        timm_backbone.check_timm_arch(arch)
    elif image_size < _min_image_size(arch):
        factor = 16 if arch in STRIDE2_STEM else 8
        raise ValueError(f"image_size {image_size} is too small for {arch}: it needs at least "
                         f"{_min_image_size(arch)} pixels (it downsamples by {factor})")


class Backbone(nn.Module):
    """A trunk followed by global average pooling: forward gives (B, feature_dim)."""

    def __init__(self, trunk: nn.Module, feature_dim: int, arch: str, in_channels: int, image_size: int):
        super().__init__()
        self.trunk = trunk
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        self.arch = arch
        self.in_channels = in_channels
        self.image_size = image_size

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.trunk(x)), 1)


def _torchvision_resnet(arch: str, in_channels: int, image_size: int) -> nn.Module:
    # Kept as torchvision's ResNet, so its state_dict keys (conv1, layer1, ...) are the usual ones.
    net = (resnet18 if arch == "resnet18" else resnet50)(weights=None)
    if image_size <= SMALL_STEM_MAX:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    # The same init torchvision gives its own convolutions.
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    net.arch, net.in_channels, net.image_size = arch, in_channels, image_size
    return net


def _resnet18_small(in_channels: int, image_size: int) -> Backbone:
    widths = (32, 64, 128, 256)
    layers: List[nn.Module] = _stem(in_channels, widths[0], image_size)
    in_width = widths[0]
    for stage, width in enumerate(widths):
        stride = 1 if stage == 0 else 2
        down = None
        if stride != 1 or in_width != width:
            down = nn.Sequential(nn.Conv2d(in_width, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        layers += [BasicBlock(in_width, width, stride, down), BasicBlock(width, width)]
        in_width = width
    trunk = nn.Sequential(*layers)
    _init(trunk)
    return Backbone(trunk, widths[-1], "resnet18-small", in_channels, image_size)


def _convnet_small(in_channels: int, image_size: int, arch: str = "convnet-small") -> Backbone:
    widths = (32, 64, 128, 256)
    layers: List[nn.Module] = _stem(in_channels, widths[0], image_size, 2 if arch in STRIDE2_STEM else 1)
    in_width = widths[0]
    for stage, width in enumerate(widths):
        stride = 1 if stage == 0 else 2
        layers += [nn.Conv2d(in_width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_width = width
    trunk = nn.Sequential(*layers)
    _init(trunk)
    return Backbone(trunk, widths[-1], arch, in_channels, image_size)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_backbone(arch: str, in_channels: int = 3, image_size: int = 64) -> nn.Module:
    """An untrained backbone for (B, in_channels, image_size, image_size) inputs.

    Raises ValueError for an unknown arch or an image size it cannot take
    (timm:NAME: also when timm is not installed).
    The result has ``feature_dim`` (int), ``arch``, ``in_channels`` and ``image_size``.
    """
    check_backbone_args(arch, in_channels, image_size)
    if timm_backbone.is_timm_arch(arch):
        return timm_backbone.build_timm_backbone(arch, in_channels, image_size)
    if arch in ("resnet18", "resnet50"):
        return _torchvision_resnet(arch, in_channels, image_size)
    if arch == "resnet18-small":
        return _resnet18_small(in_channels, image_size)
    return _convnet_small(in_channels, image_size, arch)


def convert_sync_batchnorm(model: nn.Module, arch: str) -> nn.Module:
    """``model`` (a backbone of ``arch`` with its heads) with its BatchNorm layers as SyncBatchNorm."""
    if timm_backbone.is_timm_arch(arch):
        return timm_backbone.convert_sync_batchnorm(model)
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
