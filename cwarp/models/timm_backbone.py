"""Backbones from timm: ``--arch timm:NAME`` is timm's model NAME, untrained, as a feature extractor.

timm is an optional dependency (``pip install 'cwarp[timm]'``); it is
imported only when such an arch is asked for. The model is
``timm.create_model(NAME, pretrained=False, num_classes=0, in_chans=C)``:
no classifier, so its forward gives its pooled features, (B, feature_dim).
It is built as timm defines it (no weights are downloaded, and unlike
cwarp's own ResNets its stem is not changed for small images); models with a
fixed input size (ViTs, Swin, ...) are built for ``image_size``. One forward
pass of a zero image at build time measures ``feature_dim`` and turns a size or
channel count the model cannot take into a one-line error.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cwarp._constants import TIMM_PREFIX

__all__ = ["TimmBackbone", "build_timm_backbone", "check_timm_arch", "is_timm_arch", "convert_sync_batchnorm",
           "LIST_MODELS_HINT"]

LIST_MODELS_HINT = "list timm's names with: python -c \"import timm; print(timm.list_models('*resnet*'))\""


def is_timm_arch(arch: str) -> bool:
    return isinstance(arch, str) and arch.startswith(TIMM_PREFIX)


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ValueError(f"--arch {TIMM_PREFIX}NAME builds a timm model, and the timm package is not installed: "
                         f"pip install 'cwarp[timm]' (or pip install timm)") from None
    return timm


def check_timm_arch(arch: str) -> str:
    """timm's model name of ``timm:NAME``; ValueError (one line) when timm is missing or has no such model."""
    name = arch[len(TIMM_PREFIX):] if is_timm_arch(arch) else ""
    if not name.strip():
        raise ValueError(f"expected {TIMM_PREFIX}NAME with NAME a timm model, got {arch!r}")
    timm = _import_timm()
    if not timm.is_model(name):
        raise ValueError(f"timm {timm.__version__} has no model {name!r} (from --arch {arch}); {LIST_MODELS_HINT}")
    try:
        _pretrained_cfg(timm, name)
    except RuntimeError as err:   # NAME.TAG with a tag timm does not know
        raise ValueError(f"timm {timm.__version__}: {_first_line(err)} (from --arch {arch}); {LIST_MODELS_HINT}"
                         ) from None
    return name


def _pretrained_cfg(timm, name: str):
    """timm's default configuration of a model (its input size, ...); no weights are read."""
    return timm.models.get_pretrained_cfg(name)


class TimmBackbone(nn.Module):
    """A timm model without its classifier: forward gives its pooled features (B, feature_dim).

    The timm model is ``net``, so a checkpoint's backbone weights are timm's
    own state_dict with the prefix ``net.``.
    """

    def __init__(self, net: nn.Module, feature_dim: int, arch: str, in_channels: int, image_size: int):
        super().__init__()
        self.net = net
        self.feature_dim = feature_dim
        self.arch = arch
        self.in_channels = in_channels
        self.image_size = image_size

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_timm_backbone(arch: str, in_channels: int, image_size: int) -> TimmBackbone:
    """An untrained timm backbone for (B, in_channels, image_size, image_size); ValueError (one line) when
    timm is missing, has no such model, or the model cannot take such images."""
    name = check_timm_arch(arch)
    timm = _import_timm()
    fixed = getattr(_pretrained_cfg(timm, name), "fixed_input_size", False)
    sized = {"img_size": image_size} if fixed else {}
    what = f"timm model {name} for {in_channels}-channel {image_size} x {image_size} images"
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **sized)
    except Exception as err:  # noqa: BLE001  (each model's constructor raises its own types)
        raise ValueError(f"cannot build the {what}: {type(err).__name__}: {_first_line(err)}") from err
    try:
        features = _probe_output(net, in_channels, image_size)
    except Exception as err:  # noqa: BLE001  (a forward that cannot take the size fails anywhere inside)
        raise ValueError(f"the {what} fails on such an input ({type(err).__name__}: {_first_line(err)}); "
                         f"choose another --image-size or model") from err
    if features.dim() != 2:
        raise ValueError(f"the {what} gives features of shape {tuple(features.shape)} for one image, not "
                         f"(1, feature_dim): it has no pooled output")
    return TimmBackbone(net, int(features.shape[1]), arch, in_channels, image_size)


def _probe_output(net: nn.Module, in_channels: int, image_size: int) -> Tensor:
    """The model's output for one zero image, in eval mode (no BatchNorm statistic changes, no RNG draw)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(torch.zeros(1, in_channels, image_size, image_size))
    finally:
        net.train(was_training)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with SyncBatchNorm layers, keeping timm's fused BatchNorm + activation layers whole.

    torch's converter would turn timm's BatchNormAct2d into a bare
    SyncBatchNorm and drop its activation; timm's converts both kinds.
    """
    return _import_timm().layers.convert_sync_batchnorm(model)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return " ".join(text.splitlines()[0].split())[:300] if text else type(err).__name__
