"""benchmarks/synthetic_probe.py at a toy size: every row probed, the supervised row trained on its faces."""
import pytest
import torch

from cwarp.data import SyntheticFaces


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/synthetic_probe.py")


@pytest.mark.slow
def test_rows_and_json(script, tmp_path):
    out = tmp_path / "probe.json"
    record = script.main(["--num-train", "128", "--num-test", "64", "--image-size", "16", "--random-init",
                          "--supervised-steps", "2", "--supervised-faces", "256", "--json", str(out)])
    names = [r["representation"] for r in record["rows"]]
    assert names == ["action units", "landmarks", "aligned pixels", "raw pixels", "random convnet",
                     "supervised 2x128 on 256"]
    assert all(0.0 <= r["linear_acc"] <= 1.0 for r in record["rows"])
    assert out.stat().st_size > 0 and record["supervised_faces"] == 256


@pytest.mark.slow
def test_supervised_training_fits_its_faces(script):
    # 30 steps on 64 faces, no augmentation: the classifier memorizes them, so
    # its backbone's features separate the classes far above chance.
    faces = SyntheticFaces(64, 16, seed=0)
    backbone = script.train_supervised(faces, steps=30, seed=0, batch_size=64)
    backbone.eval()
    with torch.no_grad():
        feats = backbone((faces.images.float() / 255 - 0.45) / 0.225)
    centroids = torch.stack([feats[faces.labels == c].mean(0) for c in range(len(faces.classes))])
    nearest = torch.cdist(feats, centroids).argmin(1)
    assert (nearest == faces.labels).float().mean() > 0.6


@pytest.mark.parametrize("argv, message", [(["--supervised-steps", "-1"], "--supervised-steps: expected >= 0"),
                                           (["--supervised-faces", "0"], "--supervised-faces: expected >= 1")])
def test_bad_arguments(script, capsys, argv, message):
    with pytest.raises(SystemExit):
        script.main(argv)
    assert message in capsys.readouterr().err
