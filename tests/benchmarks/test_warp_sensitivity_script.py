"""benchmarks/warp_sensitivity.py on tiny runs: the warps' size, what a trained network sees, bad input."""
import math

import pytest
import torch

from cwarp.train import cli
from cwarp.train.config import DEFAULTS

from tiny_runs import tiny_args


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/warp_sensitivity.py")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in ("contrawarp", "supervised"):
        out[method] = root / method
        assert cli.main(tiny_args(out[method], "--method", method, "--epochs", "1")) == 0
    return out


def test_max_displacement_is_the_warp_peak(script):
    # One translate warp centred on a pixel centre (33 px, align_corners=False:
    # the middle pixel sits at 0): the field's largest shift is at the centre,
    # m (r^2 / (r^2 + m^2))^2, in units of half the view.
    r, m = 0.4, 0.2
    warps = torch.tensor([[[0.0, 0.0, r, m * 0.6, m * 0.8]]], dtype=torch.float64)
    expected = m * (r * r / (r * r + m * m)) ** 2 * 33 / 2
    assert script.max_displacement_px(warps, 33).item() == pytest.approx(expected, rel=1e-9)
    # A magnitude past r / sqrt(3) moves the content less, not more.
    big = warps.clone()
    big[..., 3:] *= 3
    assert script.max_displacement_px(big, 33).item() < expected


@pytest.mark.slow
def test_rows(script, runs, tmp_path, capsys):
    out = tmp_path / "s.json"
    record = script.main([str(runs["contrawarp"]), str(runs["supervised"]), "--faces", "24", "--num-negatives", "2",
                          "--warps-per-negative", "2", "--json", str(out)])
    cw, sup = record["rows"]
    assert cw["method"] == "contrawarp" and sup["method"] == "supervised"
    assert cw["faces"] == sup["faces"] == 24
    for row in (cw, sup):
        assert row["displacement_px"] > 0 and row["pixels_warp"] > 0 and row["pixels_views"] > 0
        assert -1 <= row["feat_cos_warp"] <= 1 + 1e-6
    for k in ("acc_view2", "acc_warped", "view_flips", "warp_flips"):
        assert 0 <= sup[k] <= 1 and k not in cw
    for k in ("target_cos_warp", "p1_nce", "p1_warp_acc"):
        assert k in cw and k not in sup
    assert cw["p1_chance_nce"] == pytest.approx(math.log(3))
    assert 0 <= cw["p1_warp_acc"] <= 1 and cw["p1_nce"] > 0
    table = capsys.readouterr().out
    assert "max shift px" in table and "warp flips" in table and "p1 NCE" in table
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_wider_warps_move_more(script, runs):
    kw = dict(faces=16, num_negatives=1, warps_per_negative=2)
    default = script.measure(str(runs["supervised"]), **kw)
    assert default["warp_radius"] == list(DEFAULTS["warp_radius"])   # the run's own warps
    small = script.measure(str(runs["supervised"]), warp_radius=[0.15, 0.35], warp_magnitude=[0.05, 0.15], **kw)
    wide = script.measure(str(runs["supervised"]), warp_radius=[0.4, 0.6], warp_magnitude=[0.15, 0.3], **kw)
    assert wide["warp_radius"] == [0.4, 0.6] and wide["warp_magnitude"] == [0.15, 0.3]
    assert wide["displacement_px"] > 1.5 * small["displacement_px"]
    assert wide["pixels_warp"] > small["pixels_warp"]


@pytest.mark.slow
@pytest.mark.parametrize("argv, message", [
    (["--faces", "1"], "--faces: expected >= 2"),
    (["--num-negatives", "0"], "--num-negatives: expected >= 1"),
    (["--warp-magnitude", "a,b"], "expected two numbers 'MIN,MAX'"),
    (["--warp-radius", "0.5,0.2"], "--warp-radius: expected (min, max) with 0 < min <= max, got (0.5, 0.2)"),
    (["--warp-radius", "0,0.2"], "--warp-radius: expected (min, max) with 0 < min <= max, got (0.0, 0.2)"),
    (["--warp-magnitude=-1,0.2"], "--warp-magnitude: expected (min, max) with 0 <= min <= max, got (-1.0, 0.2)"),
])
def test_bad_arguments(script, runs, capsys, argv, message):
    with pytest.raises(SystemExit):
        script.main([str(runs["supervised"])] + argv)
    assert message in capsys.readouterr().err


def test_missing_run(script, tmp_path):
    from cwarp.models import CheckpointError

    with pytest.raises(CheckpointError, match="checkpoint .*nothing does not exist"):
        script.main([str(tmp_path / "nothing")])


@pytest.mark.slow
def test_a_last_batch_of_one_face_is_left_out(script, runs, monkeypatch):
    monkeypatch.setattr(script, "BATCH", 4)
    row = script.measure(str(runs["contrawarp"]), faces=9, num_negatives=1, warps_per_negative=1)
    assert row["faces"] == 8
