"""ContraWarpAugment's Views.landmarks: the source landmarks followed into
every view (affine and local warps), checked against the rendered pixels."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cwarp
from cwarp.nn import ContraWarpAugment
from cwarp.reference import sampling_map


def _aug(**kw):
    opts = dict(size=64, num_negatives=3, warps_per_negative=2, jitter_p=0.0, grayscale_p=0.0,
                mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), warp_magnitude=(0.1, 0.2))
    opts.update(kw)
    return ContraWarpAugment(**opts)


def test_landmarks_for_every_view(gen):
    images = torch.randint(0, 256, (4, 3, 80, 80), dtype=torch.uint8, generator=gen)
    marks = cwarp.FACE_LANDMARKS_5.expand(4, 5, 2) + 0.02 * torch.randn(4, 5, 2, generator=gen)
    aug = _aug()
    views = aug(images, landmarks=marks, generator=gen)
    got = views.landmarks
    assert got.shape == (4, 5, 5, 2)
    assert views.landmarks is got        # computed once
    params = views.params
    # Each view's sampling map takes its landmarks back to the source landmarks.
    for v in range(5):
        back = sampling_map(got[:, v], params.warps[:, v], params.theta[:, v], kind=aug.kind)
        torch.testing.assert_close(back.float(), marks, rtol=0, atol=1e-5)
    # pos1 and pos2 carry no local warps: their landmarks are the inverse affine alone.
    a, t = params.theta[:, :2, :, :2], params.theta[:, :2, :, 2]
    inv = torch.linalg.solve(a[:, :, None], (marks[:, None] - t[:, :, None]).unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got[:, :2], inv, rtol=0, atol=1e-5)
    # On a negative the local warps move them away from pos2's.
    assert (got[:, 2:] - got[:, 1:2]).abs().amax() > 1e-3


def test_landmarks_follow_the_rendered_content(gen):
    """A bright dot at a landmark of the source shows up in every view at the
    landmark the view reports."""
    size = 96
    marks = torch.tensor([[[-0.3, -0.1], [0.3, -0.1], [0.0, 0.3]]])
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    img = torch.zeros(1, 3, size, size)
    for x, y in marks[0].tolist():
        img += torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.03 ** 2))
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    aug = _aug(size=96, crop_scale=(0.8, 1.0), rotation=5.0, flip_p=0.5)
    views = aug(images, landmarks=marks, generator=gen)
    step = 2 * 2.0 / size                 # two pixels of the view
    offsets = torch.tensor([[0.0, 0.0], [step, 0.0], [-step, 0.0], [0.0, step], [0.0, -step]])
    for v in range(views.all.shape[1]):
        out = views.all[0, v].mean(0, keepdim=True)[None]
        at = views.landmarks[0, v].float()[:, None] + offsets           # (L, 5, 2)
        value = F.grid_sample(out, at[None], align_corners=False)[0, 0]  # (L, 5)
        assert (value[:, 0] > 0.5).all(), (v, value)
        assert (value[:, 0:1] > value[:, 1:]).all(), (v, value)         # the dot's peak is there


def test_without_landmarks_there_are_none(gen):
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=gen)
    views = _aug(size=32)(images, generator=gen)
    assert views.params.landmarks is None and views.landmarks is None


def test_replay_keeps_the_landmarks(gen):
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=gen)
    aug = _aug(size=32)
    views = aug(images, landmarks=cwarp.FACE_LANDMARKS_5, generator=gen)
    again = aug.render(images, views.params)
    assert torch.equal(again.landmarks, views.landmarks)
    assert views.params.landmarks.shape == (2, 5, 2)


def test_bad_landmarks_raise_even_without_negatives(gen):
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=gen)
    with pytest.raises(ValueError, match=r"cwarp.ContraWarpAugment\(\): expected landmarks of shape"):
        _aug(size=32, num_negatives=0)(images, landmarks=torch.zeros(3, 5, 2), generator=gen)
