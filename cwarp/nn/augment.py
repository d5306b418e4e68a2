"""ContraWarping's views, rendered in one fused kernel (docs/api.md).

``ContraWarpAugment`` samples small per-sample parameter tensors (outside the
kernels, from an optional torch.Generator) and renders pos1, pos2 and the N
negatives of a whole batch with one call of ``cwarp::augment_views``: per
output pixel the affine (crop, resize, rotation, flip) composed with the local
warps, a bilinear sample of the uint8 or float source, brightness, contrast,
saturation, hue, grayscale, normalization; one read of the source, one write
of the result.

Differences from a torchvision pipeline, on purpose:

- Colour jitter order. torchvision's ColorJitter applies brightness,
  contrast, saturation and hue in a random permutation per call; cwarp
  always applies them in that fixed order (one code path per pixel).
- Contrast. torchvision blends with the mean gray value of the image it is
  given (already cropped, resized, brightness-adjusted). cwarp blends with
  ``clamp(brightness * mean_gray)``, where ``mean_gray`` is the mean gray of
  the whole source image, from one cheap pre-pass inside the op (oracle:
  ``augment_reference.source_mean_gray``). For an aligned face crop the two
  means are close; they differ most for crops that cut off a bright or dark
  border, and where brightness saturates.
- Crop and rotation in one resampling. RandomResizedCrop followed by
  RandomRotation resamples twice and fills the rotated-in corners with
  zeros; cwarp samples the source once, so those corners show the source
  around the crop (``padding_mode`` decides beyond the source's edge).
- Crop sampling. The crop is continuous (not rounded to pixels) and an
  aspect/scale draw that does not fit is clipped to the image instead of
  re-drawn up to 10 times.

Input values: uint8 images are read as x / 255. Float images must lie in
``value_range`` ((0, 1) by default; (0, 255) accepts that scale and divides
by 255): a batch with a value outside it, NaN included, raises ValueError.
The check is one min/max pass over the batch and one host sync; it is what
keeps a float batch in [0, 255] from giving views that are silently wrong.
float16 / bfloat16 / float64 images are converted to float32 first (one extra
pass); the kernels read uint8 and float32 directly. Landmarks must be finite
and within [-LANDMARK_BOUND, LANDMARK_BOUND] in normalized coordinates (the
image spans [-1, 1]); anything else raises ValueError.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from cwarp._constants import (DEFAULT_WARP_MAGNITUDE, DEFAULT_WARP_RADIUS, IMAGENET_MEAN, IMAGENET_STD,
                              NEGATIVE_KINDS, WARP_CENTERS)
from cwarp.ops import _checks
from cwarp.ops._checks import check_range
from cwarp.ops.augment_views.api import augment_views
from cwarp.ops.local_warp.sampling import DEFAULT_CENTER_JITTER, FACE_LANDMARKS_5, draw_local_warps
from cwarp.ops.warp_points.api import warp_points
from cwarp.ops.warp_points.reference import invert_affine

__all__ = ["ContraWarpAugment", "AugmentParams", "Views"]

_OP = "cwarp.ContraWarpAugment"
_WHERE = f"{_OP}()"
_INPUT_DTYPES = (torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Landmarks further than this from the image centre (in normalized units, the
# image spans [-1, 1]) are taken for a mistake: pixel coordinates, or garbage.
LANDMARK_BOUND = 2.0
# An affine negative: pos2 turned by up to this many degrees and scaled by up
# to this factor either way about the view's centre, then shifted by a
# warp_magnitude (the warps' displacement range, so the two kinds move content
# by comparable amounts).
AFFINE_NEGATIVE_ROTATION = 10.0
AFFINE_NEGATIVE_SCALE = 1.1


@dataclasses.dataclass
class AugmentParams:
    """Everything that decides the views of a batch; V = 2 + num_negatives.

    ``theta`` (B, V, 2, 3): output position -> source position, as in
    F.affine_grid (view 0 is pos1, view 1 pos2, views 2.. the negatives,
    which share pos2's theta). ``warps`` (B, V, K, 5): local warps
    (cx, cy, r, dx, dy) in view coordinates; rows with d = 0 (all of pos1's
    and pos2's) do nothing. ``color`` (B, V, 5): brightness, contrast and
    saturation factors, hue shift, grayscale flag (factors 1, shift 0 and
    flag 0 are the identity). ``crop`` (B, 2, 4) (x0, y0, w, h in source
    pixels), ``angle`` (B, 2) in degrees and ``flip`` (B, 2) describe pos1's
    and pos2's geometry for logging; rendering uses theta, warps and color.
    ``landmarks`` (B, L, 2): the source landmarks the batch was drawn with
    (None without), which ``Views.landmarks`` follows into every view.
    """
    theta: torch.Tensor
    warps: torch.Tensor
    color: torch.Tensor
    crop: Optional[torch.Tensor] = None
    angle: Optional[torch.Tensor] = None
    flip: Optional[torch.Tensor] = None
    landmarks: Optional[torch.Tensor] = None

    @property
    def num_views(self) -> int:
        return int(self.theta.shape[1])

    def to(self, device) -> "AugmentParams":
        return AugmentParams(*(None if t is None else t.to(device) for t in dataclasses.astuple(self)))

    def view_landmarks(self, kind: str = "translate") -> Optional[torch.Tensor]:
        """Where ``landmarks`` are in each view, (B, V, L, 2) in the views'
        normalized coordinates (cwarp.warp_points of each view's warps and
        affine); None without landmarks. ``kind`` is the augment's warp kind."""
        if self.landmarks is None:
            return None
        theta, warps = self.theta, self.warps
        B, V, L = theta.shape[0], theta.shape[1], self.landmarks.shape[1]
        points = self.landmarks.to(device=theta.device, dtype=theta.dtype)[:, None].expand(B, V, L, 2)
        mapped = warp_points(points.reshape(B * V, L, 2), warps.reshape(B * V, *warps.shape[2:]),
                             theta.reshape(B * V, 2, 3), kind=kind)
        return mapped.view(B, V, L, 2)


@dataclasses.dataclass
class Views:
    """pos1, pos2 (B, C, S, S); negatives (B, N, C, S, S); params for replay.

    The three are views of one (B, 2 + N, C, S, S) tensor, ``all``.
    ``landmarks`` (B, 2 + N, L, 2): where the source landmarks are in each
    view, the local warps of the negatives included (cwarp.warp_points of
    each view's warps and affine), in the view's normalized coordinates; None
    when the batch was drawn without landmarks. Computed on first access.
    """
    pos1: torch.Tensor
    pos2: torch.Tensor
    negatives: torch.Tensor
    params: AugmentParams
    all: torch.Tensor
    kind: str = "translate"

    @functools.cached_property
    def landmarks(self) -> Optional[torch.Tensor]:
        return self.params.view_landmarks(self.kind)


def per_channel(values: Sequence[float], channels: int) -> list:
    """Normalization statistics (1 or 3 values) for images of ``channels`` channels: one value repeated,
    or 3 values averaged to one for a 1-channel image."""
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    return [sum(values) / len(values)]


def _prob(name: str, p) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{_OP}(): expected {name} in [0, 1], got {p!r}")
    return p


class ContraWarpAugment(nn.Module):
    """Renders pos1, pos2 and N locally warped negatives of a batch (docs/api.md).

    Args:
        size: output side S (views are S x S).
        crop_scale: (min, max) fraction of the source area of the crop.
        crop_ratio: (min, max) aspect ratio w / h of the crop, log-uniform.
        rotation: degrees; a number d means uniform in (-d, d).
        flip_p: probability of a horizontal flip.
        brightness, contrast, saturation: a number x means factors uniform in
            (max(0, 1 - x), 1 + x), as torchvision's ColorJitter; or (min, max).
        hue: a number h means a shift uniform in (-h, h), h <= 0.5; or (min, max).
        jitter_p: probability that a view gets colour jitter at all.
        grayscale_p: probability that a view is turned gray.
        mean, std: normalization, C values (3 values for a 1-channel input
            are averaged to one).
        num_negatives: N, the locally warped copies of pos2.
        warps_per_negative: K local warps per negative.
        warp_radius, warp_magnitude: ranges of the warps, in view units.
        kind: "translate" or "gaussian" (docs/api.md).
        warp_centers: "landmarks" (the warps sit on the landmarks, or on
            FACE_LANDMARKS_5 without them) or "uniform" (anywhere in the view).
        negative_kind: "local" (K local warps of pos2) or "affine" (pos2
            under one random similarity transform, no local warp).
        padding_mode: how samples beyond the source's edge read: "border"
            (default), "zeros" or "reflection".
        out_dtype: torch.float32 or torch.bfloat16.
        backend: "auto", "cpp", "triton" or "torch" (the reference, slow).
        value_range: (low, high) of float input images, checked on every
            call and mapped to [0, 1]; uint8 images are always read as x / 255.

    ``aug(images, landmarks=None, generator=None, params=None)`` returns
    ``Views``. ``landmarks`` (B, L, 2) or (L, 2) in the source's normalized
    coordinates (grid_sample convention; finite, within [-2, 2]) place the
    warps; without them the warps sit at FACE_LANDMARKS_5. With them,
    ``views.landmarks`` (B, 2 + N, L, 2) says where they are in every view.
    ``params=views.params`` replays a batch exactly; so does
    ``aug.render(images, params)``.
    """

    def __init__(self, size: int = 112, crop_scale=(0.6, 1.0), crop_ratio=(1.0, 1.0), rotation=10.0,
                 flip_p: float = 0.5, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, jitter_p: float = 0.8,
                 grayscale_p: float = 0.2, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 num_negatives: int = 2, warps_per_negative: int = 2, warp_radius=DEFAULT_WARP_RADIUS,
                 warp_magnitude=DEFAULT_WARP_MAGNITUDE, kind: str = "translate", *, warp_centers: str = "landmarks",
                 negative_kind: str = "local", padding_mode: str = "border",
                 out_dtype: torch.dtype = torch.float32, backend: str = "auto",
                 value_range: Tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"{_OP}(): expected size to be an int > 0, got {size!r}")
        self.size = size
        self.crop_scale = check_range(_WHERE, "crop_scale", crop_scale, low=0.0, high=1.0)
        if self.crop_scale[1] <= 0:
            raise ValueError(f"{_OP}(): expected crop_scale with max > 0, got {crop_scale!r}")
        self.crop_ratio = check_range(_WHERE, "crop_ratio", crop_ratio, low=0.0, low_open=True)
        self.rotation = check_range(_WHERE, "rotation", rotation, scalar="symmetric")
        self.flip_p = _prob("flip_p", flip_p)
        self.brightness = check_range(_WHERE, "brightness", brightness, low=0.0, scalar="jitter")
        self.contrast = check_range(_WHERE, "contrast", contrast, low=0.0, scalar="jitter")
        self.saturation = check_range(_WHERE, "saturation", saturation, low=0.0, scalar="jitter")
        self.hue = check_range(_WHERE, "hue", hue, low=-0.5, high=0.5, scalar="symmetric")
        self.jitter_p = _prob("jitter_p", jitter_p)
        self.grayscale_p = _prob("grayscale_p", grayscale_p)
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) not in (1, 3) or len(std) not in (1, 3):
            raise ValueError(f"{_OP}(): expected mean and std of 1 or 3 values, got {mean!r} and {std!r}")
        if not all(math.isfinite(m) for m in mean):
            raise ValueError(f"{_OP}(): expected finite mean values, got {mean!r}")
        if any(not (s > 0 and math.isfinite(s)) for s in std):
            raise ValueError(f"{_OP}(): expected std > 0, got {std!r}")
        self.mean, self.std = tuple(mean), tuple(std)
        for name, n in (("num_negatives", num_negatives), ("warps_per_negative", warps_per_negative)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"{_OP}(): expected {name} to be an int >= 0, got {n!r}")
        self.num_negatives, self.warps_per_negative = num_negatives, warps_per_negative
        self.warp_radius = check_range(_WHERE, "warp_radius", warp_radius, low=0.0, low_open=True)
        self.warp_magnitude = check_range(_WHERE, "warp_magnitude", warp_magnitude, low=0.0)
        _checks.check_choice(_OP, "kind", kind, _checks.KINDS)
        _checks.check_choice(_OP, "warp_centers", warp_centers, WARP_CENTERS)
        _checks.check_choice(_OP, "negative_kind", negative_kind, NEGATIVE_KINDS)
        self.warp_centers, self.negative_kind = warp_centers, negative_kind
        _checks.check_choice(_OP, "padding_mode", padding_mode, _checks.PADDING_MODES)
        if out_dtype not in _checks.OUT_DTYPES:
            raise TypeError(f"{_OP}(): expected out_dtype torch.float32 or torch.bfloat16, got {out_dtype}")
        _checks.check_choice(_OP, "backend", backend, _checks.BACKENDS)
        self.kind, self.padding_mode, self.out_dtype, self.backend = kind, padding_mode, out_dtype, backend
        self.value_range = check_range(_WHERE, "value_range", value_range, scalar="pair")
        if self.value_range[0] >= self.value_range[1]:
            raise ValueError(f"{_OP}(): expected value_range as (low, high) with low < high, got {value_range!r}")

    def extra_repr(self) -> str:
        return (f"size={self.size}, crop_scale={self.crop_scale}, rotation={self.rotation}, flip_p={self.flip_p}, "
                f"num_negatives={self.num_negatives}, warps_per_negative={self.warps_per_negative}, "
                f"kind={self.kind!r}, warp_centers={self.warp_centers!r}, negative_kind={self.negative_kind!r}, "
                f"backend={self.backend!r}")

    # ------------------------------------------------------------------ input

    def _check_images(self, images) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{_OP}(): expected images to be a Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"{_OP}(): expected images of shape (B, C, H, W), got {list(images.shape)}")
        if images.dtype not in _INPUT_DTYPES:
            raise TypeError(f"{_OP}(): expected images of dtype uint8 or floating (float16, bfloat16, float32, "
                            f"float64), got {images.dtype}")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"{_OP}(): expected images with C = 1 or 3 channels, got {list(images.shape)}")
        if images.shape[2] <= 0 or images.shape[3] <= 0:
            raise ValueError(f"{_OP}(): expected images with non-empty spatial dims, got {list(images.shape)}")
        _checks.check_has_data(_OP, "images", images)
        if images.dtype not in _checks.SRC_DTYPES:
            # The kernels read uint8 and float32; other floats cost one conversion pass.
            images = images.to(torch.float32)
        if images.is_floating_point():
            images = self._to_unit_range(images)
        return images

    def _to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Float images checked against value_range and mapped to [0, 1]."""
        low, high = self.value_range
        if images.numel() > 0:
            found_low, found_high = torch.stack(torch.aminmax(images)).tolist()  # one host sync
            if math.isnan(found_low) or math.isnan(found_high):
                raise ValueError(f"{_OP}(): expected float images without NaN, got NaN values")
            if found_low < low or found_high > high:
                hint = ""
                if (low, high) == (0.0, 1.0) and found_low >= 0.0 and found_high <= 255.0:
                    hint = "; for images in [0, 255] pass value_range=(0, 255) or a uint8 tensor"
                raise ValueError(f"{_OP}(): expected float images with values in [{low:g}, {high:g}] "
                                 f"(value_range), got values in [{found_low:g}, {found_high:g}]{hint}")
        if (low, high) != (0.0, 1.0):
            images = images / high if low == 0.0 else (images - low) / (high - low)
        return images

    def _norm_stats(self, C: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
        # Cached per (C, device): building them is a host-to-device copy on GPUs.
        key = (C, str(device))
        cache = self.__dict__.setdefault("_stats_cache", {})
        if key not in cache:
            f32 = dict(dtype=torch.float32, device=device)
            cache[key] = (torch.tensor(per_channel(self.mean, C), **f32), torch.tensor(per_channel(self.std, C), **f32))
        return cache[key]

    # --------------------------------------------------------------- sampling

    def sample_params(self, images: torch.Tensor, landmarks: Optional[torch.Tensor] = None,
                      generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Draw the parameters of one batch, as small tensors on the images' device.

        Drawn on the generator's device (the images' device without one), so
        the same generator state gives the same parameters on every device.
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(f"{_OP}(): expected images of shape (B, C, H, W), got "
                             f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        B, _, H, W = images.shape
        device = images.device
        gdev = _checks.check_generator(_OP, generator).device if generator is not None else device
        f32 = dict(device=gdev, dtype=torch.float32)
        source_landmarks = None if landmarks is None else self._source_landmarks(landmarks, B, gdev)

        def rand(*shape):
            return torch.rand(*shape, generator=generator, **f32)

        def uniform(rng, *shape):
            return rng[0] + (rng[1] - rng[0]) * rand(*shape)

        # Geometry of pos1 and pos2: crop box (continuous, clipped to the image).
        area = uniform(self.crop_scale, B, 2) * float(H * W)
        log_r = uniform((math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])), B, 2)
        ratio = torch.exp(log_r)
        w = torch.sqrt(area * ratio).clamp(min=1.0, max=float(W))
        h = torch.sqrt(area / ratio).clamp(min=1.0, max=float(H))
        x0 = rand(B, 2) * (W - w)
        y0 = rand(B, 2) * (H - h)
        angle = uniform(self.rotation, B, 2)
        flip = rand(B, 2) < self.flip_p
        theta2 = _crop_theta(x0, y0, w, h, angle, flip, H, W)  # (B, 2, 2, 3)

        # Colour of pos1 and pos2.
        jitter = rand(B, 2) < self.jitter_p
        one = torch.ones(B, 2, **f32)
        fb = torch.where(jitter, uniform(self.brightness, B, 2), one)
        fc = torch.where(jitter, uniform(self.contrast, B, 2), one)
        fs = torch.where(jitter, uniform(self.saturation, B, 2), one)
        fh = torch.where(jitter, uniform(self.hue, B, 2), torch.zeros_like(one))
        gray = (rand(B, 2) < self.grayscale_p).float()
        color2 = torch.stack([fb, fc, fs, fh, gray], dim=-1)  # (B, 2, 5)

        # Negatives: pos2's geometry and colour, plus K local warps each.
        N, K = self.num_negatives, self.warps_per_negative
        theta = torch.cat([theta2, theta2[:, 1:2].expand(B, N, 2, 3)], dim=1)
        color = torch.cat([color2, color2[:, 1:2].expand(B, N, 5)], dim=1)
        warps = torch.zeros(B, 2 + N, K, 5, **f32)
        warps[..., 2] = 1.0  # r = 1, d = 0: a warp that does nothing (pos1, pos2)
        if N > 0 and self.negative_kind == "affine":
            theta = torch.cat([theta2, _compose(theta2[:, 1:2], self._negative_affines(B, N, generator, gdev))], 1)
        elif N > 0 and K > 0:
            if self.warp_centers == "landmarks":
                centers, jitter = self._view_centers(source_landmarks, theta2[:, 1], B, gdev), DEFAULT_CENTER_JITTER
            else:   # as many uniform points as warps: each warp picks one, none is jittered off the view
                centers, jitter = 2 * torch.rand(B, N * K, 2, generator=generator, **f32) - 1, 0.0
            neg = draw_local_warps(B, N * K, self.warp_radius, self.warp_magnitude, centers, jitter, generator,
                                   device=gdev)
            warps[:, 2:] = neg.view(B, N, K, 5)
        return AugmentParams(theta=theta.to(device), warps=warps.to(device), color=color.to(device),
                             crop=torch.stack([x0, y0, w, h], dim=-1).to(device), angle=angle.to(device),
                             flip=flip.to(device),
                             landmarks=None if source_landmarks is None else source_landmarks.to(device))

    def _negative_affines(self, B: int, N: int, generator, gdev) -> torch.Tensor:
        """(B, N, 2, 3) similarity transforms of view positions: rotation, scale, shift of a warp's magnitude."""
        f32 = dict(device=gdev, dtype=torch.float32)
        u = torch.rand(B, N, 4, generator=generator, **f32)
        angle = torch.deg2rad(AFFINE_NEGATIVE_ROTATION * (2 * u[..., 0] - 1))
        scale = torch.exp(math.log(AFFINE_NEGATIVE_SCALE) * (2 * u[..., 1] - 1))
        lo, hi = self.warp_magnitude
        shift = lo + (hi - lo) * u[..., 2]
        phi = 2 * math.pi * u[..., 3]
        cos, sin = scale * torch.cos(angle), scale * torch.sin(angle)
        row0 = torch.stack([cos, -sin, shift * torch.cos(phi)], dim=-1)
        row1 = torch.stack([sin, cos, shift * torch.sin(phi)], dim=-1)
        return torch.stack([row0, row1], dim=-2)

    def _source_landmarks(self, landmarks, B: int, gdev) -> torch.Tensor:
        """The user's landmarks as a checked float32 (B, L, 2) on the generator's device."""
        if not isinstance(landmarks, torch.Tensor):
            raise TypeError(f"{_OP}(): expected landmarks to be a Tensor, got {type(landmarks).__name__}")
        if landmarks.dim() == 2 and landmarks.shape[-1] == 2 and landmarks.shape[0] > 0:
            pts = landmarks.unsqueeze(0).expand(B, -1, -1)
        elif landmarks.dim() == 3 and landmarks.shape[0] == B and landmarks.shape[-1] == 2 \
                and landmarks.shape[1] > 0:
            pts = landmarks
        else:
            raise ValueError(f"{_OP}(): expected landmarks of shape (B, L, 2) with B = {B} and L >= 1, "
                             f"got {list(landmarks.shape)}")
        if not landmarks.is_floating_point():
            raise TypeError(f"{_OP}(): expected landmarks of a floating dtype, got {landmarks.dtype}")
        _checks.check_has_data(_OP, "landmarks", landmarks)
        pts = pts.to(device=gdev, dtype=torch.float32)
        _check_landmark_values(pts)
        return pts

    def _view_centers(self, landmarks: Optional[torch.Tensor], theta_pos2: torch.Tensor, B: int,
                      gdev) -> torch.Tensor:
        # The local warps act in the view's coordinates (docs/api.md: q = p -
        # sum_k w_k(p) d_k, then s = theta q), but landmarks are positions in
        # the *source*. Map them into pos2's view through the inverse of its
        # affine, p = A^-1 (s - t), so that the warps land on the eyes, nose
        # and mouth wherever the crop, rotation and flip moved them.
        pts = FACE_LANDMARKS_5.to(gdev).unsqueeze(0).expand(B, -1, -1) if landmarks is None else landmarks
        return invert_affine(pts, theta_pos2)

    # -------------------------------------------------------------- rendering

    def render(self, images: torch.Tensor, params: AugmentParams) -> Views:
        """Render the views of ``images`` for given parameters (replay)."""
        return self._render(self._check_images(images), params)

    def _render(self, images: torch.Tensor, params: AugmentParams) -> Views:
        """render() of images already checked and mapped to the kernels' input (each pass once)."""
        if not isinstance(params, AugmentParams):
            raise TypeError(f"{_OP}(): expected params to be AugmentParams, got {type(params).__name__}")
        B, C = images.shape[:2]
        dev = images.device
        for name in ("theta", "warps", "color"):
            value = getattr(params, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{_OP}(): expected params.{name} to be a Tensor, got {type(value).__name__}")
            _checks.check_has_data(_OP, f"params.{name}", value)
        V = 2 + self.num_negatives
        if params.theta.dim() != 4 or params.theta.shape[0] != B or params.theta.shape[1] != V:
            raise ValueError(f"{_OP}(): expected params.theta of shape (B, V, 2, 3) with B = {B} and V = 2 + "
                             f"num_negatives = {V}, got {list(params.theta.shape)} (params drawn by an augmenter "
                             f"with another num_negatives or batch size)")
        theta = params.theta.to(device=dev, dtype=torch.float32)
        warps = params.warps.to(device=dev, dtype=torch.float32)
        color = params.color.to(device=dev, dtype=torch.float32)
        mean, std = self._norm_stats(C, dev)
        args = (images, theta, warps, color, mean, std, self.size, self.kind, self.padding_mode, self.out_dtype)
        out = augment_views(*args, backend=self.backend)
        return Views(pos1=out[:, 0], pos2=out[:, 1], negatives=out[:, 2:], params=params, all=out, kind=self.kind)

    def forward(self, images: torch.Tensor, landmarks: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None, params: Optional[AugmentParams] = None) -> Views:
        if params is not None and landmarks is not None:
            raise ValueError(f"{_OP}(): expected landmarks or params, not both: params already place the warps "
                             "(landmarks act through sample_params)")
        _checks.check_generator(_OP, generator)
        images = self._check_images(images)
        if params is None:
            params = self.sample_params(images, landmarks, generator)
        return self._render(images, params)


def _check_landmark_values(pts: torch.Tensor) -> None:
    """Raise unless every landmark is finite and within LANDMARK_BOUND (one reduction, one host sync)."""
    if bool((pts.abs() <= LANDMARK_BOUND).all()):
        return
    finite = torch.isfinite(pts).all(-1)
    if not bool(finite.all()):
        b, j = (int(i) for i in torch.nonzero(~finite)[0])
        raise ValueError(f"{_OP}(): expected finite landmarks, got {pts[b, j].tolist()} at landmarks[{b}, {j}]")
    b, j = (int(i) for i in torch.nonzero((pts.abs() > LANDMARK_BOUND).any(-1))[0])
    raise ValueError(f"{_OP}(): expected landmarks in normalized coordinates within [-{LANDMARK_BOUND:g}, "
                     f"{LANDMARK_BOUND:g}] (the image spans [-1, 1]), got {pts[b, j].tolist()} at "
                     f"landmarks[{b}, {j}]; pixel coordinates u map to 2 * (u + 0.5) / W - 1")


def _compose(theta: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """theta (..., 2, 3) after inner (..., 2, 3), both output -> source: s = theta(inner(p))."""
    a = theta[..., :2]
    return torch.cat([a @ inner[..., :2], (a @ inner[..., 2:]) + theta[..., 2:]], dim=-1)


def _crop_theta(x0, y0, w, h, angle_deg, flip, H: int, W: int) -> torch.Tensor:
    """theta (..., 2, 3) of the view = rotate(flip(resized crop)).

    An output position p is un-rotated, un-flipped, then mapped into the crop
    box: s = centre + diag(w / W, h / H) F R(-angle) p, with F = diag(-1, 1)
    for a flip. Positive angles turn the content counter-clockwise, as
    torchvision's rotate does (y points down, so R(-angle) below has the
    signs of a clockwise turn in maths convention).
    """
    cx = (2 * x0 + w) / W - 1
    cy = (2 * y0 + h) / H - 1
    sx, sy = w / W, h / H
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    f = torch.where(flip, -1.0, 1.0)
    # R = [[cos, -sin], [sin, cos]] acting on (x, y) with y down.
    r00, r01, r10, r11 = cos, -sin, sin, cos
    row0 = torch.stack([sx * f * r00, sx * f * r01, cx], dim=-1)
    row1 = torch.stack([sy * r10, sy * r11, cy], dim=-1)
    return torch.stack([row0, row1], dim=-2)
