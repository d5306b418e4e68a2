"""cwarp.ops._checks.check_range: the one (min, max) check, and the callers that share it."""
from __future__ import annotations

import math

import pytest

from cwarp._constants import DEFAULT_WARP_MAGNITUDE, DEFAULT_WARP_RADIUS
from cwarp.ops._checks import check_range


@pytest.mark.parametrize("value,scalar,expected", [
    ((0.1, 0.3), "point", (0.1, 0.3)),
    ([1, 2], "pair", (1.0, 2.0)),
    (0.25, "point", (0.25, 0.25)),
    (10, "symmetric", (-10.0, 10.0)),
    (-10, "symmetric", (-10.0, 10.0)),
    (0.4, "jitter", (0.6, 1.4)),
    (1.5, "jitter", (0.0, 2.5)),
])
def test_accepted(value, scalar, expected):
    assert check_range("f()", "x", value, scalar=scalar) == expected


@pytest.mark.parametrize("value,kwargs,message", [
    ((0.3, 0.1), {}, "f(): expected x as (min, max) with min <= max, got (0.3, 0.1)"),
    ((-0.1, 0.1), dict(low=0.0), "f(): expected x as (min, max) with 0 <= min <= max, got (-0.1, 0.1)"),
    ((0.0, 0.1), dict(low=0.0, low_open=True), "f(): expected x as (min, max) with 0 < min <= max, got (0.0, 0.1)"),
    ((0.5, 1.5), dict(low=0.0, high=1.0), "f(): expected x as (min, max) with 0 <= min <= max <= 1, got (0.5, 1.5)"),
    ((0.0, math.inf), {}, "f(): expected x as (min, max) of finite numbers, got (0.0, inf)"),
    ((math.nan, 1.0), {}, "f(): expected x as (min, max) of finite numbers, got (nan, 1.0)"),
    ("0-1", {}, "f(): expected x as a number or (min, max), got '0-1'"),
    ((1, 2, 3), {}, "f(): expected x as a number or (min, max), got (1, 2, 3)"),
    ((True, 2), {}, "f(): expected x as a number or (min, max), got (True, 2)"),
    (0.5, dict(scalar="pair"), "f(): expected x as (min, max), got 0.5"),
    (-0.5, dict(scalar="jitter"), "f(): expected x >= 0, got -0.5"),
])
def test_refused_with_one_message(value, kwargs, message):
    with pytest.raises(ValueError) as info:
        check_range("f()", "x", value, **kwargs)
    assert str(info.value) == message


def test_a_flag_names_itself():
    with pytest.raises(ValueError, match=r"^--warp-radius: expected \(min, max\) with 0 < min <= max, got"):
        check_range("--warp-radius", None, (0.0, 0.2), low=0.0, low_open=True)


def test_every_boundary_refuses_a_bad_radius_alike():
    """sample_local_warps, ContraWarpAugment, RandomLocalWarp and cwarp-train's config share the check."""
    import cwarp
    from cwarp.train import config as C

    bad = (0.3, 0.1)
    with pytest.raises(ValueError, match=r"cwarp\.sample_local_warps\(\): expected radius as \(min, max\) with "):
        cwarp.sample_local_warps(2, 2, radius=bad)
    with pytest.raises(ValueError, match=r"cwarp\.ContraWarpAugment\(\): expected warp_radius as \(min, max\) "
                                         r"with 0 < min <= max"):
        cwarp.ContraWarpAugment(16, warp_radius=bad)
    with pytest.raises(ValueError, match=r"RandomLocalWarp\(\): expected radius as \(min, max\) with 0 < min"):
        cwarp.transforms.RandomLocalWarp(radius=bad)
    with pytest.raises(C.ConfigError, match=r"^--warp-radius: expected \(min, max\) with 0 < min <= max, got"):
        C.validate(C.RunConfig().replace(out="x", warp_radius=bad))


def test_one_set_of_default_warp_sizes():
    import inspect

    import cwarp

    assert inspect.signature(cwarp.sample_local_warps).parameters["radius"].default == DEFAULT_WARP_RADIUS
    assert inspect.signature(cwarp.sample_local_warps).parameters["magnitude"].default == DEFAULT_WARP_MAGNITUDE
    aug = cwarp.ContraWarpAugment(16)
    assert (aug.warp_radius, aug.warp_magnitude) == (DEFAULT_WARP_RADIUS, DEFAULT_WARP_MAGNITUDE)
    warp = cwarp.transforms.RandomLocalWarp()
    assert (warp.radius, warp.magnitude) == (DEFAULT_WARP_RADIUS, DEFAULT_WARP_MAGNITUDE)
