"""Decoding one image (a file or its bytes) into a resized uint8 tensor, with errors that name the file.

Every readable image becomes the same thing, whatever its mode (docs/api.md,
"Decoding"): uint8 RGB (or grey), EXIF orientation applied, 16-bit samples
reduced to their high byte (v >> 8), palettes expanded, CMYK converted,
alpha composited over black (c * a / 255, rounded), grey from RGB
by cwarp's GRAY_WEIGHTS; then resized to S x S (the aspect ratio is not kept)
by bilinear interpolation with antialiasing, PIL's BILINEAR filter. A JPEG at
least twice the target on its shorter side is first decoded at a reduced DCT
scale (1/2, 1/4 or 1/8, never below the target: libjpeg's scaled IDCT through
PIL's ``draft``). Images whose samples have no fixed range (PIL modes I and F:
32-bit integers, floats) are refused by name.

JPEGs go through libjpeg-turbo (torchvision.io), the fast path; PIL reads
every other format and what libjpeg refuses.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from cwarp._constants import GRAY_WEIGHTS

from .common import resize_uint8

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # torchvision announced it will drop its decoders; PIL then does all the work
    decode_jpeg = None

__all__ = ["CorruptImageError", "IMAGE_EXTENSIONS", "decode_bytes", "decode_file", "read_image_bytes",
           "jpeg_orientation", "silence_decoder_deprecation", "to_channels"]


def silence_decoder_deprecation() -> None:
    """Ignore torchvision's warning that its decoders move to TorchCodec, and only it.

    torchvision 0.29 warns on every decode; its decoders are still the fastest
    here, and one warning per image would drown everything else. Called at
    import, and again by code that records warnings with ``simplefilter("always")``
    (which would otherwise bring it back).
    """
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are "
                            "deprecated", category=DeprecationWarning)


silence_decoder_deprecation()

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

# A JPEG is decoded at a reduced DCT scale when its shorter side is at least this many times the target.
DRAFT_FACTOR = 2

# PIL modes whose samples are 16-bit unsigned integers.
_PIL_16BIT = ("I;16", "I;16L", "I;16B", "I;16N")
# PIL modes with an alpha channel (a palette's or a colour key's transparency is in im.info).
_PIL_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class CorruptImageError(RuntimeError):
    """An image file that exists but cannot be decoded (or is refused, with the reason)."""


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) from a JPEG's frame header (SOFn), or None where the markers do not parse."""
    i, n = 2, len(data)
    while i + 9 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:   # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return height, width
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _decoder(data: bytes, image_size: int) -> str:
    """Which decoder reads these bytes: "libjpeg" (torchvision's libjpeg-turbo) or "pil" (every other
    format, and JPEGs decoded at a reduced DCT scale), from the signature, not the file's name.

    PNGs go through PIL: torchvision 0.29's decode_png crashes the process (SIGSEGV) on some damaged
    files, where PIL raises.
    """
    if decode_jpeg is not None and data[:3] == b"\xff\xd8\xff":
        size = _jpeg_size(data)
        return "pil" if size is not None and min(size) >= DRAFT_FACTOR * image_size else "libjpeg"
    return "pil"


def _high_byte(samples: np.ndarray) -> Tensor:
    """16-bit samples as 8-bit ones: their high byte, v >> 8 (what PIL gives for 16-bit colour PNGs)."""
    return torch.from_numpy((samples.astype(np.uint16) >> 8).astype(np.uint8))


def _composite(image: Tensor) -> Tensor:
    """(C+1, H, W) uint8 colour and alpha to (C, H, W) over black: c * a / 255, rounded; an opaque image
    keeps its colour samples exactly."""
    colour, alpha = image[:-1], image[-1:]
    if bool((alpha == 255).all()):
        return colour
    out = colour.to(torch.float32) * alpha.to(torch.float32)
    return out.div_(255.0).round_().to(torch.uint8)


def _gray(rgb: Tensor) -> Tensor:
    """(3, H, W) uint8 to (1, H, W) by GRAY_WEIGHTS, rounded."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=torch.float32, device=rgb.device).view(3, 1, 1)
    return (rgb.to(torch.float32) * w).sum(0, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def to_channels(image: Tensor, channels: int) -> Tensor:
    """(1 or 3, H, W) uint8 to ``channels`` channels."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1)
    return _gray(image)


def _pil_array(im) -> Tensor:
    """A PIL image, orientation applied, as (1 or 3, H, W) uint8."""
    mode = im.mode
    if mode in ("I", "F"):
        raise ValueError(f"its samples are 32-bit {'integers' if mode == 'I' else 'floats'} (PIL mode {mode}) with "
                         f"no fixed range; convert it to an 8- or 16-bit image")
    if mode in _PIL_16BIT:
        return _high_byte(np.array(im))[None]
    if mode in _PIL_ALPHA or "transparency" in im.info:
        rgba = torch.from_numpy(np.array(im.convert("RGBA"), dtype=np.uint8)).permute(2, 0, 1)
        return _composite(rgba)
    if mode in ("1", "L"):
        return torch.from_numpy(np.array(im if mode == "L" else im.convert("L"), dtype=np.uint8))[None]
    return torch.from_numpy(np.array(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)


def _open_pil(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data))


def _decode_pil(data: bytes, image_size: int) -> Tuple[Tensor, Tuple[int, int]]:
    """(1 or 3, H', W') uint8, oriented, and the full-scale oriented (H, W)."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        if im.format == "JPEG":
            # libjpeg's scaled IDCT: 1/2, 1/4 or 1/8 of the size, never below the target.
            im.draft(None, (image_size, image_size))
        orientation = im.getexif().get(0x0112, 1) if "exif" in im.info or im.format != "JPEG" else 1
        # EXIF orientations 5..8 turn the image by a quarter: width and height swap.
        size = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
        im.seek(0)   # a multi-frame image (GIF, TIFF): its first frame
        return _pil_array(ImageOps.exif_transpose(im) if orientation != 1 else im), size


def _decode_libjpeg(data: bytes) -> Tensor:
    # libjpeg converts grey, YCbCr and CMYK to RGB; JPEG has no alpha.
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                       apply_exif_orientation=True)


def _reason(err: BaseException) -> str:
    """The first line of a decoder's error, without torchvision's C++ source location or PIL's object repr."""
    if type(err).__name__ == "UnidentifiedImageError":
        return "not an image in a format PIL or torchvision reads"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rsplit(", ", 1)[-1] if ".cpp:" in text else text


def decode_bytes(data: bytes, name: str, channels: int, image_size: int) -> Tuple[Tensor, Tuple[int, int]]:
    """(the image as uint8 (channels, image_size, image_size), its decoded (height, width)).

    ``name`` (the file, or a shard's sample) is what an error names. The
    decoded size is the image's after its EXIF orientation and before any
    reduced-scale decoding: the size that landmarks in pixels refer to.
    Raises CorruptImageError (one line, naming ``name``) when the bytes cannot
    be decoded or the image is refused.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not data:
        raise CorruptImageError(f"cannot decode image file {name}: the file is empty (0 bytes)")
    decoder = _decoder(data, image_size)
    image = size = first_error = None
    if decoder != "pil":
        try:
            image = _decode_libjpeg(data)
            size = (int(image.shape[-2]), int(image.shape[-1]))
        except RuntimeError as err:   # PIL may still read it (a JPEG without its end marker)
            first_error = err
    if image is None:
        try:
            image, size = _decode_pil(data, image_size)
        except Exception as err:  # PIL raises OSError, ValueError, SyntaxError... for bad files
            refused = isinstance(err, ValueError) and "PIL mode" in str(err)
            raise CorruptImageError(f"cannot decode image file {name}: "
                                    f"{_reason(err if refused or first_error is None else first_error)}") from err
    if image.numel() == 0:
        raise CorruptImageError(f"cannot decode image file {name}: the image is empty")
    image = to_channels(image, channels)
    return resize_uint8(image.unsqueeze(0), image_size)[0], size


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of an image's bytes; 1 when it has none or it cannot be read."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a damaged header: the decode that follows names the file
        return 1


def read_image_bytes(path: str) -> bytes:
    """The bytes of an image file; FileNotFoundError / OSError (naming it) when it cannot be read."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist" if not os.path.exists(path)
                                else f"image path {path} is not a file")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise OSError(f"cannot read image file {path}: {err.strerror or err}") from None


def decode_file(path: str, channels: int, image_size: int) -> Tensor:
    """Read ``path`` as a uint8 (channels, image_size, image_size) tensor.

    Raises FileNotFoundError when the file is missing, OSError when it cannot
    be read and CorruptImageError (a RuntimeError) when it cannot be decoded;
    every message names the file.
    """
    return decode_bytes(read_image_bytes(path), path, channels, image_size)[0].contiguous()
