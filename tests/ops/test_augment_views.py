"""cwarp::augment_views (rendered through cwarp.ContraWarpAugment), one body
per check run for every backend: parity with the torchvision-based oracle
(cwarp/ops/augment_views/reference.py), each colour op alone, views sharing
a transform, the op's own checks, opcheck and torch.compile. Tolerances per
step are documented in cwarp/ops/augment_views/reference.py; float32 output
is compared with atol 2e-4 / std. The module's sampling, geometry and
argument checks are tested in tests/nn/test_contrawarp_augment.py."""
from __future__ import annotations

import re

import pytest
import torch

import cwarp
from cwarp.nn.augment import AugmentParams, ContraWarpAugment
from cwarp.ops.augment_views import reference as augment_reference
from parity import (TRITON_OPCHECK, assert_close_verbose, backend_grid, backends, grid, op_name, random_images,
                    registered_op)

STD = torch.tensor(cwarp.nn.augment.IMAGENET_STD)
ATOL = {torch.float32: 2e-4 / float(STD.min()), torch.bfloat16: 1e-2 / float(STD.min())}


def oracle(aug, x, params):
    C = x.shape[1]
    mean, std = aug._norm_stats(C, x.device)
    src = x if x.dtype in (torch.uint8, torch.float32) else x.float()
    return augment_reference.render(src, params.theta, params.warps, params.color, mean, std, aug.size,
                                    aug.kind, aug.padding_mode)


def assert_within(actual, expected, atol, what=""):
    assert_close_verbose(actual.cpu(), expected.cpu(), atol, 0.0, what=what)


# --------------------------------------------------------------------- parity

@pytest.mark.parametrize(*backend_grid(
    "C,dtype,channels_last,kind", full=grid([1, 3], [torch.uint8, torch.float32], [False, True],
                                            ["translate", "gaussian"]),
    small=[(3, torch.uint8, True, "translate"), (1, torch.float32, False, "gaussian")]))
def test_parity_with_torchvision_oracle(be, C, dtype, channels_last, kind):
    # jitter_p = grayscale_p = 0.5 so that every colour op is on in some views
    # and off in others (Triton: fewer, smaller views, every one jittered).
    small = be.name == "triton"
    B, H, W, size, negatives = (2, 10, 12, 6, 1) if small else (4, 20, 24, 16, 2)
    aug = ContraWarpAugment(size=size, num_negatives=negatives, warps_per_negative=3, kind=kind,
                            jitter_p=1.0 if small else 0.7, grayscale_p=0.5, warp_magnitude=(0.1, 0.3),
                            backend=be.name)
    x = be.put(random_images(B=B, C=C, H=H, W=W, dtype=dtype, channels_last=channels_last))
    views = aug(x, generator=torch.Generator().manual_seed(1))
    V = 2 + negatives
    assert views.all.shape == (B, V, C, size, size) and views.all.dtype == torch.float32
    assert views.all.device.type == be.device
    assert views.pos1.shape == views.pos2.shape == (B, C, size, size)
    assert views.negatives.shape == (B, negatives, C, size, size)
    expected = oracle(aug, x.cpu(), views.params.to("cpu"))
    assert_within(views.all, expected, ATOL[torch.float32], f"{be} augment_views vs oracle")


@pytest.mark.parametrize(*backend_grid("padding_mode", full=["zeros", "border", "reflection"],
                                       names=("cpp", "cuda-cpp", "cuda-triton")))
def test_parity_padding_modes_and_bfloat16(be, padding_mode):
    aug = ContraWarpAugment(size=12, rotation=30, crop_scale=(0.3, 1.0), padding_mode=padding_mode,
                            out_dtype=torch.bfloat16, backend=be.name)
    x = be.put(random_images(B=3))
    views = aug(x, generator=torch.Generator().manual_seed(2))
    assert views.all.dtype == torch.bfloat16
    assert_within(views.all, oracle(aug, x.cpu(), views.params.to("cpu")), ATOL[torch.bfloat16], padding_mode)


@pytest.mark.parametrize("be", backends("cpp", "cuda-cpp", "cuda-triton"))
def test_each_colour_op_alone(be):
    # One op switched on at a time, with factors far from the identity, so a
    # wrong formula in any single op shows up on its own.
    x = random_images(B=2, H=16, W=16)
    aug = ContraWarpAugment(size=16, num_negatives=0, backend=be.name)
    base = aug.sample_params(x, generator=torch.Generator().manual_seed(3))
    for slot, value in ((0, 1.7), (0, 0.3), (1, 1.8), (1, 0.2), (2, 2.0), (2, 0.0), (3, 0.4), (3, -0.45),
                        (4, 1.0)):
        color = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]).repeat(2, 2, 1)
        color[..., slot] = value
        params = AugmentParams(base.theta, base.warps, color)
        out = aug.render(be.put(x), params.to(be.device)).all
        assert_within(out, oracle(aug, x, params), 1e-4 / float(STD.min()), f"{be} slot {slot} = {value}")


@pytest.mark.parametrize(*backend_grid("kind", full=["translate", "gaussian"],
                                       names=("cpp", "cuda-cpp", "cuda-triton")))
def test_views_sharing_a_transform_with_hand_made_params(be, kind):
    # The CPU kernel copies a view's row from an earlier view with the same
    # theta and colour and no warps, rendering only the columns its own warps
    # reach. Cover the cases: a covering view (0 for 2), a view that shares
    # theta but has warps (1, which must not cover 3), a warp that is far
    # away (its disc misses every row), and one that touches the border.
    x = random_images(B=2, H=18, W=22)
    aug = ContraWarpAugment(size=14, kind=kind, num_negatives=2, warps_per_negative=2, backend=be.name)
    g = torch.Generator().manual_seed(11)
    base = aug.sample_params(x, generator=g)
    theta = base.theta.clone()
    color = base.color.clone()
    theta[:, 2] = theta[:, 0]
    color[:, 2] = color[:, 0]
    theta[:, 3] = theta[:, 1]
    color[:, 3] = color[:, 1]
    warps = torch.zeros(2, 4, 2, 5)
    warps[..., 2] = 1.0
    warps[:, 1, 0] = torch.tensor([0.1, 0.2, 0.3, 0.1, -0.05])
    warps[:, 2, 0] = torch.tensor([0.9, -0.95, 0.4, -0.12, 0.1])
    warps[:, 2, 1] = torch.tensor([5.0, 5.0, 0.2, 0.1, 0.1])
    warps[:, 3, 0] = torch.tensor([-0.3, 0.0, 0.25, 0.0, 0.15])
    params = AugmentParams(theta, warps, color)
    out = aug.render(be.put(x), params.to(be.device)).all
    assert_within(out, oracle(aug, x, params), ATOL[torch.float32], f"{be} shared transforms")


def test_backend_torch_is_the_oracle():
    aug = ContraWarpAugment(size=6, num_negatives=1, backend="torch")
    x = random_images(B=2)
    v = aug(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(v.all, oracle(aug, x, v.params))


def test_source_mean_gray_is_the_luma_mean():
    import torchvision.transforms.v2.functional as TF
    x = random_images(B=2, H=8, W=8)
    expected = TF.rgb_to_grayscale(x.float() / 255).mean(dim=(1, 2, 3))
    torch.testing.assert_close(augment_reference.source_mean_gray(x), expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ the op

def _op_args(be, size=8, C=3, dtype=torch.uint8, channels_last=False):
    aug = ContraWarpAugment(size=size, num_negatives=1)
    x = random_images(B=2, C=C, dtype=dtype, channels_last=channels_last)
    p = aug.sample_params(x, generator=torch.Generator().manual_seed(0))
    mean, std = aug._norm_stats(C, "cpu")
    return be.put(x, p.theta, p.warps, p.color, mean, std), aug, p


@pytest.mark.parametrize("be", backends())
def test_out_of_range_source_saturates(be):
    # The op reads float sources as they are (ContraWarpAugment checks their
    # range) and clamps every sample to [0, 1]: 2.0 renders like 1.0.
    (x, theta, warps, color, mean, std), _, _ = _op_args(be, dtype=torch.float32)
    # No colour ops: contrast reads the source's mean, which the clamp does not change.
    color = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0], device=x.device).expand_as(color).contiguous()
    op = registered_op(be, "augment_views")
    render = lambda src: op(src, theta, warps, color, mean, std, 8, "translate", "border", torch.float32)  # noqa: E731
    torch.testing.assert_close(render(torch.full_like(x, 2.0)), render(torch.ones_like(x)))


@pytest.mark.parametrize("be", backends())
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_non_finite_first_pixel_does_not_leak_outside_the_image(be, padding_mode):
    # A corner outside the source reads as 0, as in grid_sample, not as weight
    # 0 times some pixel: a NaN / Inf at the source's first pixel must change
    # only the samples it is a corner of, not those whose corners fall outside
    # (zoomed-out views; the last row and column under border padding).
    (x, theta, warps, color, mean, std), _, _ = _op_args(be, dtype=torch.float32)
    theta = (2.0 * torch.eye(2, 3, device=x.device)).expand_as(theta).contiguous()  # half of each view outside
    warps = torch.zeros_like(warps)
    color = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0], device=x.device).expand_as(color).contiguous()
    op = registered_op(be, "augment_views")
    render = lambda src, m=mean, s=std: op(src, theta, warps, color, m, s, 8, "translate", padding_mode,  # noqa: E731
                                           torch.float32)
    finite = x.clone()
    finite[:, :, 0, 0] = 0.5
    bad = finite.clone()
    bad[0, 1, 0, 0] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    # Where the first pixel is a corner with a weight > 0: render it alone.
    one_hot = torch.zeros_like(x)
    one_hot[:, :, 0, 0] = 1.0
    touched = render(one_hot, torch.zeros_like(mean), torch.ones_like(std)) > 0
    out, expected = render(bad), render(finite)
    assert not bool(touched.all()) and (padding_mode == "zeros" or bool(touched.any()))
    assert bool(torch.isfinite(out[~touched]).all()), f"{be}: a non-finite first pixel leaked outside the image"
    torch.testing.assert_close(out[~touched], expected[~touched], rtol=0, atol=0)


@pytest.mark.parametrize("be", backends())
def test_op_checks_name_the_op(be):
    x = be.put(random_images(B=2))
    th, wp, col = be.put(torch.zeros(2, 3, 2, 3), torch.zeros(2, 3, 1, 5), torch.ones(2, 3, 5))
    mean, std = be.put(torch.zeros(3), torch.ones(3))
    op = registered_op(be, "augment_views")
    name = re.escape(op_name(be, "augment_views") + "()")
    with pytest.raises(ValueError, match=name + r": expected warps of shape \(B, V, K, 5\)"):
        op(x, th, be.put(torch.zeros(2, 2, 1, 5)), col, mean, std, 8, "translate", "border", torch.float32)
    with pytest.raises(ValueError, match=name + r": expected size > 0, got 0"):
        op(x, th, wp, col, mean, std, 0, "translate", "border", torch.float32)
    with pytest.raises(TypeError, match=name + r": expected src of dtype uint8 or float32"):
        op(x.double(), th, wp, col, mean, std, 8, "translate", "border", torch.float32)


@pytest.mark.parametrize(*backend_grid("C,dtype,channels_last", full=[(3, torch.uint8, False),
                                                                      (1, torch.float32, True)],
                                       small=[(1, torch.float32, True)]))
def test_opcheck(be, C, dtype, channels_last):
    (x, theta, warps, color, mean, std), _, _ = _op_args(be, C=C, dtype=dtype, channels_last=channels_last)
    kw = {"test_utils": TRITON_OPCHECK} if be.name == "triton" else {}
    torch.library.opcheck(registered_op(be, "augment_views").default,
                          (x, theta, warps, color, mean, std, 8, "translate", "border", torch.float32), **kw)


@pytest.mark.parametrize("be", backends())
def test_torch_compile_fullgraph(be):
    (x, theta, warps, color, mean, std), aug, p = _op_args(be)
    op = registered_op(be, "augment_views")

    @torch.compile(fullgraph=True, backend="eager")
    def f(x, theta, warps, color):
        return op(x, theta, warps, color, mean, std, 8, "translate", "border", torch.float32) * 2

    aug.backend = be.name
    torch.testing.assert_close(f(x, theta, warps, color), aug.render(x, p.to(be.device)).all * 2)
