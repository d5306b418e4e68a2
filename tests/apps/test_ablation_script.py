"""benchmarks/ablation.py's options: what reaches every pretraining, and bad values refused up front."""
import pytest


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/ablation.py")


@pytest.fixture
def no_pretraining(script, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pretraining started before the arguments were checked")

    monkeypatch.setattr(script, "run_one", refuse)


def test_train_flags_pass_only_what_was_given(script):
    import argparse

    args = argparse.Namespace(precision="auto", warmup_epochs=1.0, crop_scale="0.8,1", rotation=None,
                              jitter_strength=0.5, grayscale_p=None)
    assert script.train_flags(args) == ["--precision", "auto", "--warmup-epochs", "1.0", "--crop-scale", "0.8,1",
                                        "--jitter-strength", "0.5"]


@pytest.mark.parametrize("extra, match", [
    (["--rotation", "-5"], "--rotation"),
    (["--jitter-strength", "9"], "--jitter-strength"),
    (["--grayscale-p", "2"], "--grayscale-p"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--crop-scale", "0.9,0.5"], "--crop-scale"),
    (["--num-train", "5"], "--num-train"),
    (["--epochs", "0"], "--epochs"),
    (["--warp-sizes", "0.4,0.6"], "--warp-sizes: expected RMIN,RMAX:MMIN,MMAX"),
    (["--warp-sizes", "0.6,0.4:0.1,0.2"], "--warp-radius"),
    (["--warp-sizes", "0.4,0.6:0.3,0.1"], "--warp-magnitude"),
    (["--negatives", "0"], "--num-negatives"),
])
def test_bad_values_are_refused_before_any_pretraining(script, no_pretraining, capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        script.main(extra)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_warp_size_flags(script):
    assert script.warp_size_flags("0.4,0.6:0.15,0.3") == ["--warp-radius", "0.4,0.6", "--warp-magnitude", "0.15,0.3"]
    with pytest.raises(ValueError, match="RMIN,RMAX:MMIN,MMAX"):
        script.warp_size_flags("0.4,0.6")


def test_default_sweeps_pass_the_checks(script, no_pretraining):
    with pytest.raises(AssertionError, match="a pretraining started"):
        script.main(["--seeds", "0"])
