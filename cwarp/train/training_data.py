"""The training split of a run, read once before the first step, with data errors as one line."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings

from cwarp.train.config import RunConfig

__all__ = ["DataError", "load_data", "recorded_data_warnings"]


class DataError(ValueError):
    """The training data cannot be read (missing folder, corrupt image, empty split)."""


# What the image decoders (libpng, libjpeg) print on their own about a file
# they fail on; the error or the --skip-corrupt warning already names it.
DECODER_CHATTER = ("libpng error:", "libpng warning:", "Corrupt JPEG data:", "Premature end of JPEG file")


@contextlib.contextmanager
def _decoder_chatter_filtered():
    """Route the process's stderr (fd 2) through a file while decoding, then
    pass on every line but DECODER_CHATTER."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith(DECODER_CHATTER):
                    sys.stderr.write(line)


@contextlib.contextmanager
def recorded_data_warnings():
    """Record the warnings raised while reading data (the caller prints each as one line), without the
    decoders' own chatter and without the warning cwarp.data silences."""
    from cwarp.data.decode import silence_decoder_deprecation

    with warnings.catch_warnings(record=True) as caught, _decoder_chatter_filtered():
        warnings.simplefilter("always")
        silence_decoder_deprecation()
        yield caught


def load_data(cfg: RunConfig):
    """(dataset, images, labels, landmarks) of a run config's training split.

    Raises DataError (one line, naming the data) when it cannot be read; a
    --skip-corrupt warning is printed as one line.
    """
    from cwarp.data import build_dataset

    d = cfg.data
    try:
        with recorded_data_warnings() as caught:
            ds = build_dataset(d.format, d.data, "train", d.image_size, num_samples=d.num_train, seed=d.data_seed,
                               skip_corrupt=d.skip_corrupt)
            images, labels, landmarks = ds.tensors()
    except (ValueError, OSError, RuntimeError) as e:
        hint = "; pass --skip-corrupt to leave unreadable images out" if "decode" in str(e).lower() else ""
        raise DataError(f"--data {d.data}: {' '.join(str(e).split())}{hint}") from e
    for w in caught:
        print(f"cwarp-train: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    if len(images) == 0:
        raise DataError(f"--data {d.data}: the {d.format} training split is empty")
    return ds, images, labels, landmarks
