"""ContraWarpAugment refuses input that would give silently wrong views: out-of-range float images, bad landmarks."""
import math
import re

import pytest
import torch

import cwarp
from cwarp.nn.augment import LANDMARK_BOUND

pytestmark = pytest.mark.skipif(not cwarp.backends()["cpp"], reason="cwarp._C was not built")


def uint8_batch(b=2, size=12, seed=0):
    return torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def views_of(aug, images, seed=0, **kwargs):
    return aug(images, generator=torch.Generator().manual_seed(seed), **kwargs).all


def raises(pattern):
    return pytest.raises(ValueError, match=re.escape(pattern))


# ------------------------------------------------------------------ images

def test_float_images_in_0_255_are_refused_with_a_hint():
    aug = cwarp.ContraWarpAugment(size=8)
    with raises("cwarp.ContraWarpAugment(): expected float images with values in [0, 1] (value_range), "
                "got values in [0, 255]; for images in [0, 255] pass value_range=(0, 255) or a uint8 tensor"):
        aug(uint8_batch().float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_are_checked_too(dtype):
    aug = cwarp.ContraWarpAugment(size=8)
    with raises("expected float images with values in [0, 1] (value_range), got values in [0, 255]"):
        aug(uint8_batch().to(dtype))


def test_negative_values_are_refused_without_the_255_hint():
    aug = cwarp.ContraWarpAugment(size=8)
    images = torch.full((1, 3, 6, 6), 0.5)
    images[0, 1, 2, 3] = -0.25
    with pytest.raises(ValueError, match=re.escape("got values in [-0.25, 0.5]") + "$"):
        aug(images)


def test_nan_and_infinite_images_are_refused():
    aug = cwarp.ContraWarpAugment(size=8)
    images = torch.full((1, 3, 6, 6), 0.5)
    images[0, 0, 1, 1] = math.nan
    with raises("cwarp.ContraWarpAugment(): expected float images without NaN, got NaN values"):
        aug(images)
    images[0, 0, 1, 1] = math.inf
    with raises("expected float images with values in [0, 1] (value_range), got values in [0.5, inf]"):
        aug(images)


def test_unit_range_floats_give_the_uint8_views():
    aug = cwarp.ContraWarpAugment(size=8)
    images = uint8_batch()
    torch.testing.assert_close(views_of(aug, images.float() / 255), views_of(aug, images), atol=1e-5, rtol=0)


def test_value_range_0_255_accepts_that_scale_and_matches_uint8():
    images = uint8_batch()
    expected = views_of(cwarp.ContraWarpAugment(size=8), images)
    got = views_of(cwarp.ContraWarpAugment(size=8, value_range=(0, 255)), images.float())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # Normalized views of natural-range input sit near 0, not near 1.35.
    assert got.mean().abs() < 1.0


def test_value_range_still_checks_its_own_bounds():
    aug = cwarp.ContraWarpAugment(size=8, value_range=(0, 255))
    images = uint8_batch().float()
    images[1, 2, 0, 0] = 300.0
    with raises("expected float images with values in [0, 255] (value_range), got values in [0, 300]"):
        aug(images)


def test_value_range_does_not_apply_to_uint8():
    images = uint8_batch()
    torch.testing.assert_close(views_of(cwarp.ContraWarpAugment(size=8, value_range=(0, 255)), images),
                               views_of(cwarp.ContraWarpAugment(size=8), images), atol=0, rtol=0)


def test_replay_through_render_is_checked_too():
    aug = cwarp.ContraWarpAugment(size=8)
    views = aug(uint8_batch(), generator=torch.Generator().manual_seed(0))
    with raises("expected float images with values in [0, 1] (value_range), got values in [0, 255]"):
        aug.render(uint8_batch().float(), views.params)


@pytest.mark.parametrize("value_range, pattern", [
    ((1.0, 1.0), "expected value_range as (low, high) with low < high, got (1.0, 1.0)"),
    ((1.0, 0.0), "expected value_range as (min, max) with min <= max, got (1.0, 0.0)"),
    ((0.0, math.inf), "expected value_range as (min, max) of finite numbers, got (0.0, inf)"),
    ("0-255", "expected value_range as (min, max), got '0-255'"),
    (255, "expected value_range as (min, max), got 255"),
])
def test_bad_value_range(value_range, pattern):
    with raises(f"cwarp.ContraWarpAugment(): {pattern}"):
        cwarp.ContraWarpAugment(size=8, value_range=value_range)


# --------------------------------------------------------------- landmarks

def five_landmarks(b=2):
    return cwarp.FACE_LANDMARKS_5.unsqueeze(0).repeat(b, 1, 1).clone()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_landmarks_are_refused(bad):
    aug = cwarp.ContraWarpAugment(size=8)
    landmarks = five_landmarks()
    landmarks[1, 2, 0] = bad
    value = "nan" if math.isnan(bad) else repr(bad)
    with raises(f"cwarp.ContraWarpAugment(): expected finite landmarks, got [{value}, "):
        aug(uint8_batch(), landmarks=landmarks)
    with pytest.raises(ValueError, match=re.escape("at landmarks[1, 2]") + "$"):
        aug.sample_params(uint8_batch(), landmarks)


def test_landmarks_in_pixels_are_refused_with_the_conversion():
    aug = cwarp.ContraWarpAugment(size=8)
    landmarks = five_landmarks()
    landmarks[0, 3] = torch.tensor([30.0, 12.0])
    with raises(f"expected landmarks in normalized coordinates within [-2, 2] (the image spans [-1, 1]), got "
                f"[30.0, 12.0] at landmarks[0, 3]; pixel coordinates u map to 2 * (u + 0.5) / W - 1"):
        aug(uint8_batch(), landmarks=landmarks)


def test_shared_landmarks_are_checked_too():
    aug = cwarp.ContraWarpAugment(size=8)
    shared = cwarp.FACE_LANDMARKS_5.clone()
    shared[4, 1] = math.nan
    with raises("expected finite landmarks, got [") as info:
        aug(uint8_batch(), landmarks=shared)
    assert "at landmarks[0, 4]" in str(info.value)


def test_landmarks_on_the_bound_are_accepted_and_just_past_it_refused():
    aug = cwarp.ContraWarpAugment(size=8)
    landmarks = five_landmarks()
    landmarks[0, 0] = torch.tensor([LANDMARK_BOUND, -LANDMARK_BOUND])
    aug(uint8_batch(), landmarks=landmarks)
    landmarks[0, 0, 0] = LANDMARK_BOUND + 0.01
    with raises("within [-2, 2]"):
        aug(uint8_batch(), landmarks=landmarks)


def test_landmarks_with_replayed_params_are_refused():
    # The params already hold the warps; landmarks given beside them would be ignored.
    aug = cwarp.ContraWarpAugment(size=8)
    views = aug(uint8_batch(), generator=torch.Generator().manual_seed(0))
    with raises("cwarp.ContraWarpAugment(): expected landmarks or params, not both"):
        aug(uint8_batch(), landmarks=five_landmarks(), params=views.params)
