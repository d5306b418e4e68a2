"""cwarp.data.decode: every image mode to the documented uint8 RGB (or grey), or refused by name."""
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from cwarp.data.decode import CorruptImageError, decode_bytes

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _encode(image, fmt, **kw):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def _pixels(h, w, seed=0):
    # Smooth, so that JPEG keeps it close; asymmetric, so that every orientation differs.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    base = np.stack([x * 200 / w, y * 200 / h, (x + 2 * y) * 80 / (w + h)], -1) + rng.integers(0, 40, 3)
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [32, 12])      # 12: a reduced-scale (draft) decode of the 40 x 24 JPEG
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pil_applies_it(size, orientation):
    image = Image.fromarray(_pixels(24, 40))
    exif = image.getexif()
    exif[0x0112] = orientation
    data = _encode(image, "JPEG", quality=95, exif=exif.tobytes())
    decoded, (h, w) = decode_bytes(data, "x.jpg", 3, size)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert (h, w) == (upright.height, upright.width)
    expected = torch.from_numpy(np.array(upright.resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
    assert (decoded.int() - expected.int()).abs().float().mean() < 3, orientation


def test_alpha_is_composited_over_black_and_opaque_images_keep_their_colours():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 100, 51)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 128
    rgba[0, 1, 3] = 0
    decoded, _ = decode_bytes(_encode(Image.fromarray(rgba, "RGBA"), "PNG"), "a.png", 3, 4)
    assert decoded[:, 0, 0].tolist() == [100, 50, 26]          # c * 128 / 255, rounded
    assert decoded[:, 0, 1].tolist() == [0, 0, 0]
    assert decoded[:, 3, 3].tolist() == [200, 100, 51]
    la = np.stack([np.full((4, 4), 90, np.uint8), np.full((4, 4), 255, np.uint8)], -1)
    grey, _ = decode_bytes(_encode(Image.fromarray(la, "LA"), "PNG"), "la.png", 3, 4)
    assert (grey == 90).all()


def test_palette_with_transparency_cmyk_and_grey():
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 1
    decoded, _ = decode_bytes(_encode(palette, "PNG", transparency=1), "p.png", 3, 2)
    assert decoded[:, 0, 0].tolist() == [255, 0, 0] and decoded[:, 0, 1].tolist() == [0, 0, 0]
    cmyk = Image.fromarray(np.full((16, 16, 3), (200, 100, 50), np.uint8)).convert("CMYK")
    for size in (16, 8):      # libjpeg, then the reduced-scale decode through PIL
        decoded, _ = decode_bytes(_encode(cmyk, "JPEG", quality=100), "c.jpg", 3, size)
        assert (decoded.int() - torch.tensor([200, 100, 50]).view(3, 1, 1)).abs().max() <= 2
    grey = Image.fromarray(np.full((8, 8), 77, np.uint8))
    for fmt in ("PNG", "JPEG"):
        rgb, _ = decode_bytes(_encode(grey, fmt, **({"quality": 100} if fmt == "JPEG" else {})), "g", 3, 8)
        assert rgb.shape == (3, 8, 8) and (rgb.int() - 77).abs().max() <= 1
    one, _ = decode_bytes(_encode(Image.fromarray(np.full((8, 8, 3), (200, 100, 50), np.uint8)), "PNG"), "c", 1, 8)
    assert one.shape == (1, 8, 8) and int(one[0, 0, 0]) == round(0.2989 * 200 + 0.587 * 100 + 0.114 * 50)


def test_a_file_named_jpg_that_is_a_png_decodes_by_its_signature():
    data = _encode(Image.fromarray(_pixels(8, 8)), "PNG")
    decoded, _ = decode_bytes(data, "liar.jpg", 3, 8)
    assert torch.equal(decoded, torch.from_numpy(_pixels(8, 8)).permute(2, 0, 1))


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "damaged png"])
def test_unreadable_bytes_raise_one_line_naming_the_file(damage):
    jpeg = _encode(Image.fromarray(_pixels(64, 64)), "JPEG", quality=90)
    png = bytearray(_encode(Image.fromarray(_pixels(64, 64)), "PNG"))
    png[len(png) // 2:len(png) // 2 + 40] = b"\x55" * 40      # crashed torchvision's decode_png (SIGSEGV)
    data = {"empty": b"", "garbage": b"hello" * 20, "truncated": jpeg[:len(jpeg) // 2],
            "damaged png": bytes(png)}[damage]
    with pytest.raises(CorruptImageError) as info:
        decode_bytes(data, "dir/face.img", 3, 16)
    message = str(info.value)
    assert message.startswith("cannot decode image file dir/face.img: ") and "\n" not in message
    assert "object at 0x" not in message and ".cpp" not in message
