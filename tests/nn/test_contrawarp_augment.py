"""cwarp.ContraWarpAugment, the module: its geometry against torchvision's
own crop / flip / rotate, parameter sampling, replay, landmarks, input dtypes
and bad arguments. The op it renders with, cwarp::augment_views, is tested
per backend in tests/ops/test_augment_views.py."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

import cwarp
from cwarp import reference
from cwarp.nn.augment import AugmentParams, ContraWarpAugment, _crop_theta
from parity import random_images

needs_cpp = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")


# ------------------------------------------------------- geometry vs torchvision

def _render_geometry(img, theta, size):
    return reference.local_warp(img.double(), torch.zeros(img.shape[0], 0, 5, dtype=torch.float64), theta.double(),
                                out_size=(size, size), padding_mode="zeros").float()


def test_crop_theta_matches_resized_crop():
    img = random_images(B=1, H=32, W=32, dtype=torch.float32)
    th = _crop_theta(torch.tensor([[5.0]]), torch.tensor([[3.0]]), torch.tensor([[24.0]]), torch.tensor([[20.0]]),
                     torch.zeros(1, 1), torch.tensor([[False]]), 32, 32)[:, 0]
    expected = TF.resized_crop(img, 3, 5, 20, 24, [12, 12], interpolation=InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(_render_geometry(img, th, 12), expected, atol=1e-5, rtol=0)


def test_crop_theta_flip_and_rotation_match_torchvision():
    img = random_images(B=1, H=32, W=32, dtype=torch.float32)
    full = (torch.zeros(1, 1), torch.zeros(1, 1), torch.full((1, 1), 32.0), torch.full((1, 1), 32.0))
    th = _crop_theta(*full, torch.zeros(1, 1), torch.tensor([[True]]), 32, 32)[:, 0]
    torch.testing.assert_close(_render_geometry(img, th, 32), TF.horizontal_flip(img), atol=1e-6, rtol=0)
    th = _crop_theta(*full, torch.tensor([[7.0]]), torch.tensor([[False]]), 32, 32)[:, 0]
    rotated = TF.rotate(img, 7.0, interpolation=InterpolationMode.BILINEAR)
    # Compare away from the corners, where torchvision fills with zeros.
    torch.testing.assert_close(_render_geometry(img, th, 32)[..., 6:26, 6:26], rotated[..., 6:26, 6:26],
                               atol=1e-5, rtol=0)


# ------------------------------------------------------ sampling and structure

@needs_cpp
def test_replay_and_generator_determinism():
    aug = ContraWarpAugment(size=16)
    x = random_images(B=4)
    v1 = aug(x, generator=torch.Generator().manual_seed(5))
    v2 = aug(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(v1.all, v2.all)
    assert torch.equal(aug(x, params=v1.params).all, v1.all)
    assert torch.equal(aug.render(x, v1.params).all, v1.all)
    v3 = aug(x, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(v1.all, v3.all)


@needs_cpp
def test_negatives_share_pos2_global_transform_and_differ_by_local_warp():
    aug = ContraWarpAugment(size=16, num_negatives=3, warps_per_negative=2)
    x = random_images(B=5)
    views = aug(x, generator=torch.Generator().manual_seed(7))
    p = views.params
    assert torch.equal(p.theta[:, 2:], p.theta[:, 1:2].expand_as(p.theta[:, 2:]))
    assert torch.equal(p.color[:, 2:], p.color[:, 1:2].expand_as(p.color[:, 2:]))
    assert (p.warps[:, :2, :, 3:] == 0).all() and (p.warps[:, 2:, :, 3:].abs().sum(-1) > 0).all()
    # Without the warps, a negative is pos2 bit for bit.
    no_warp = AugmentParams(p.theta, p.warps.clone(), p.color)
    no_warp.warps[..., 3:] = 0
    out = aug.render(x, no_warp)
    assert torch.equal(out.negatives, out.pos2.unsqueeze(1).expand_as(out.negatives))
    assert not torch.equal(views.negatives, out.negatives)


@needs_cpp
def test_per_sample_parameters_differ_across_the_batch():
    aug = ContraWarpAugment(size=8)
    p = aug.sample_params(random_images(B=16), generator=torch.Generator().manual_seed(0))
    assert p.theta.shape == (16, 4, 2, 3) and p.warps.shape == (16, 4, 2, 5) and p.color.shape == (16, 4, 5)
    assert torch.unique(p.theta[:, 0, 0, 2]).numel() == 16
    assert 0 < p.flip.float().mean() < 1
    jittered = p.color[:, :2, 0] != 1
    assert 0 < jittered.float().mean() < 1


def test_landmarks_are_mapped_into_view_coordinates():
    # Warps sit at landmarks mapped through the inverse of pos2's theta: the
    # warp centre (without jitter), pushed through theta, lands on the landmark.
    aug = ContraWarpAugment(size=16, num_negatives=2, warps_per_negative=4, rotation=20, flip_p=0.5)
    x = random_images(B=3, H=32, W=32)
    landmarks = torch.tensor([[[0.3, -0.2]], [[-0.4, 0.1]], [[0.0, 0.5]]])
    g = torch.Generator().manual_seed(0)
    p = aug.sample_params(x, landmarks, generator=g)
    c = p.warps[:, 2:, :, :2].reshape(3, -1, 2)
    th = p.theta[:, 1]
    s = torch.einsum("bij,bkj->bki", th[:, :, :2], c) + th[:, None, :, 2]
    # Centre jitter N(0, 0.05^2) in view units, scaled by the crop (<= 1).
    assert (s - landmarks).norm(dim=-1).max() < 0.3
    assert (s - landmarks).norm(dim=-1).mean() < 0.12


@needs_cpp
def test_float16_input_renders_as_its_float32_values():
    aug = ContraWarpAugment(size=8, num_negatives=1, jitter_p=0.0, grayscale_p=0.0)
    x = random_images(B=2, dtype=torch.float32)
    v = aug(x, generator=torch.Generator().manual_seed(0))
    vh = aug(x.half(), params=v.params)
    torch.testing.assert_close(vh.all, aug(x.half().float(), params=v.params).all)


@needs_cpp
def test_empty_batch():
    aug = ContraWarpAugment(size=8)
    v = aug(torch.zeros(0, 3, 10, 10, dtype=torch.uint8))
    assert v.all.shape == (0, 4, 3, 8, 8) and v.negatives.shape == (0, 2, 3, 8, 8)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0), "expected size to be an int > 0"),
    (dict(size=-3), "expected size to be an int > 0"),
    (dict(crop_scale=(0.9, 0.5)), r"crop_scale as \(min, max\) with 0 <= min <= max <= 1, got \(0.9, 0.5\)"),
    (dict(crop_scale=(0.5, 1.5)), r"crop_scale as \(min, max\) with 0 <= min <= max <= 1, got \(0.5, 1.5\)"),
    (dict(rotation=(10, -10)), r"rotation as \(min, max\) with min <= max"),
    (dict(brightness=(1.5, 0.5)), r"brightness as \(min, max\) with 0 <= min <= max"),
    (dict(brightness=-0.2), r"brightness >= 0, got -0.2"),
    (dict(hue=(0.2, 0.1)), r"hue as \(min, max\) with -0.5 <= min <= max <= 0.5"),
    (dict(hue=0.7), r"hue as \(min, max\) with -0.5 <= min <= max <= 0.5, got 0.7"),
    (dict(warp_radius=(0.3, 0.1)), r"warp_radius as \(min, max\) with 0 < min <= max"),
    (dict(warp_radius=(0.0, 0.1)), r"warp_radius as \(min, max\) with 0 < min <= max"),
    (dict(crop_ratio=(0.0, 1.0)), r"crop_ratio as \(min, max\) with 0 < min <= max"),
    (dict(flip_p=1.5), r"flip_p in \[0, 1\]"),
    (dict(kind="affine"), "unknown kind 'affine'"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContraWarpAugment(**kwargs)


def test_bad_out_dtype():
    with pytest.raises(TypeError, match="expected out_dtype"):
        ContraWarpAugment(out_dtype=torch.float16)


@needs_cpp
def test_bad_images():
    aug = ContraWarpAugment(size=8)
    with pytest.raises(ValueError, match=r"expected images with C = 1 or 3 channels, got \[2, 4, 8, 8\]"):
        aug(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="expected images of dtype uint8 or floating .*got torch.int32"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\)"):
        aug(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"expected landmarks of shape \(B, L, 2\) with B = 2"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), landmarks=torch.zeros(3, 5, 2))
