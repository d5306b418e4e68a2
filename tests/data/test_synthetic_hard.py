"""SyntheticFaces(difficulty="hard"): what it takes away from the standard faces, and what it keeps."""
import pytest
import torch

from cwarp.data import EXPRESSIONS, SyntheticFaces, build_dataset
from cwarp.data import synthetic as S
from cwarp.data.render import face_geometry, render_faces


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hard():
    return SyntheticFaces(2 * S.CHUNK, 32, seed=5, difficulty="hard")


def test_interface_determinism_and_prefix(hard):
    images, labels, landmarks = hard.tensors()
    assert images.shape == (512, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == hard.true_labels.shape == (512,) and landmarks.shape == (512, 5, 2)
    assert hard.classes == EXPRESSIONS and hard.difficulty == "hard"
    small = SyntheticFaces(300, 32, seed=5, difficulty="hard")
    assert torch.equal(small.images, images[:300]) and torch.equal(small.labels, labels[:300])
    assert torch.equal(small.true_labels, hard.true_labels[:300])
    assert not torch.equal(SyntheticFaces(300, 32, seed=5).images, small.images)
    faces = build_dataset("synthetic-hard", None, "test", 32, num_samples=64, seed=5)
    assert faces.difficulty == "hard" and torch.equal(faces.images, SyntheticFaces(64, 32, 5, split="test",
                                                                                     difficulty="hard").images)


def test_standard_faces_have_no_label_noise():
    faces = SyntheticFaces(64, 16, seed=1)
    assert faces.difficulty == "standard" and torch.equal(faces.labels, faces.true_labels)


def test_classes_are_imbalanced_as_in_rafdb(hard):
    counts = torch.bincount(hard.true_labels[:S.CHUNK], minlength=7)
    share = torch.tensor(S.RAFDB_CLASS_COUNTS, dtype=torch.float64)
    expected = S.CHUNK * share / share.sum()
    assert int(counts.sum()) == S.CHUNK and ((counts - expected).abs() < 1).all()
    # every chunk holds the same counts, in its own order
    assert torch.equal(torch.bincount(hard.true_labels[S.CHUNK:], minlength=7), counts)
    assert not torch.equal(hard.true_labels[:S.CHUNK], hard.true_labels[S.CHUNK:])
    assert counts.argmax() == EXPRESSIONS.index("happiness") and counts.argmin() == EXPRESSIONS.index("fear")


def test_label_noise_rate():
    faces = SyntheticFaces(8 * S.CHUNK, 16, seed=2, difficulty="hard")
    flipped = faces.labels != faces.true_labels
    rate = flipped.double().mean().item()
    se = (S.LABEL_NOISE * (1 - S.LABEL_NOISE) / flipped.numel()) ** 0.5
    assert abs(rate - S.LABEL_NOISE) < 4 * se
    # a noisy label is another class, any of the six
    others = (faces.labels[flipped] - faces.true_labels[flipped]) % 7
    assert set(others.tolist()) == set(range(1, 7))


def _params(labels, seed=0, difficulty="hard"):
    g = S.chunk_generator(seed, "train", 0)
    p = S.sample_face_params(labels, g)
    return S.harden_face_params(p, g) if difficulty == "hard" else p


def test_identity_moves_the_landmarks_as_far_as_expression():
    labels = torch.arange(1400) % 7
    spread = {}
    for difficulty in ("standard", "hard"):
        p = _params(labels, difficulty=difficulty)
        identity = face_geometry(dict(p, au=torch.zeros_like(p["au"])))["landmarks"]
        typical = {k: (v.mean(0, keepdim=True).expand_as(v) if k != "au" else v) for k, v in p.items()}
        expression = face_geometry(typical)["landmarks"]
        spread[difficulty] = (identity[:, 3:].std(0).norm(dim=-1), expression[:, 3:].std(0).norm(dim=-1))
    # The mouth corners: in the standard faces expression moves them further than identity does; in the hard
    # ones identity moves them at least as far.
    ident, expr = spread["standard"]
    assert (ident < expr).all()
    ident, expr = spread["hard"]
    assert (ident >= expr).all()


def test_part_of_the_expression_is_texture_away_from_the_landmarks_and_asymmetric():
    labels = torch.tensor([EXPRESSIONS.index(e) for e in ("happiness", "surprise", "anger", "sadness")])
    p = _params(labels)
    p["angle"], p["shift"] = torch.zeros_like(p["angle"]), torch.zeros_like(p["shift"])
    p["side"] = torch.full_like(p["side"], 0.6)
    size = 64
    noise = torch.zeros(4, size, size)
    with_texture, landmarks = render_faces(p, size, noise=noise)
    plain, same = render_faces(dict(p, tex_au=torch.zeros_like(p["tex_au"])), size, noise=noise)
    assert torch.equal(landmarks, same)            # the texture moves no landmark
    diff = (with_texture - plain).abs().sum(1)     # (B, S, S)
    c = (torch.arange(size) + 0.5) * 2 / size - 1
    grid = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1)            # (S, S, 2): x, y
    far = (grid[None, :, :, None] - landmarks[:, None, None]).norm(dim=-1).amin(-1) > 0.2
    for i in range(4):
        assert diff[i][far[i]].sum() > 0.5, EXPRESSIONS[int(labels[i])]
    # The face's two halves (about its vertical axis: pose is the identity here) change unequally.
    assert ((diff - diff.flip(-1)).abs().sum((1, 2)) > 0.25 * diff.sum((1, 2))).all()
    # Neutral faces have no expression texture.
    neutral = _params(torch.full((2,), EXPRESSIONS.index("neutral")))
    neutral["tex_au"] = torch.zeros_like(neutral["tex_au"])
    a, _ = render_faces(neutral, 32, noise=torch.zeros(2, 32, 32))
    b, _ = render_faces({k: v for k, v in neutral.items() if k not in ("tex_au", "side")}, 32,
                        noise=torch.zeros(2, 32, 32))
    assert torch.equal(a, b)


def test_bad_difficulty():
    with pytest.raises(ValueError, match="difficulty must be one of"):
        SyntheticFaces(4, 16, difficulty="easy")
