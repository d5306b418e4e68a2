"""cwarp.transforms: local warps and ContraWarping views as torchvision v2 transforms (docs/api.md §7).

Both classes subclass ``torchvision.transforms.v2.Transform`` (an
``nn.Module``): they take plain tensors and ``tv_tensors`` alone or in any
sample structure v2 accepts (tuples, dicts), compose in ``v2.Compose``, and
pass through what they do not transform (labels, and pure tensors after the
first when there is no Image / Video, as every v2 transform does).

Keypoints. ``tv_tensors.KeyPoints`` are pixel coordinates in which (i, j)
is the centre of pixel column i, row j (as ``v2.functional.horizontal_flip``
and ``elastic`` treat them): normalized x = 2 (x + 0.5) / W - 1, the
``align_corners=False`` convention cwarp's kernels use. They move with
``cwarp.warp_points``, which inverts the warp exactly, so a feature at a
keypoint is at the moved keypoint in the output. They are neither clamped
nor dropped: a point the warp pushes off the image lies outside
``[-0.5, W - 0.5]``, and follow with ``v2.SanitizeKeyPoints`` /
``v2.ClampKeyPoints`` if that matters.

Unsupported inputs raise TypeError naming the type: ``BoundingBoxes`` (a
non-rigid warp does not map a box to a box), ``Mask`` (masks need nearest
sampling, which the kernels do not have), PIL images (convert with
``v2.PILToTensor()`` or ``v2.ToImage()`` first) and any other tv_tensor.

Randomness and DataLoader workers. Without ``generator`` every draw comes
from torch's default CPU generator, which DataLoader seeds per worker
(``base_seed + worker_id``, with ``base_seed`` drawn from ``torch.manual_seed``
or the DataLoader's ``generator``): runs are reproducible and workers differ.
With ``generator``, every draw comes from it and only from it. In a worker
process the module is a copy, so its generator is the same in every worker;
on first use in a worker it is replaced by a worker generator seeded from
(a draw of the user's generator, ``get_worker_info().seed``), so workers do
not repeat each other, epochs of non-persistent workers differ, and a run
is reproducible given the user's seed and the DataLoader's seed.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import is_pure_tensor

from cwarp.nn.augment import ContraWarpAugment
from cwarp._constants import DEFAULT_WARP_MAGNITUDE, DEFAULT_WARP_RADIUS
from cwarp.ops import _checks
from cwarp.ops._checks import check_range
from cwarp.ops.local_warp.api import local_warp
from cwarp.ops.local_warp.sampling import DEFAULT_CENTER_JITTER, draw_local_warps
from cwarp.ops.warp_points.api import warp_points

__all__ = ["RandomLocalWarp", "ContraWarpViews"]

_MASK64 = (1 << 64) - 1


# ------------------------------------------------------------------ helpers


def _mix_seeds(a: int, b: int) -> int:
    """A 64-bit seed from two (splitmix64 of a * golden + b): nearby inputs give unrelated seeds."""
    z = (a * 0x9E3779B97F4A7C15 + b) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class _GeneratorPerWorker:
    """The generator a transform draws from: the user's in the main process,
    a re-seeded one per DataLoader worker (see the module docstring)."""

    def __init__(self, generator: Optional[torch.Generator]):
        self.user = generator
        self._worker_seed: Optional[int] = None
        self._worker_generator: Optional[torch.Generator] = None

    def get(self, op: str, data_device: torch.device) -> Optional[torch.Generator]:
        g = self.user
        if g is None:
            return None
        if g.device.type != "cpu" and g.device != data_device:
            raise RuntimeError(f"{op}(): expected the generator on the CPU or on the data's device {data_device}, "
                               f"got a generator on {g.device}")
        info = torch.utils.data.get_worker_info()
        if info is None:
            return g
        if self._worker_seed != info.seed:
            # Every worker holds a copy of the same generator state: drawn from
            # as is, all workers would give the same warps.
            user_seed = int(torch.randint(0, 2 ** 62, (1,), generator=g, device=g.device))
            self._worker_generator = torch.Generator(device=g.device).manual_seed(_mix_seeds(user_seed, info.seed))
            self._worker_seed = info.seed
        return self._worker_generator


_WHY_UNSUPPORTED = {
    tv_tensors.BoundingBoxes: "a non-rigid warp does not map a box to a box",
    tv_tensors.Mask: "a mask needs nearest sampling, the warp kernels sample bilinearly",
    tv_tensors.Video: "the views are of still images",
}


def _reject_unsupported(op: str, flat_inputs: List[Any], supported: Tuple[type, ...]) -> None:
    for inpt in flat_inputs:
        if isinstance(inpt, PIL.Image.Image):
            raise TypeError(f"{op}(): PIL images are not supported; convert them with v2.PILToTensor() or "
                            f"v2.ToImage() first")
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(inpt, supported):
            why = next((f" ({text})" for cls, text in _WHY_UNSUPPORTED.items() if isinstance(inpt, cls)), "")
            names = ", ".join(f"tv_tensors.{t.__name__}" for t in supported)
            raise TypeError(f"{op}(): tv_tensors.{type(inpt).__name__} is not supported{why}; supported: plain "
                            f"tensors, {names}")


def _to_normalized(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    scale = points.new_tensor([2.0 / width, 2.0 / height])
    return (points + 0.5) * scale - 1.0


def _to_pixels(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    scale = points.new_tensor([width / 2.0, height / 2.0])
    return (points + 1.0) * scale - 0.5


def _check_keypoints(op: str, kp: tv_tensors.KeyPoints, batch: Optional[int], size: Tuple[int, int]) -> None:
    if not kp.is_floating_point():
        raise TypeError(f"{op}(): expected KeyPoints of a floating dtype (the warped points are not on the pixel "
                        f"grid), got {kp.dtype}; convert them with .float()")
    if kp.dim() < 1 or kp.shape[-1] != 2:
        raise ValueError(f"{op}(): expected KeyPoints of shape (..., 2), got {list(kp.shape)}")
    if batch is not None and (kp.dim() < 2 or kp.shape[0] != batch):
        raise ValueError(f"{op}(): expected KeyPoints of shape (B, ..., 2) with B = {batch} for a batch, "
                         f"got {list(kp.shape)}")
    if tuple(kp.canvas_size) != tuple(size):
        raise ValueError(f"{op}(): expected KeyPoints with canvas_size equal to the image's (H, W) = {tuple(size)}, "
                         f"got {tuple(kp.canvas_size)}")


# ---------------------------------------------------------- RandomLocalWarp


class RandomLocalWarp(v2.Transform):
    """K random local warps per image (cwarp.local_warp), keypoints moved with them.

    Args:
        num_warps: K, warps per image.
        radius, magnitude: (min, max) or a number, in normalized units (the
            image spans [-1, 1]), as for cwarp.sample_local_warps.
        centers: None (centres uniform over the central face region) or an
            (L, 2) tensor of normalized points, e.g. cwarp.FACE_LANDMARKS_5
            (each warp at one of them plus N(0, center_jitter^2)).
        center_jitter: see centers.
        kind: "translate" or "gaussian".
        padding_mode: "border", "zeros" or "reflection".
        p: probability that an image is warped, drawn per image.
        generator: an optional torch.Generator on the CPU or the data's
            device; when given, every draw uses it and only it.

    Inputs: images (C, H, W) or batches (B, C, H, W) as plain tensors or
    ``tv_tensors.Image``; ``tv_tensors.Video`` (T, C, H, W) or (B, T, C, H, W),
    one set of warps per clip shared by all its frames (a warp that changes
    from frame to frame would make the face wobble); uint8 or floating.
    Each image or clip of a batch gets its own warps (one sample_local_warps
    call of batch size B) and its own p draw. ``tv_tensors.KeyPoints`` of
    the sample, (..., 2) for one image or clip, (B, ..., 2) for a batch, with
    the image's canvas_size and a floating dtype, move with the content.
    All images and videos of one sample must have the same B, H and W and
    get the same warps.
    """

    _OP = "cwarp.transforms.RandomLocalWarp"
    _SUPPORTED = (tv_tensors.Image, tv_tensors.Video, tv_tensors.KeyPoints)

    def __init__(self, num_warps: int = 4, radius=DEFAULT_WARP_RADIUS, magnitude=DEFAULT_WARP_MAGNITUDE,
                 centers: Optional[torch.Tensor] = None, center_jitter: float = DEFAULT_CENTER_JITTER, kind: str = "translate",
                 padding_mode: str = "border", p: float = 1.0, generator: Optional[torch.Generator] = None):
        super().__init__()
        op = self._OP
        if not isinstance(num_warps, int) or isinstance(num_warps, bool) or num_warps < 0:
            raise ValueError(f"{op}(): expected num_warps to be an int >= 0, got {num_warps!r}")
        self.num_warps = num_warps
        self.radius = check_range(f"{op}()", "radius", radius, low=0.0, low_open=True)
        self.magnitude = check_range(f"{op}()", "magnitude", magnitude, low=0.0)
        if centers is not None:
            if not isinstance(centers, torch.Tensor):
                raise TypeError(f"{op}(): expected centers to be a Tensor or None, got {type(centers).__name__}")
            if centers.dim() != 2 or centers.shape[-1] != 2 or centers.shape[0] == 0 \
                    or not centers.is_floating_point():
                raise ValueError(f"{op}(): expected centers of shape (L, 2), L >= 1, floating, got "
                                 f"{list(centers.shape)} {centers.dtype}")
        self.centers = centers
        if not (isinstance(center_jitter, (int, float)) and math.isfinite(center_jitter) and center_jitter >= 0):
            raise ValueError(f"{op}(): expected center_jitter >= 0, got {center_jitter!r}")
        self.center_jitter = float(center_jitter)
        _checks.check_choice(op, "kind", kind, _checks.KINDS)
        _checks.check_choice(op, "padding_mode", padding_mode, _checks.PADDING_MODES)
        self.kind, self.padding_mode = kind, padding_mode
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"{op}(): expected p in [0, 1], got {p!r}")
        self.p = float(p)
        self._generators = _GeneratorPerWorker(_checks.check_generator(op, generator))

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The user's generator (None: torch's default generator)."""
        return self._generators.user

    def check_inputs(self, flat_inputs: List[Any]) -> None:
        _reject_unsupported(self._OP, flat_inputs, self._SUPPORTED)

    def _layout(self, inpt: torch.Tensor) -> Tuple[Optional[int], int]:
        """(B or None for one image / clip, frames per image) of an image-like input."""
        op = self._OP
        if isinstance(inpt, tv_tensors.Video):
            if inpt.dim() not in (4, 5):
                raise ValueError(f"{op}(): expected a Video of shape (T, C, H, W) or (B, T, C, H, W), "
                                 f"got {list(inpt.shape)}")
            return (None if inpt.dim() == 4 else inpt.shape[0]), inpt.shape[-4]
        if inpt.dim() not in (3, 4):
            kind = "an Image" if isinstance(inpt, tv_tensors.Image) else "a plain tensor image"
            raise ValueError(f"{op}(): expected {kind} of shape (C, H, W) or (B, C, H, W), got {list(inpt.shape)}")
        return (None if inpt.dim() == 3 else inpt.shape[0]), 1

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        op = self._OP
        images = [x for x in flat_inputs if not isinstance(x, tv_tensors.KeyPoints)]
        if not images:
            raise ValueError(f"{op}(): expected an image or video in the sample (plain tensor, tv_tensors.Image or "
                             f"tv_tensors.Video), got only KeyPoints")
        first = images[0]
        batch, _ = self._layout(first)
        size, device = tuple(first.shape[-2:]), first.device
        for x in images:
            if x.dtype != torch.uint8 and not x.is_floating_point():
                raise TypeError(f"{op}(): expected images of dtype uint8 or floating, got {x.dtype}")
            if (self._layout(x)[0], tuple(x.shape[-2:]), x.device) != (batch, size, device):
                raise ValueError(f"{op}(): expected every image and video of a sample to have the same batch size, "
                                 f"H, W and device, got {list(first.shape)} on {first.device} and "
                                 f"{list(x.shape)} on {x.device}")
        n = 1 if batch is None else batch
        if self.p == 0.0:
            return dict(batch=batch, size=size, apply=None, warps=None)
        generator = self._generators.get(op, device)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        apply = None
        if self.p < 1.0:
            apply = torch.rand(n, generator=generator, device=gen_device) < self.p
            apply = apply.to(device)
        centers = None if self.centers is None else self.centers.to(gen_device)
        warps = draw_local_warps(n, self.num_warps, self.radius, self.magnitude, centers, self.center_jitter,
                                 generator, device=device)
        return dict(batch=batch, size=size, apply=apply, warps=warps)

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        if params["warps"] is None:  # p = 0: the identity, no copy
            if isinstance(inpt, tv_tensors.KeyPoints):
                _check_keypoints(self._OP, inpt, params["batch"], params["size"])
            return inpt
        if isinstance(inpt, tv_tensors.KeyPoints):
            _check_keypoints(self._OP, inpt, params["batch"], params["size"])
            out = self._warp_keypoints(inpt.as_subclass(torch.Tensor), params)
        else:
            out = self._warp_images(inpt.as_subclass(torch.Tensor), self._layout(inpt)[1], params)
        return out if is_pure_tensor(inpt) else tv_tensors.wrap(out, like=inpt)

    def _warp_images(self, x: torch.Tensor, frames: int, params: Dict[str, Any]) -> torch.Tensor:
        warps, apply = params["warps"], params["apply"]
        n = warps.shape[0]
        C, H, W = x.shape[-3:]
        per_image = x.reshape(n, frames, C, H, W)
        if apply is not None:
            chosen = apply.nonzero().squeeze(1)
            out = per_image.clone()
            if chosen.numel() > 0:
                warped = self._warp_frames(per_image[chosen], warps[chosen], frames)
                out[chosen] = warped
            return out.view(x.shape)
        return self._warp_frames(per_image, warps, frames).view(x.shape)

    def _warp_frames(self, per_image: torch.Tensor, warps: torch.Tensor, frames: int) -> torch.Tensor:
        """per_image (n, T, C, H, W) warped with warps (n, K, 5), the same warps for the T frames."""
        n, T, C, H, W = per_image.shape
        flat_warps = warps.repeat_interleave(frames, dim=0) if frames > 1 else warps
        # uint8 stays uint8 (rounded as torchvision rounds), floats keep their dtype.
        out = local_warp(per_image.reshape(n * T, C, H, W), flat_warps, kind=self.kind, padding_mode=self.padding_mode)
        return out.view(n, T, C, H, W)

    def _warp_keypoints(self, kp: torch.Tensor, params: Dict[str, Any]) -> torch.Tensor:
        warps, apply = params["warps"], params["apply"]
        n = warps.shape[0]
        H, W = params["size"]
        if kp.numel() == 0:
            return kp.clone()
        points = _to_normalized(kp.reshape(n, -1, 2), H, W)
        moved = _to_pixels(warp_points(points, warps.to(device=points.device), kind=self.kind), H, W)
        if apply is not None:
            moved = torch.where(apply.to(points.device)[:, None, None], moved, kp.reshape(n, -1, 2))
        return moved.reshape(kp.shape)


# ---------------------------------------------------------- ContraWarpViews


class ContraWarpViews(v2.Transform):
    """ContraWarping's views (cwarp.ContraWarpAugment) as a dataset / v2 transform.

    Args:
        size: the views' side S.
        num_negatives, warps_per_negative: as for ContraWarpAugment.
        generator: an optional torch.Generator on the CPU or the data's
            device; when given, every draw uses it and only it.
        **augment_options: every other ContraWarpAugment argument (crop_scale,
            rotation, colour jitter, mean, std, kind, out_dtype, value_range, ...).

    Input: one image (C, H, W) or a batch (B, C, H, W), plain tensor or
    ``tv_tensors.Image``, uint8 or floating (floats in value_range), and
    optionally ``tv_tensors.KeyPoints`` of the face landmarks, (L, 2) for an
    image or (B, L, 2) for a batch, with the image's canvas_size: they place
    the warps. Output, in the input's structure: the image becomes a
    ``tv_tensors.Image`` of the V = 2 + N views, (V, C, S, S) (or
    (B, V, C, S, S)): view 0 is pos1, view 1 pos2, views 2.. its locally
    warped negatives, normalized with mean / std; the KeyPoints become
    (V, L, 2) (or (B, V, L, 2)) pixel coordinates in each S x S view,
    canvas_size (S, S). Labels pass through. ``default_collate`` stacks a
    batch of samples to (B, V, C, S, S). Videos raise TypeError (views are
    of still images); so do more than one image or KeyPoints per sample.
    """

    _OP = "cwarp.transforms.ContraWarpViews"
    _SUPPORTED = (tv_tensors.Image, tv_tensors.KeyPoints)

    def __init__(self, size: int = 112, num_negatives: int = 2, warps_per_negative: int = 2, *,
                 generator: Optional[torch.Generator] = None, **augment_options):
        super().__init__()
        self.augment = ContraWarpAugment(size, num_negatives=num_negatives, warps_per_negative=warps_per_negative,
                                         **augment_options)
        self.size = size
        self._generators = _GeneratorPerWorker(_checks.check_generator(self._OP, generator))

    @property
    def generator(self) -> Optional[torch.Generator]:
        """The user's generator (None: the default generator of the images' device)."""
        return self._generators.user

    def check_inputs(self, flat_inputs: List[Any]) -> None:
        _reject_unsupported(self._OP, flat_inputs, self._SUPPORTED)
        if sum(isinstance(x, tv_tensors.KeyPoints) for x in flat_inputs) > 1:
            raise ValueError(f"{self._OP}(): expected at most one KeyPoints (the landmarks) per sample")

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        op = self._OP
        images = [x for x in flat_inputs if not isinstance(x, tv_tensors.KeyPoints)]
        if len(images) != 1:
            raise ValueError(f"{op}(): expected exactly one image per sample (plain tensor or tv_tensors.Image), "
                             f"got {len(images)}")
        image = images[0]
        if image.dim() not in (3, 4):
            raise ValueError(f"{op}(): expected an image of shape (C, H, W) or (B, C, H, W), got {list(image.shape)}")
        batch = None if image.dim() == 3 else image.shape[0]
        size = tuple(image.shape[-2:])
        landmarks = None
        keypoints = [x for x in flat_inputs if isinstance(x, tv_tensors.KeyPoints)]
        if keypoints:
            kp = keypoints[0]
            _check_keypoints(op, kp, batch, size)
            if kp.dim() != (2 if batch is None else 3):
                raise ValueError(f"{op}(): expected landmarks KeyPoints of shape "
                                 f"{'(L, 2)' if batch is None else '(B, L, 2)'}, got {list(kp.shape)}")
            landmarks = _to_normalized(kp.as_subclass(torch.Tensor).to(image.device), *size)
            if batch is None:
                landmarks = landmarks.unsqueeze(0)
        images4 = image.as_subclass(torch.Tensor)
        images4 = images4.unsqueeze(0) if batch is None else images4
        generator = self._generators.get(op, image.device)
        return dict(batch=batch, params=self.augment.sample_params(images4, landmarks, generator))

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        batch, augment_params = params["batch"], params["params"]
        if isinstance(inpt, tv_tensors.KeyPoints):
            marks = augment_params.view_landmarks(self.augment.kind)  # (B, V, L, 2), normalized
            out = _to_pixels(marks, self.size, self.size).to(inpt.dtype)
            out = out[0] if batch is None else out
            return tv_tensors.KeyPoints(out, canvas_size=(self.size, self.size))
        images4 = inpt.as_subclass(torch.Tensor)
        images4 = images4.unsqueeze(0) if batch is None else images4
        views = self.augment.render(images4, augment_params).all  # (B, V, C, S, S)
        return tv_tensors.Image(views[0] if batch is None else views)
