"""cwarp.ContraWarpAugment and cwarp::augment_views: parity with the
torchvision-based oracle (cwarp/ops/augment_views/reference.py), geometry against
torchvision's own crop / flip / rotate, replay, landmarks, bad input,
opcheck and torch.compile. Tolerances per step are documented in
cwarp/ops/augment_views/reference.py; float32 output is compared with atol 2e-4 / std.
"""
import os

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

import cwarp
from cwarp import reference
from cwarp.ops.augment_views import reference as augment_reference
from cwarp.nn.augment import AugmentParams, ContraWarpAugment, _crop_theta

STD = torch.tensor(cwarp.nn.augment.IMAGENET_STD)
ATOL = {torch.float32: 2e-4 / float(STD.min()), torch.bfloat16: 1e-2 / float(STD.min())}

needs_cpp = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICES = ["cpu", pytest.param("cuda", marks=cuda)]


def images(B=3, C=3, H=20, W=24, dtype=torch.uint8, device="cpu", channels_last=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (B, C, H, W), dtype=torch.uint8, generator=g)
    else:
        x = torch.rand(B, C, H, W, generator=g).to(dtype)
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def oracle(aug, x, params):
    C = x.shape[1]
    mean, std = aug._norm_stats(C, x.device)
    src = x if x.dtype in (torch.uint8, torch.float32) else x.float()
    return augment_reference.render(src, params.theta, params.warps, params.color, mean, std, aug.size,
                                    aug.kind, aug.padding_mode)


def assert_close_verbose(actual, expected, atol, what=""):
    diff = (actual.float() - expected.float()).abs()
    if not (diff <= atol).all():
        idx = torch.nonzero(diff > atol)[:5].tolist()
        raise AssertionError(f"{what}: max diff {diff.max().item():.3g} > atol {atol:.3g}; first mismatches at "
                             f"{idx}: {[(actual[tuple(i)].item(), expected[tuple(i)].item()) for i in idx]}")


# --------------------------------------------------------------------- parity

@needs_cpp
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
def test_parity_with_torchvision_oracle(device, C, dtype, channels_last, kind):
    # jitter_p = grayscale_p = 0.5 so that every colour op is on in some views
    # and off in others.
    aug = ContraWarpAugment(size=16, num_negatives=2, warps_per_negative=3, kind=kind, jitter_p=0.7,
                            grayscale_p=0.5, warp_magnitude=(0.1, 0.3))
    x = images(B=4, C=C, dtype=dtype, device=device, channels_last=channels_last)
    views = aug(x, generator=torch.Generator().manual_seed(1))
    assert views.all.shape == (4, 4, C, 16, 16) and views.all.dtype == torch.float32
    assert views.pos1.shape == views.pos2.shape == (4, C, 16, 16)
    assert views.negatives.shape == (4, 2, C, 16, 16)
    expected = oracle(aug, x.cpu(), views.params.to("cpu"))
    assert_close_verbose(views.all.cpu(), expected, ATOL[torch.float32], "augment_views vs oracle")


@needs_cpp
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_parity_padding_modes_and_bfloat16(padding_mode):
    aug = ContraWarpAugment(size=12, rotation=30, crop_scale=(0.3, 1.0), padding_mode=padding_mode,
                            out_dtype=torch.bfloat16)
    x = images(B=3)
    views = aug(x, generator=torch.Generator().manual_seed(2))
    assert views.all.dtype == torch.bfloat16
    assert_close_verbose(views.all, oracle(aug, x, views.params), ATOL[torch.bfloat16], padding_mode)


@needs_cpp
def test_each_colour_op_alone():
    # One op switched on at a time, with factors far from the identity, so a
    # wrong formula in any single op shows up on its own.
    x = images(B=2, H=16, W=16)
    aug = ContraWarpAugment(size=16, num_negatives=0)
    base = aug.sample_params(x, generator=torch.Generator().manual_seed(3))
    for slot, value in ((0, 1.7), (0, 0.3), (1, 1.8), (1, 0.2), (2, 2.0), (2, 0.0), (3, 0.4), (3, -0.45),
                        (4, 1.0)):
        color = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]).repeat(2, 2, 1)
        color[..., slot] = value
        params = AugmentParams(base.theta, base.warps, color)
        out = aug.render(x, params).all
        assert_close_verbose(out, oracle(aug, x, params), 1e-4 / float(STD.min()), f"slot {slot} = {value}")


def test_source_mean_gray_is_the_luma_mean():
    x = images(B=2, H=8, W=8)
    expected = TF.rgb_to_grayscale(x.float() / 255).mean(dim=(1, 2, 3))
    torch.testing.assert_close(augment_reference.source_mean_gray(x), expected, atol=1e-6, rtol=0)


# ------------------------------------------------------- geometry vs torchvision

def _render_geometry(img, theta, size):
    return reference.local_warp(img.double(), torch.zeros(img.shape[0], 0, 5, dtype=torch.float64), theta.double(),
                                out_size=(size, size), padding_mode="zeros").float()


def test_crop_theta_matches_resized_crop():
    img = images(B=1, H=32, W=32, dtype=torch.float32)
    th = _crop_theta(torch.tensor([[5.0]]), torch.tensor([[3.0]]), torch.tensor([[24.0]]), torch.tensor([[20.0]]),
                     torch.zeros(1, 1), torch.tensor([[False]]), 32, 32)[:, 0]
    expected = TF.resized_crop(img, 3, 5, 20, 24, [12, 12], interpolation=InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(_render_geometry(img, th, 12), expected, atol=1e-5, rtol=0)


def test_crop_theta_flip_and_rotation_match_torchvision():
    img = images(B=1, H=32, W=32, dtype=torch.float32)
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
    x = images(B=4)
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
    x = images(B=5)
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
    p = aug.sample_params(images(B=16), generator=torch.Generator().manual_seed(0))
    assert p.theta.shape == (16, 4, 2, 3) and p.warps.shape == (16, 4, 2, 5) and p.color.shape == (16, 4, 5)
    assert torch.unique(p.theta[:, 0, 0, 2]).numel() == 16
    assert 0 < p.flip.float().mean() < 1
    jittered = p.color[:, :2, 0] != 1
    assert 0 < jittered.float().mean() < 1


def test_landmarks_are_mapped_into_view_coordinates():
    # Warps sit at landmarks mapped through the inverse of pos2's theta: the
    # warp centre (without jitter), pushed through theta, lands on the landmark.
    aug = ContraWarpAugment(size=16, num_negatives=2, warps_per_negative=4, rotation=20, flip_p=0.5)
    x = images(B=3, H=32, W=32)
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
def test_float_input_half_and_out_of_range_saturates():
    aug = ContraWarpAugment(size=8, num_negatives=1, jitter_p=0.0, grayscale_p=0.0)
    x = images(B=2, dtype=torch.float32)
    v = aug(x, generator=torch.Generator().manual_seed(0))
    vh = aug(x.half(), params=v.params)
    torch.testing.assert_close(vh.all, aug(x.half().float(), params=v.params).all)
    # Values beyond [0, 1] are clamped after sampling: 2.0 renders like 1.0.
    hi = aug(torch.full_like(x, 2.0), params=v.params).all
    torch.testing.assert_close(hi, aug(torch.ones_like(x), params=v.params).all)


@needs_cpp
def test_empty_batch():
    aug = ContraWarpAugment(size=8)
    v = aug(torch.zeros(0, 3, 10, 10, dtype=torch.uint8))
    assert v.all.shape == (0, 4, 3, 8, 8) and v.negatives.shape == (0, 2, 3, 8, 8)


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("kwargs, match", [
    (dict(size=0), "expected size to be an int > 0"),
    (dict(size=-3), "expected size to be an int > 0"),
    (dict(crop_scale=(0.9, 0.5)), r"crop_scale as \(min, max\) with min <= max"),
    (dict(rotation=(10, -10)), r"rotation as \(min, max\) with min <= max"),
    (dict(brightness=(1.5, 0.5)), r"brightness as \(min, max\) with min <= max"),
    (dict(hue=(0.2, 0.1)), r"hue as \(min, max\) with min <= max"),
    (dict(hue=0.7), r"hue within \[-0.5, 0.5\]"),
    (dict(warp_radius=(0.3, 0.1)), r"warp_radius as \(min, max\) with min <= max"),
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


@needs_cpp
def test_op_checks_name_the_op():
    x = images(B=2)
    th, wp, col = torch.zeros(2, 3, 2, 3), torch.zeros(2, 3, 1, 5), torch.ones(2, 3, 5)
    mean, std = torch.zeros(3), torch.ones(3)
    op = torch.ops.cwarp.augment_views
    with pytest.raises(ValueError, match=r"cwarp::augment_views\(\): expected warps of shape \(B, V, K, 5\)"):
        op(x, th, torch.zeros(2, 2, 1, 5), col, mean, std, 8, "translate", "border", torch.float32)
    with pytest.raises(ValueError, match=r"cwarp::augment_views\(\): expected size > 0, got 0"):
        op(x, th, wp, col, mean, std, 0, "translate", "border", torch.float32)
    with pytest.raises(TypeError, match=r"cwarp::augment_views\(\): expected src of dtype uint8 or float32"):
        op(x.double(), th, wp, col, mean, std, 8, "translate", "border", torch.float32)


# --------------------------------------------------------- torch.library, compile

@needs_cpp
def test_opcheck():
    aug = ContraWarpAugment(size=8, num_negatives=1)
    for x in (images(B=2), images(B=2, C=1, dtype=torch.float32, channels_last=True)):
        p = aug.sample_params(x, generator=torch.Generator().manual_seed(0))
        mean, std = aug._norm_stats(x.shape[1], "cpu")
        torch.library.opcheck(torch.ops.cwarp.augment_views.default,
                              (x, p.theta, p.warps, p.color, mean, std, 8, "translate", "border", torch.float32))


@needs_cpp
def test_torch_compile_fullgraph():
    aug = ContraWarpAugment(size=8, num_negatives=1)
    x = images(B=2)
    p = aug.sample_params(x, generator=torch.Generator().manual_seed(0))
    mean, std = aug._norm_stats(3, "cpu")

    @torch.compile(fullgraph=True, backend="eager")
    def f(x, theta, warps, color):
        return torch.ops.cwarp.augment_views(x, theta, warps, color, mean, std, 8, "translate", "border",
                                             torch.float32) * 2

    torch.testing.assert_close(f(x, p.theta, p.warps, p.color), aug.render(x, p).all * 2)


# ------------------------------------------------------------------- backends

@pytest.mark.triton
@pytest.mark.parametrize("C, kind, dtype", [(3, "translate", torch.uint8), (1, "gaussian", torch.float32)])
def test_triton_backend_matches_oracle(C, kind, dtype):
    pytest.importorskip("triton")
    pytest.importorskip("cwarp.ops.triton_math", reason="the Triton mirror of warp_math.h (cwarp/ops/triton_math.py) "
                        "comes with the Triton local_warp backend; it is not in this tree")
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 (set before triton is imported)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = images(B=2, C=C, H=10, W=12, dtype=dtype, device=device, channels_last=C == 3)
    aug_t = ContraWarpAugment(size=6, num_negatives=1, backend="triton", jitter_p=1.0, grayscale_p=0.5, kind=kind,
                              warp_magnitude=(0.2, 0.3))
    v = aug_t(x, generator=torch.Generator().manual_seed(0))
    expected = oracle(aug_t, x.cpu(), v.params.to("cpu"))
    assert_close_verbose(v.all.cpu(), expected, ATOL[torch.float32], "triton vs oracle")


def test_torch_backend_is_the_oracle():
    aug = ContraWarpAugment(size=6, num_negatives=1, backend="torch")
    x = images(B=2)
    v = aug(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(v.all, oracle(aug, x, v.params))


@needs_cpp
@pytest.mark.parametrize("kind", ["translate", "gaussian"])
def test_views_sharing_a_transform_with_hand_made_params(kind):
    # The CPU kernel copies a view's row from an earlier view with the same
    # theta and colour and no warps, rendering only the columns its own warps
    # reach. Cover the cases: a covering view (0 for 2), a view that shares
    # theta but has warps (1, which must not cover 3), a warp that is far
    # away (its disc misses every row), and one that touches the border.
    x = images(B=2, H=18, W=22)
    aug = ContraWarpAugment(size=14, kind=kind, num_negatives=2, warps_per_negative=2)
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
    out = aug.render(x, params).all
    assert_close_verbose(out, oracle(aug, x, params), ATOL[torch.float32], "shared transforms")
