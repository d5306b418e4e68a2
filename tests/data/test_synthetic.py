"""SyntheticFaces: determinism, disjoint splits, landmarks, RAF-DB export, and that pixels are a poor representation."""
import pytest
import torch
import torch.nn.functional as F

from cwarp.data import ACTION_UNITS, EXPRESSIONS, SyntheticFaces, build_dataset
from cwarp.data.render import CANONICAL_LANDMARKS
from cwarp.eval.probe import evaluate_features

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

# cwarp.FACE_LANDMARKS_5, which the synthetic faces' canonical landmarks must stay close to.
FACE_LANDMARKS_5 = torch.tensor([[-0.316, -0.077], [0.313, -0.080], [0.000, 0.281], [-0.258, 0.649], [0.264, 0.648]])


@pytest.fixture(autouse=True)
def one_thread():
    # These workloads are tiny; intra-op threads only fight other processes for a shared machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces():
    return SyntheticFaces(300, 48, seed=3)


def test_interface(faces):
    images, labels, landmarks = faces.tensors()
    assert images.shape == (300, 3, 48, 48) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.shape == (300,)
    assert landmarks.shape == (300, 5, 2) and landmarks.dtype == torch.float32
    assert faces.action_units.shape == (300, len(ACTION_UNITS))
    assert faces.classes == EXPRESSIONS and faces.channels == 3 and len(faces) == 300
    image, label = faces[7]
    assert torch.equal(image, images[7]) and label == int(labels[7])
    # balanced within each chunk of 256 faces: the first 256 hold every class 36 or 37 times
    assert set(torch.bincount(labels[:256]).tolist()) <= {36, 37}
    assert images.float().std() > 30  # not blank


def test_deterministic_and_prefix_stable(faces):
    again = SyntheticFaces(300, 48, seed=3)
    assert torch.equal(again.images, faces.images) and torch.equal(again.landmarks, faces.landmarks)
    prefix = SyntheticFaces(37, 48, seed=3)
    assert torch.equal(prefix.images, faces.images[:37])
    other = SyntheticFaces(37, 48, seed=4)
    assert not torch.equal(other.images, prefix.images)


def test_train_and_test_are_disjoint():
    train = SyntheticFaces(200, 32, seed=0, split="train")
    test = SyntheticFaces(200, 32, seed=0, split="test")
    a = train.images.flatten(1).float()
    b = test.images.flatten(1).float()
    assert torch.cdist(b, a).min() > 100  # no test face is (nearly) a train face
    assert torch.cdist(test.landmarks.flatten(1), train.landmarks.flatten(1)).min() > 1e-4


def test_landmarks_sit_on_the_face(faces):
    mean = faces.landmarks.mean(0)
    assert (mean - FACE_LANDMARKS_5).abs().max() < 0.06
    assert (torch.tensor(CANONICAL_LANDMARKS) - FACE_LANDMARKS_5).abs().max() < 0.01
    # Sampled with grid_sample's own convention, the eye landmarks hit the
    # pupils: on average darker than the points a few pixels to either side.
    def brightness(offset):
        grid = (faces.landmarks[:, :2] + torch.tensor(offset)).view(len(faces), 2, 1, 2)
        return F.grid_sample(faces.images.float(), grid, align_corners=False).mean().item()

    at_eyes = brightness([0.0, 0.0])
    around = [brightness(d) for d in ([0.12, 0.0], [-0.12, 0.0], [0.0, 0.12], [0.0, -0.12])]
    assert at_eyes < min(around) - 5, (at_eyes, around)


def test_expression_shapes_follow_action_units(faces):
    # Open-mouthed classes (surprise, fear) open the mouth; happiness pulls the lip corners.
    au = faces.action_units
    by_class = torch.stack([au[faces.labels == c].mean(0) for c in range(len(EXPRESSIONS))])
    assert by_class[0, ACTION_UNITS.index("mouth_open")] > by_class[6, ACTION_UNITS.index("mouth_open")] + 0.4
    assert by_class[3, ACTION_UNITS.index("lip_corner_pull")] > 0.4
    # Lip corners pulled up move the mouth-corner landmarks up relative to the eyes.
    rise = (faces.landmarks[:, 3:, 1].mean(1) - faces.landmarks[:, :2, 1].mean(1)) / faces.landmarks[:, :, 1].std(1)
    assert rise[faces.labels == 3].mean() < rise[faces.labels == 6].mean()


@pytest.mark.slow
def test_raw_pixels_are_a_poor_representation():
    train = SyntheticFaces(420, 24, seed=0, split="train")
    test = SyntheticFaces(280, 24, seed=0, split="test")
    au = evaluate_features(train.action_units, train.labels, test.action_units, test.labels, 7)
    pixels = evaluate_features(train.images.flatten(1).float() / 255, train.labels,
                               test.images.flatten(1).float() / 255, test.labels, 7)
    assert au["linear_acc"] > 0.75
    assert pixels["linear_acc"] < au["linear_acc"] - 0.35
    assert pixels["knn_acc"] < 0.3


def test_export_rafdb_round_trip(tmp_path):
    train = SyntheticFaces(12, 40, seed=1, split="train")
    test = SyntheticFaces(5, 40, seed=1, split="test")
    test.export_rafdb(str(tmp_path))
    label_file = train.export_rafdb(str(tmp_path))
    lines = open(label_file).read().split()
    assert lines[:2] == ["train_00001.jpg", str(int(train.labels[0]) + 1)]
    assert "test_00005.jpg" in lines and (tmp_path / "Image" / "aligned" / "train_00012_aligned.jpg").exists()
    for original in (train, test):
        loaded = build_dataset("rafdb", str(tmp_path), original.split, 40)
        assert torch.equal(loaded.labels, original.labels) and loaded.classes == original.classes
        assert (loaded.tensors()[0].float() - original.images.float()).abs().mean() < 4  # JPEG at quality 95


def test_cache_dir_reuses_rendered_faces(tmp_path, monkeypatch):
    first = build_dataset("synthetic", str(tmp_path), "test", 32, num_samples=20, seed=5)
    assert len(list(tmp_path.glob("synthetic-*.pt"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("rendered again despite the cache")

    monkeypatch.setattr(SyntheticFaces, "_render", refuse)
    second = build_dataset("synthetic", str(tmp_path), "test", 32, num_samples=20, seed=5)
    assert torch.equal(first.images, second.images) and torch.equal(first.landmarks, second.landmarks)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        SyntheticFaces(0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        SyntheticFaces(10, seed=-1)
    with pytest.raises(ValueError, match="image_size 6 is too small"):
        SyntheticFaces(10, image_size=6)
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticFaces(10, split="validation")
