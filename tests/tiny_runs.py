"""Command lines of tiny cwarp-train runs (seconds each), shared by the tests that train."""
from __future__ import annotations


def tiny_args(out, *extra) -> list:
    """A run in process: 24 synthetic faces, 3 steps an epoch, 2 epochs, the compact backbone, writing to `out`."""
    from cwarp.train.config import compact_arch

    return ["--out", str(out), "--format", "synthetic", "--arch", compact_arch(), "--image-size", "16",
            "--num-train", "24", "--batch-size", "8", "--epochs", "2", "--log-every", "1", "--progress", "false",
            "--hidden-dim", "64", "--proj-dim", "32", "--num-negatives", "2", "--warps-per-negative", "2",
            *extra]


def tiny_script_args(out, *extra) -> list:
    """A run of the installed script: 8 faces, 2 steps an epoch, 1 epoch, writing to `out`; the data
    format and --arch are left to their defaults (auto: convnet-small on the CPU)."""
    return ["--out", str(out), "--image-size", "16", "--num-train", "8", "--batch-size", "4", "--epochs", "1",
            "--hidden-dim", "32", "--proj-dim", "16", "--num-negatives", "1", "--warps-per-negative", "1",
            "--log-every", "1", "--progress", "false", *extra]
