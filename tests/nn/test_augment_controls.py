"""ContraWarpAugment's controls: warps placed uniformly instead of on the landmarks, and negatives made by a
global similarity transform instead of local warps."""
from __future__ import annotations

import math

import pytest
import torch

from cwarp.nn.augment import AFFINE_NEGATIVE_ROTATION, AFFINE_NEGATIVE_SCALE, ContraWarpAugment
from parity import random_images


def test_defaults_are_the_local_warps_on_the_landmarks():
    aug = ContraWarpAugment(16)
    assert aug.warp_centers == "landmarks" and aug.negative_kind == "local"
    x = random_images(B=4)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = ContraWarpAugment(16, warp_centers="landmarks", negative_kind="local")(
        x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.all, b.all)


def test_uniform_centres_cover_the_view_and_ignore_the_landmarks():
    B = 256
    x = random_images(B=B)
    landmarks = torch.tensor([[0.0, 0.0]]).expand(B, 1, 2)   # one landmark at the centre
    on = ContraWarpAugment(16, num_negatives=2, warps_per_negative=4, rotation=0, crop_scale=(1, 1), flip_p=0)
    uniform = ContraWarpAugment(16, num_negatives=2, warps_per_negative=4, rotation=0, crop_scale=(1, 1),
                                flip_p=0, warp_centers="uniform")
    c_on = on.sample_params(x, landmarks, torch.Generator().manual_seed(0)).warps[:, 2:, :, :2].reshape(-1, 2)
    c_uni = uniform.sample_params(x, landmarks, torch.Generator().manual_seed(0)).warps[:, 2:, :, :2].reshape(-1, 2)
    assert c_on.norm(dim=-1).max() < 0.5                     # on the landmark, up to its jitter
    assert c_uni.abs().max() <= 1 and c_uni.norm(dim=-1).mean() > 0.6
    for axis in range(2):                                     # spread over [-1, 1] on both axes
        assert (c_uni[:, axis] < -0.5).float().mean() > 0.15 and (c_uni[:, axis] > 0.5).float().mean() > 0.15


def test_affine_negatives_are_pos2_under_a_small_similarity():
    lo, hi = 0.15, 0.3
    aug = ContraWarpAugment(16, num_negatives=3, warps_per_negative=2, negative_kind="affine",
                            warp_magnitude=(lo, hi))
    x = random_images(B=64)
    views = aug(x, generator=torch.Generator().manual_seed(1))
    p = views.params
    assert (p.warps[..., 3:] == 0).all()                     # no local warp anywhere
    assert torch.equal(p.color[:, 2:], p.color[:, 1:2].expand_as(p.color[:, 2:]))
    # theta_neg = theta_pos2 o (s R, t): recover the inner transform and check its ranges.
    a2 = p.theta[:, 1:2, :, :2].double()
    inner_a = torch.linalg.solve(a2, p.theta[:, 2:, :, :2].double())
    inner_t = torch.linalg.solve(a2, (p.theta[:, 2:, :, 2:] - p.theta[:, 1:2, :, 2:]).double()).squeeze(-1)
    scale = torch.linalg.det(inner_a).sqrt()
    angle = torch.rad2deg(torch.atan2(inner_a[..., 1, 0], inner_a[..., 0, 0]))
    eps = 1e-4
    assert (scale >= 1 / AFFINE_NEGATIVE_SCALE - eps).all() and (scale <= AFFINE_NEGATIVE_SCALE + eps).all()
    assert angle.abs().max() <= AFFINE_NEGATIVE_ROTATION + eps
    shift = inner_t.norm(dim=-1)
    assert (shift >= lo - eps).all() and (shift <= hi + eps).all()
    torch.testing.assert_close(inner_a[..., 0, 0], inner_a[..., 1, 1])        # a similarity: no shear
    assert not torch.allclose(views.negatives, views.pos2.unsqueeze(1).expand_as(views.negatives))
    # The landmarks follow the negatives' own geometry.
    marks = torch.tensor([[0.3, -0.1], [-0.3, 0.4]]).expand(64, 2, 2)
    moved = aug(x, landmarks=marks, generator=torch.Generator().manual_seed(1)).landmarks
    assert not torch.allclose(moved[:, 2], moved[:, 1], atol=1e-3)
    assert math.isfinite(float(moved.abs().max()))


@pytest.mark.parametrize("kwargs, match", [
    (dict(warp_centers="random"), "warp_centers"),
    (dict(negative_kind="elastic"), "negative_kind"),
])
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContraWarpAugment(16, **kwargs)
