"""SyntheticFaces: the built-in expressive-face data set, so that nothing needs a download.

Each face draws an expression (the 7 basic ones, RAF-DB order) as action-unit
intensities around a class prototype, and independently an identity, a pose, a
lighting, a background and a noise level. The expression lives in small shape
changes of brows, eyes, nose and mouth; everything else varies a lot, so raw
pixels are a poor representation and a linear probe on them does badly.

``difficulty="hard"`` takes away what makes the standard faces easy for
ContraWarping, whose warps sit on the five landmarks: identity moves the
landmarks as far as expression does; expression moves the geometry at
GEOMETRY_SHARE of its strength and the rest is texture (wrinkles, teeth,
shading) that differs between the face's two halves; the classes are
imbalanced as in RAF-DB; and LABEL_NOISE of the labels name another
expression than the one drawn (``true_labels`` keeps it).
"""
from __future__ import annotations

import os
import warnings
from typing import Dict, Optional

import numpy as np
import torch
from torch import Tensor

from .common import EXPRESSIONS, TensorFaces, check_image_size, check_split
from .render import ACTION_UNITS, RENDER_VERSION, new_workspace, render_faces

# Faces are generated in chunks with one random stream each, so face i depends
# only on (seed, split, i): a smaller set is a prefix of a larger one.
CHUNK = 256
_SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}

# Prototype action units per expression, in ACTION_UNITS order:
# brow_raise, brow_lower, inner_brow_raise, eye_open, lip_corner_pull,
# lip_corner_depress, mouth_open, lip_stretch, nose_wrinkle. They follow
# Ekman's FACS descriptions (e.g. fear = AU1+2+4+5+20+25, sadness = AU1+4+15).
AU_PROTOTYPES = torch.tensor([
    [1.00, 0.00, 0.20, 0.80, 0.00, 0.00, 0.85, 0.00, 0.00],  # surprise
    [0.60, 0.45, 0.80, 0.90, 0.00, 0.00, 0.40, 0.90, 0.00],  # fear
    [0.00, 0.50, 0.00, -0.40, 0.00, 0.45, 0.10, 0.00, 1.00],  # disgust
    [0.00, 0.00, 0.00, -0.45, 1.00, 0.00, 0.30, 0.00, 0.10],  # happiness
    [0.00, 0.25, 0.90, -0.30, 0.00, 0.90, 0.00, 0.00, 0.00],  # sadness
    [0.00, 1.00, 0.00, 0.30, 0.00, 0.25, 0.00, 0.00, 0.25],  # anger
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],  # neutral
])

# Expression strength and per-unit jitter: weak expressions drift toward neutral
# and neighbours (fear/surprise, disgust/anger, sadness/neutral) overlap.
INTENSITY = (0.35, 1.1)
AU_NOISE = 0.22
# Bump when the sampling changes what faces a seed gives, so stale caches are not reused.
SAMPLER_VERSION = 1

DIFFICULTIES = ("standard", "hard")
# The hard faces. Identity's spread of the landmark positions (eye spacing and
# height, nose height, mouth height and width) is IDENTITY_SPREAD times the
# standard one, which puts identity's spread of the mouth corners at or above
# expression's. Expression moves the geometry at GEOMETRY_SHARE of its action
# units; its texture takes them at full strength, each half of the face with
# a strength of 1 +- ASYMMETRY at most. Classes are drawn in RAF-DB's
# proportions (its basic train split: surprise, fear, disgust, happiness,
# sadness, anger, neutral), and LABEL_NOISE of the labels are another class,
# uniformly.
IDENTITY_SPREAD = 1.8
GEOMETRY_SHARE = 0.6
ASYMMETRY = 0.8
RAFDB_CLASS_COUNTS = (1290, 281, 717, 4772, 1982, 705, 2524)
LABEL_NOISE = 0.1
HARD_SAMPLER_VERSION = 1
# (parameter, centre of its standard range): identity parameters that place landmarks.
_LANDMARK_IDENTITY = (("eye_dx", 0.315), ("eye_y", -0.0785), ("nose_y", 0.281), ("mouth_y", 0.6485),
                      ("mouth_hw", 0.261 * 0.99), ("brow_gap", 0.15))

_HAIR_COLORS = torch.tensor([[0.08, 0.07, 0.06], [0.25, 0.15, 0.08], [0.45, 0.30, 0.15], [0.85, 0.72, 0.45],
                             [0.60, 0.25, 0.10], [0.65, 0.65, 0.65]])
_IRIS_COLORS = torch.tensor([[0.30, 0.18, 0.08], [0.15, 0.10, 0.05], [0.25, 0.45, 0.70], [0.30, 0.50, 0.30]])
_FRAME_COLORS = torch.tensor([[0.05, 0.05, 0.05], [0.55, 0.45, 0.20], [0.40, 0.10, 0.10], [0.20, 0.20, 0.40]])
_SKIN_LIGHT = torch.tensor([0.96, 0.80, 0.69])
_SKIN_DARK = torch.tensor([0.36, 0.23, 0.16])


def _uniform(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def _pick(g: torch.Generator, palette: Tensor, n: int, jitter: float) -> Tensor:
    index = torch.randint(len(palette), (n,), generator=g)
    return (palette[index] * (1.0 + jitter * torch.randn(n, 3, generator=g))).clamp(0.0, 1.0)


def sample_action_units(labels: Tensor, g: torch.Generator) -> Tensor:
    n = labels.numel()
    intensity = _uniform(g, n, *INTENSITY, 1)
    au = AU_PROTOTYPES[labels] * intensity + AU_NOISE * torch.randn(n, len(ACTION_UNITS), generator=g)
    au[:, 3].clamp_(-1.0, 1.3)
    return torch.cat([au[:, :3].clamp(0.0, 1.3), au[:, 3:4], au[:, 4:].clamp(0.0, 1.3)], dim=1)


def sample_face_params(labels: Tensor, g: torch.Generator) -> Dict[str, Tensor]:
    """Everything render_faces needs for faces with these expression labels, drawn from ``g``."""
    n = labels.numel()
    u = lambda lo, hi, *shape: _uniform(g, n, lo, hi, *shape)  # noqa: E731
    p: Dict[str, Tensor] = {"au": sample_action_units(labels, g)}
    # identity
    p["head_ax"], p["head_ay"] = u(0.68, 0.84), u(0.92, 1.04)
    p["head_cy"], p["chin_taper"] = u(0.02, 0.10), u(0.0, 0.3)
    tone = u(0.0, 1.0, 1)
    p["skin"] = (_SKIN_LIGHT + tone * (_SKIN_DARK - _SKIN_LIGHT)) * (1.0 + 0.04 * torch.randn(n, 3, generator=g))
    p["eye_dx"], p["eye_y"] = 0.315 * u(0.9, 1.1), -0.0785 + u(-0.03, 0.03)
    p["eye_w"], p["eye_h"], p["iris_r"] = u(0.10, 0.135), u(0.045, 0.06), u(0.035, 0.045)
    p["gaze"] = u(-0.015, 0.015, 2)  # x: both irises inward/outward (the halves are mirrored), y: up/down
    p["iris"] = _pick(g, _IRIS_COLORS, n, 0.15)
    p["brow_gap"], p["brow_thick"], p["brow_arch"] = u(0.13, 0.17), u(0.018, 0.035), u(0.0, 0.04)
    p["nose_y"], p["nose_w"] = 0.281 + u(-0.02, 0.02), u(0.07, 0.10)
    p["mouth_y"], p["mouth_hw"] = 0.6485 + u(-0.03, 0.03), 0.261 * u(0.88, 1.1)
    p["lip_up"], p["lip_lo"] = u(0.025, 0.045), u(0.035, 0.06)
    lipstick = (torch.rand(n, 1, generator=g) < 0.2).float()
    natural = p["skin"] * torch.tensor([0.85, 0.55, 0.55])
    p["lip"] = natural + lipstick * (torch.tensor([0.65, 0.08, 0.15]) - natural)
    p["neck_w"] = u(0.28, 0.38)
    p["hair"] = _pick(g, _HAIR_COLORS, n, 0.12)
    p["brow"] = p["hair"] * 0.7
    kind = torch.rand(n, generator=g)  # bald, short, long
    p["hair_on"] = (kind >= 0.08).float()
    p["hair_len"] = torch.where(kind < 0.58, u(-0.3, 0.1), u(0.4, 1.4))
    p["hairline"], p["hair_vol"] = u(-0.78, -0.4), u(0.04, 0.18)
    p["glasses_on"] = (torch.rand(n, generator=g) < 0.25).float()
    p["glass_w"], p["glass_h"], p["frame_t"] = u(0.14, 0.17), u(0.09, 0.12), u(0.012, 0.025)
    p["frame"] = _pick(g, _FRAME_COLORS, n, 0.1)
    # pose
    p["angle"] = torch.deg2rad(u(-20.0, 20.0))
    p["scale"], p["shift"] = u(0.82, 1.12), u(-0.12, 0.12, 2)
    # lighting
    p["light"], p["ambient"] = u(-0.8, 0.8, 2), u(0.35, 0.75)
    p["gain"], p["cast"], p["light_grad"] = u(0.65, 1.25), u(0.88, 1.12, 3), u(-0.25, 0.25, 2)
    # background
    p["bg1"], p["bg2"], p["bg_angle"] = u(0.0, 1.0, 3), u(0.0, 1.0, 3), u(0.0, 2 * np.pi)
    k = 3
    p["blob_c"], p["blob_r"] = u(-1.2, 1.2, k, 2), u(0.1, 0.5, k)
    p["blob_soft"], p["blob_alpha"], p["blob_color"] = u(1.0, 6.0, k), u(0.3, 1.0, k), u(0.0, 1.0, k, 3)
    p["stripe_amp"], p["stripe_freq"] = u(0.0, 0.12), u(2.0, 10.0)
    p["stripe_angle"], p["stripe_phase"] = u(0.0, np.pi), u(0.0, 2 * np.pi)
    p["noise"] = u(0.005, 0.04)
    return {key: value.to(torch.float32).contiguous() for key, value in p.items()}


def harden_face_params(p: Dict[str, Tensor], g: torch.Generator) -> Dict[str, Tensor]:
    """The hard variant of standard face parameters (see the module's docstring): the landmark-placing identity
    parameters spread IDENTITY_SPREAD times as far about their centres, the geometric action units at
    GEOMETRY_SHARE, the full ones in "tex_au" for the texture, and each face's asymmetry "side" in
    [-ASYMMETRY, ASYMMETRY]."""
    p = dict(p)
    for name, centre in _LANDMARK_IDENTITY:
        p[name] = centre + IDENTITY_SPREAD * (p[name] - centre)
    p["tex_au"] = p["au"]
    p["au"] = GEOMETRY_SHARE * p["au"]
    p["side"] = ASYMMETRY * (2 * torch.rand(p["au"].shape[0], generator=g) - 1)
    return p


def chunk_labels(g: torch.Generator, difficulty: str) -> Tensor:
    """The expressions of one chunk's CHUNK faces, in a random order: balanced (standard), or in RAF-DB's
    proportions (hard; the counts by largest remainder, so every chunk has the same ones)."""
    if difficulty == "standard":
        return (torch.arange(CHUNK) % len(EXPRESSIONS))[torch.randperm(CHUNK, generator=g)]
    share = torch.tensor(RAFDB_CLASS_COUNTS, dtype=torch.float64)
    exact = CHUNK * share / share.sum()
    counts = exact.floor().long()
    counts[torch.argsort(exact - counts, descending=True)[:CHUNK - int(counts.sum())]] += 1
    return torch.repeat_interleave(torch.arange(len(counts)), counts)[torch.randperm(CHUNK, generator=g)]


def noisy_labels(labels: Tensor, g: torch.Generator) -> Tensor:
    """labels with LABEL_NOISE of them (each independently) replaced by another class, uniformly."""
    k = len(EXPRESSIONS)
    flip = torch.rand(labels.shape, generator=g) < LABEL_NOISE
    other = (labels + torch.randint(1, k, labels.shape, generator=g)) % k
    return torch.where(flip, other, labels)


def chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence(entropy=seed, spawn_key=(_SPLIT_STREAM[split], chunk)).generate_state(
        1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def render_chunk(seed: int, split: str, chunk: int, image_size: int, count: int = CHUNK, workspace=None,
                 difficulty: str = "standard"):
    """The first ``count`` faces of one chunk: uint8 images, labels, landmarks, action units and the labels of
    the expressions drawn (the labels but for the hard faces' noise)."""
    g = chunk_generator(seed, split, chunk)
    labels = chunk_labels(g, difficulty)
    params = sample_face_params(labels, g)
    if difficulty == "hard":
        params = harden_face_params(params, g)
    params = {key: value[:count] for key, value in params.items()}
    # Noise for the whole chunk, so that a face's pixels never depend on how many follow it.
    noise = torch.randn(CHUNK, image_size, image_size, generator=g)[:count]
    images, landmarks = render_faces(params, image_size, noise=noise, workspace=workspace)
    images = images.mul_(255.0).round_().to(torch.uint8)
    shown = noisy_labels(labels, g) if difficulty == "hard" else labels
    aus = params["tex_au"] if difficulty == "hard" else params["au"]
    return images, shown[:count], landmarks, aus, labels[:count]


class SyntheticFaces(TensorFaces):
    """``num_samples`` rendered faces of ``image_size`` pixels, deterministic from (seed, split).

    The train, val and test splits come from different random streams, so they
    share no face. Beyond the FaceDataset interface it keeps the ground truth:
    ``landmarks`` (N, 5, 2), ``action_units`` (N, 9), named by ACTION_UNITS, and
    ``true_labels`` (N,), the expressions drawn (the labels but for the hard
    faces' label noise). ``difficulty``: "standard" or "hard" (the module's
    docstring). With ``cache_dir`` the rendered tensors are saved there and reused.
    """

    ACTION_UNITS = ACTION_UNITS

    def __init__(self, num_samples: int, image_size: int = 64, seed: int = 0, *, split: str = "train",
                 cache_dir: Optional[str] = None, difficulty: str = "standard"):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        check_image_size(image_size)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
        self.split = check_split(split)
        self.seed = seed
        self.difficulty = difficulty
        data = self._load_cache(cache_dir, num_samples, image_size) if cache_dir else None
        if data is None:
            data = self._render(num_samples, image_size)
            if cache_dir:
                self._save_cache(cache_dir, num_samples, image_size, data)
        super().__init__(data["images"], data["labels"], EXPRESSIONS, data["landmarks"])
        self.action_units: Tensor = data["action_units"]
        self.true_labels: Tensor = data["true_labels"]

    def _render(self, num_samples: int, image_size: int) -> Dict[str, Tensor]:
        workspace = new_workspace()
        # One thread: the renderer's operations are too small to gain from more,
        # and intra-op threads stall badly when other processes hold the cores.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            parts = [render_chunk(self.seed, self.split, c, image_size, min(CHUNK, num_samples - c * CHUNK),
                                  workspace, self.difficulty) for c in range((num_samples + CHUNK - 1) // CHUNK)]
        finally:
            torch.set_num_threads(threads)
        images, labels, landmarks, aus, true_labels = zip(*parts)
        return {"images": torch.cat(images), "labels": torch.cat(labels), "landmarks": torch.cat(landmarks),
                "action_units": torch.cat(aus), "true_labels": torch.cat(true_labels)}

    def _cache_file(self, cache_dir: str, num_samples: int, image_size: int) -> str:
        version = f"v{RENDER_VERSION}.{SAMPLER_VERSION}"
        if self.difficulty == "hard":
            version = f"hard-{version}.{HARD_SAMPLER_VERSION}"
        return os.path.join(cache_dir, f"synthetic-{version}-{self.split}-n{num_samples}-"
                                       f"s{image_size}-seed{self.seed}.pt")

    def _load_cache(self, cache_dir: str, num_samples: int, image_size: int) -> Optional[Dict[str, Tensor]]:
        path = self._cache_file(cache_dir, num_samples, image_size)
        if not os.path.isfile(path):
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data["images"].shape != (num_samples, 3, image_size, image_size):
                raise ValueError(f"images of shape {tuple(data['images'].shape)}")
            if "true_labels" not in data:   # written before the labels and the expressions drawn were told apart
                data["true_labels"] = data["labels"]
            return data
        except Exception as err:  # an unreadable cache is rebuilt, never trusted
            warnings.warn(f"synthetic: ignoring unreadable cache file {path} ({err}); rendering again",
                          stacklevel=3)
            return None

    def _save_cache(self, cache_dir: str, num_samples: int, image_size: int, data: Dict[str, Tensor]) -> None:
        os.makedirs(cache_dir, exist_ok=True)
        path = self._cache_file(cache_dir, num_samples, image_size)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save(data, tmp)
        os.replace(tmp, path)  # atomic, so a concurrent reader never sees half a file

    def export_rafdb(self, out_dir: str, *, quality: int = 95) -> str:
        """Write this split in RAF-DB's ``basic/`` layout under ``out_dir``; returns the label file.

        Images go to Image/aligned/<split>_<00001>_aligned.jpg. The label file
        EmoLabel/list_patition_label.txt keeps the other split's lines, so
        exporting the train and the test set into one folder gives a complete
        RAF-DB layout that ``build_dataset("rafdb", out_dir, ...)`` reads back.
        """
        from PIL import Image

        image_dir = os.path.join(out_dir, "Image", "aligned")
        label_dir = os.path.join(out_dir, "EmoLabel")
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(label_dir, exist_ok=True)
        lines = []
        pixels = self.images.permute(0, 2, 3, 1).numpy()
        for i in range(len(self)):
            name = f"{self.split}_{i + 1:05d}"
            Image.fromarray(pixels[i]).save(os.path.join(image_dir, f"{name}_aligned.jpg"), quality=quality,
                                            subsampling=0)
            lines.append(f"{name}.jpg {int(self.labels[i]) + 1}")
        label_file = os.path.join(label_dir, "list_patition_label.txt")
        if os.path.isfile(label_file):
            with open(label_file, "r", encoding="utf-8") as f:
                others = [line.strip() for line in f if line.strip() and not line.startswith(self.split + "_")]
            lines = sorted(others) + lines if self.split == "test" else lines + sorted(others)
        tmp = f"{label_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, label_file)
        return label_file
