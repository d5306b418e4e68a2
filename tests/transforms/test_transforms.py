"""cwarp.transforms: RandomLocalWarp and ContraWarpViews on plain tensors and
tv_tensors inside v2 pipelines, per-sample parameters, the generator,
keypoints that follow the warp, DataLoader workers, and the input errors."""
from __future__ import annotations

import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import cwarp
from cwarp.transforms import ContraWarpViews, RandomLocalWarp


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(*shape, dtype=torch.uint8, seed=0):
    g = _seeded(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    return torch.rand(shape, generator=g, dtype=dtype)


def _to_norm(points, H, W):
    return (points + 0.5) * torch.tensor([2.0 / W, 2.0 / H]) - 1.0


def _to_pix(points, H, W):
    return (points + 1.0) * torch.tensor([W / 2.0, H / 2.0]) - 0.5


def test_public_name():
    assert cwarp.transforms.RandomLocalWarp is RandomLocalWarp
    assert isinstance(RandomLocalWarp(), v2.Transform) and isinstance(RandomLocalWarp(), torch.nn.Module)


# ------------------------------------------------------------- RandomLocalWarp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_batch_is_local_warp_with_one_draw_of_batch_size(dtype):
    images = _images(5, 3, 24, 20, dtype=dtype)
    out = RandomLocalWarp(num_warps=3, generator=_seeded(7))(images)
    params = cwarp.sample_local_warps(5, 3, generator=_seeded(7))
    expected = cwarp.local_warp(images, params.to(torch.float32))
    assert type(out) is torch.Tensor and out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_uint8_image_rounds_the_float_warp():
    image = _images(3, 32, 32)
    out = RandomLocalWarp(magnitude=0.2, generator=_seeded(3))(image)
    params = cwarp.sample_local_warps(1, 4, magnitude=(0.2, 0.2), generator=_seeded(3))
    expected = cwarp.local_warp(image[None].float(), params)[0].round().to(torch.uint8)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    assert torch.equal(out, expected)
    assert not torch.equal(out, image)


def test_per_sample_parameters_differ_across_a_batch():
    images = _images(3, 32, 32).expand(6, 3, 32, 32).contiguous()
    out = RandomLocalWarp(generator=_seeded(0))(images)
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.equal(out[i], out[j]), (i, j)


def test_generator_is_honoured_and_is_the_only_source():
    images = _images(4, 3, 32, 32)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = RandomLocalWarp(p=0.7, generator=_seeded(11))(images)
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG was not drawn from
    torch.manual_seed(99)
    b = RandomLocalWarp(p=0.7, generator=_seeded(11))(images)
    c = RandomLocalWarp(p=0.7, generator=_seeded(12))(images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_without_generator_the_global_rng_decides():
    images = _images(2, 3, 32, 32)
    t = RandomLocalWarp()
    torch.manual_seed(5)
    a = t(images)
    torch.manual_seed(5)
    b = t(images)
    c = t(images)
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_image_and_keypoints_in_compose_follow_the_flip_and_the_warp():
    H, W = 40, 48
    image = tv_tensors.Image(_images(3, H, W))
    points = torch.tensor([[19.0, 22.0], [30.0, 25.0], [22.5, 30.25]])
    kp = tv_tensors.KeyPoints(points, canvas_size=(H, W))
    warp = RandomLocalWarp(6, radius=0.5, magnitude=0.2, generator=_seeded(4))
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=1.0), warp, v2.ToDtype(torch.float32, scale=True)])
    out_image, out_kp, label = pipeline(image, kp, 3)
    assert label == 3
    assert isinstance(out_image, tv_tensors.Image) and out_image.dtype == torch.float32
    assert isinstance(out_kp, tv_tensors.KeyPoints) and out_kp.canvas_size == (H, W)
    params = cwarp.sample_local_warps(1, 6, radius=(0.5, 0.5), magnitude=(0.2, 0.2), generator=_seeded(4))
    flipped = image.flip(-1).as_subclass(torch.Tensor)
    expected = cwarp.local_warp(flipped[None].float(), params)[0].round() / 255
    torch.testing.assert_close(out_image.as_subclass(torch.Tensor), expected, rtol=0, atol=1e-6)
    flipped_points = torch.stack([W - 1 - points[:, 0], points[:, 1]], dim=-1)
    moved = _to_pix(cwarp.warp_points(_to_norm(flipped_points, H, W)[None], params)[0], H, W)
    torch.testing.assert_close(out_kp.as_subclass(torch.Tensor), moved, rtol=0, atol=1e-5)
    assert ((moved - flipped_points).norm(dim=-1) > 0.5).all()  # every keypoint moved


def test_dict_sample_and_pure_tensor_labels_pass_through():
    sample = {"image": tv_tensors.Image(_images(3, 16, 16)), "label": torch.tensor(4), "name": "a"}
    out = RandomLocalWarp(generator=_seeded(0))(sample)
    assert out["label"] is sample["label"] and out["name"] == "a"
    assert isinstance(out["image"], tv_tensors.Image) and not torch.equal(out["image"], sample["image"])


def test_a_bright_dot_at_a_keypoint_is_at_the_moved_keypoint():
    """The round trip: the content at the keypoint is found where the keypoint moved."""
    H = W = 64
    x0, y0 = 27.0, 35.0
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    dot = torch.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * 1.2 ** 2))
    image = tv_tensors.Image(dot.expand(1, H, W).clone())
    centre = _to_norm(torch.tensor([[x0, y0]], dtype=torch.float64), H, W).float()
    for seed in range(3):
        t = RandomLocalWarp(num_warps=2, radius=0.4, magnitude=(0.15, 0.2), centers=centre, center_jitter=0.1,
                            generator=_seeded(seed))
        out_image, out_kp = t(image, tv_tensors.KeyPoints([[x0, y0]], canvas_size=(H, W), dtype=torch.float64))
        out = out_image[0].as_subclass(torch.Tensor)
        weights = torch.where(out > 0.3 * out.max(), out, torch.zeros_like(out))
        found = torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()
        moved = out_kp.as_subclass(torch.Tensor)[0]
        assert (moved - torch.tensor([x0, y0], dtype=torch.float64)).norm() > 2.0  # the warp moved it
        assert (found - moved).norm() < 0.35, (seed, found.tolist(), moved.tolist())


def test_video_clip_shares_its_warps_across_frames():
    frame = _images(3, 24, 24)
    clip = tv_tensors.Video(frame.expand(5, 3, 24, 24).clone())
    out = RandomLocalWarp(generator=_seeded(1))(clip)
    assert isinstance(out, tv_tensors.Video) and out.shape == clip.shape
    image_out = RandomLocalWarp(generator=_seeded(1))(frame)
    for t in range(5):
        assert torch.equal(out[t].as_subclass(torch.Tensor), image_out)
    clips = tv_tensors.Video(frame.expand(2, 3, 3, 24, 24).clone())  # (B, T, C, H, W)
    kp = tv_tensors.KeyPoints(torch.tensor([[[11.5, 11.5]], [[11.5, 11.5]]]), canvas_size=(24, 24))
    at_centre = dict(centers=torch.zeros(1, 2), center_jitter=0.0)  # the warps move the keypoint
    out_clips, out_kp = RandomLocalWarp(generator=_seeded(1), **at_centre)(clips, kp)
    assert torch.equal(out_clips[0, 0], out_clips[0, 2]) and not torch.equal(out_clips[0, 0], out_clips[1, 0])
    assert out_kp.shape == (2, 1, 2) and not torch.equal(out_kp[0], out_kp[1])


def test_p_zero_is_the_identity_and_p_decides_per_image():
    images = _images(3, 16, 16).expand(40, 3, 16, 16).contiguous()
    kp = tv_tensors.KeyPoints(torch.full((40, 2, 2), 7.5), canvas_size=(16, 16))  # the centre
    out, out_kp = RandomLocalWarp(p=0.0, generator=_seeded(0))(images, kp)
    assert out is images and out_kp is kp
    out, out_kp = RandomLocalWarp(p=0.5, generator=_seeded(0), magnitude=0.3, centers=torch.zeros(1, 2),
                                  center_jitter=0.0)(images, kp)
    kept = torch.tensor([torch.equal(out[i], images[i]) for i in range(40)])
    assert 5 < int(kept.sum()) < 35
    moved = (out_kp != kp).flatten(1).any(1)
    assert torch.equal(moved, ~kept)


def test_bad_inputs_raise_naming_the_problem():
    t = RandomLocalWarp()
    image = tv_tensors.Image(_images(3, 16, 16))
    boxes = tv_tensors.BoundingBoxes([[1, 2, 5, 6]], format="XYXY", canvas_size=(16, 16))
    with pytest.raises(TypeError, match=r"RandomLocalWarp\(\): tv_tensors.BoundingBoxes is not supported"):
        t(image, boxes)
    with pytest.raises(TypeError, match=r"tv_tensors.Mask is not supported"):
        t(image, tv_tensors.Mask(torch.zeros(16, 16, dtype=torch.uint8)))
    with pytest.raises(TypeError, match=r"PIL images are not supported; convert them with v2.PILToTensor"):
        t(PIL.Image.new("RGB", (16, 16)))
    with pytest.raises(TypeError, match=r"expected KeyPoints of a floating dtype .* got torch.int64"):
        t(image, tv_tensors.KeyPoints(torch.tensor([[3, 4]]), canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"canvas_size equal to the image's \(H, W\) = \(16, 16\), got \(16, 17\)"):
        t(image, tv_tensors.KeyPoints([[3.0, 4.0]], canvas_size=(16, 17)))
    with pytest.raises(ValueError, match=r"KeyPoints of shape \(B, \.\.\., 2\) with B = 2 for a batch, got \[3, 2\]"):
        t(tv_tensors.Image(_images(2, 3, 16, 16)), tv_tensors.KeyPoints(torch.zeros(3, 2), canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"shape \(C, H, W\) or \(B, C, H, W\), got \[16, 16\]"):
        t(torch.zeros(16, 16))
    with pytest.raises(TypeError, match=r"expected images of dtype uint8 or floating, got torch.int32"):
        t(torch.zeros(3, 16, 16, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"only KeyPoints"):
        t(tv_tensors.KeyPoints([[3.0, 4.0]], canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"same batch size, H, W and device"):
        t(image, tv_tensors.Image(_images(3, 16, 18)))
    with pytest.raises(ValueError, match=r"RandomLocalWarp\(\): expected p in \[0, 1\], got 1.5"):
        RandomLocalWarp(p=1.5)
    with pytest.raises(ValueError, match=r"radius as \(min, max\) with 0 < min <= max"):
        RandomLocalWarp(radius=(0.0, 0.2))
    with pytest.raises(TypeError, match=r"expected generator to be a torch.Generator or None, got int"):
        RandomLocalWarp(generator=0)


class _GeneratorOnAnotherDevice(torch.Generator):
    @property
    def device(self):
        return torch.device("cuda", 3)


def test_generator_on_another_device_raises():
    for module in (RandomLocalWarp(generator=_GeneratorOnAnotherDevice()),
                   ContraWarpViews(16, generator=_GeneratorOnAnotherDevice())):
        with pytest.raises(RuntimeError, match=r"expected the generator on the CPU or on the data's device cpu, "
                                               r"got a generator on cuda:3"):
            module(_images(3, 16, 16))


# ------------------------------------------------------------ DataLoader workers


class _SameImage(Dataset):
    """Eight copies of one image: any two equal outputs are repeated warps."""

    def __init__(self, transform):
        self.image = _images(3, 24, 24)
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(tv_tensors.Image(self.image)), i


def _epochs(transform, seed, epochs=2):
    torch.manual_seed(seed)
    loader = DataLoader(_SameImage(transform), batch_size=2, num_workers=2)
    return [torch.cat([b for b, _ in loader]) for _ in range(epochs)]


def _all_distinct(batch):
    flat = batch.flatten(1)
    return all(not torch.equal(flat[i], flat[j]) for i in range(len(flat)) for j in range(i + 1, len(flat)))


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda seed: RandomLocalWarp(), lambda seed: RandomLocalWarp(generator=_seeded(seed)),
                                  lambda seed: ContraWarpViews(16, generator=_seeded(seed))],
                         ids=["global-rng", "generator", "views-generator"])
def test_dataloader_workers_are_reproducible_and_do_not_repeat(make):
    first = _epochs(make(1), seed=0)
    again = _epochs(make(1), seed=0)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    assert _all_distinct(torch.cat(first))  # no repeats across workers or across epochs
    if make(1).generator is not None:
        other = _epochs(make(2), seed=0)
        assert not torch.equal(first[0], other[0])  # the user's seed counts, not only the DataLoader's


# ------------------------------------------------------------ ContraWarpViews


def _views_options():
    return dict(num_negatives=2, warps_per_negative=2)


def test_contrawarp_views_match_contrawarp_augment():
    H, W, S = 40, 36, 24
    image = _images(3, H, W)
    marks = torch.tensor([[12.0, 15.0], [24.0, 15.0], [18.0, 22.0]])
    out, kp, label = ContraWarpViews(S, generator=_seeded(3), **_views_options())(
        tv_tensors.Image(image), tv_tensors.KeyPoints(marks, canvas_size=(H, W)), 6)
    aug = cwarp.ContraWarpAugment(S, **_views_options())
    views = aug(image[None], landmarks=_to_norm(marks, H, W)[None], generator=_seeded(3))
    assert label == 6
    assert isinstance(out, tv_tensors.Image) and out.shape == (4, 3, S, S)
    assert torch.equal(out.as_subclass(torch.Tensor), views.all[0])
    assert isinstance(kp, tv_tensors.KeyPoints) and kp.shape == (4, 3, 2) and kp.canvas_size == (S, S)
    torch.testing.assert_close(kp.as_subclass(torch.Tensor), _to_pix(views.landmarks[0], S, S), rtol=0, atol=1e-5)


def test_contrawarp_views_batch_plain_tensor_and_collate():
    images = _images(3, 3, 32, 32)
    out = ContraWarpViews(16, generator=_seeded(0), **_views_options())(images)
    assert isinstance(out, tv_tensors.Image) and out.shape == (3, 4, 3, 16, 16)
    same = ContraWarpViews(16, generator=_seeded(0), **_views_options())(images)
    assert torch.equal(out, same)
    t = ContraWarpViews(16, generator=_seeded(0), **_views_options())
    batch = torch.utils.data.default_collate([t(tv_tensors.Image(im)) for im in images])
    assert batch.shape == (3, 4, 3, 16, 16)


def test_contrawarp_views_bad_inputs():
    t = ContraWarpViews(16)
    image = tv_tensors.Image(_images(3, 16, 16))
    with pytest.raises(TypeError, match=r"ContraWarpViews\(\): tv_tensors.Video is not supported"):
        t(tv_tensors.Video(_images(2, 3, 16, 16)))
    with pytest.raises(TypeError, match=r"tv_tensors.BoundingBoxes is not supported"):
        t(image, tv_tensors.BoundingBoxes([[1, 2, 5, 6]], format="XYXY", canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"landmarks KeyPoints of shape \(L, 2\), got \[1, 2, 2\]"):
        t(image, tv_tensors.KeyPoints(torch.zeros(1, 2, 2), canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"at most one KeyPoints"):
        t(image, tv_tensors.KeyPoints([[1.0, 2.0]], canvas_size=(16, 16)),
          tv_tensors.KeyPoints([[1.0, 2.0]], canvas_size=(16, 16)))
    with pytest.raises(ValueError, match=r"exactly one image per sample"):
        t(image, tv_tensors.Image(_images(3, 16, 16)))
