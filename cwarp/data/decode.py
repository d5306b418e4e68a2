"""Decoding one image file into a resized uint8 tensor, with errors that name the file."""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import Tensor

from .common import resize_uint8

try:
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # torchvision announced it will drop its decoders; PIL then does all the work
    decode_image = None



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

# libjpeg-turbo / libpng through torchvision is the fast path; PIL reads the
# rest (BMP, TIFF) and the JPEG variants libjpeg refuses (CMYK, 12-bit).
_TORCHVISION_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif")


class CorruptImageError(RuntimeError):
    """An image file that exists but cannot be decoded."""


def _decode_pil(path: str, channels: int) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        array = np.array(im, dtype=np.uint8, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1)


def decode_file(path: str, channels: int, image_size: int) -> Tensor:
    """Read ``path`` as a uint8 (channels, image_size, image_size) tensor.

    Raises FileNotFoundError when the file is missing and CorruptImageError (a
    RuntimeError) when it cannot be decoded; both messages name the file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file {path} does not exist")
    image = None
    first_error = None
    if decode_image is not None and path.lower().endswith(_TORCHVISION_EXTENSIONS):
        try:
            mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
            image = decode_image(read_file(path), mode=mode)
            if image.dim() == 4:  # an animated GIF: its first frame
                image = image[0]
        except RuntimeError as err:
            first_error = err
    if image is None:
        try:
            image = _decode_pil(path, channels)
        except Exception as err:  # PIL raises OSError, ValueError, SyntaxError... for bad files
            reason = first_error if first_error is not None else err
            raise CorruptImageError(f"cannot decode image file {path}: {_short(reason)}") from err
    if image.numel() == 0:
        raise CorruptImageError(f"cannot decode image file {path}: the image is empty")
    return resize_uint8(image.unsqueeze(0), image_size)[0]


def _short(err: BaseException) -> str:
    # torchvision prefixes its messages with a C++ source location; keep the reason.
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.rsplit(", ", 1)[-1] if ".cpp:" in text else text
