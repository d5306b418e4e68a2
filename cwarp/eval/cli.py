"""cwarp-probe: how good a frozen representation is at facial expressions.

    cwarp-probe --checkpoint RUN_DIR/checkpoint.pt --format rafdb --data basic/ --out probe.json
    cwarp-probe --random-init --arch convnet-small --format synthetic --num-train 500 --out random.json
    cwarp-probe --raw-pixels --format synthetic --out pixels.json

Features of the train and test splits (from a cwarp-train checkpoint's
backbone, a randomly initialized backbone, or the raw pixels) go through a
linear probe, a kNN classifier and retrieval (mAP@R); see cwarp.eval.probe.
Writes RESULT.json and RESULT_confusion.png. Exit status: 0 on success, 2 on
bad input (one line on stderr), 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Optional, Sequence

from cwarp import _cli
from cwarp._constants import ARCHS, LABELLED_FORMATS, SYNTHETIC_FORMATS, TIMM_PREFIX

__all__ = ["main", "build_parser", "run"]

PROG = "cwarp-probe"
DEFAULT_ARCH = "resnet18"
DEFAULT_IMAGE_SIZE = 64


def build_parser() -> _cli.Parser:
    parser = _cli.Parser(PROG, __doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="RUN_DIR/checkpoint.pt", help="probe a cwarp-train checkpoint")
    source.add_argument("--random-init", action="store_true", help="probe an untrained backbone (see --arch)")
    source.add_argument("--raw-pixels", action="store_true", help="probe the pixels themselves: the baseline")
    parser.add_argument("--format", required=True, choices=LABELLED_FORMATS, help="the labelled data set's format")
    parser.add_argument("--data", metavar="PATH",
                        help="the data set (rafdb: its basic/ folder; fer2013: the csv; imagefolder: a folder "
                             "with train/ and test/); synthetic: an optional cache folder")
    parser.add_argument("--out", required=True, metavar="RESULT.json",
                        help="where to write the scores (RESULT_confusion.png goes beside it)")
    parser.add_argument("--image-size", type=_cli.positive_int, default=None, metavar="S",
                        help=f"images are resized to S x S (default: the checkpoint's, else {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--arch", type=_cli.arch_type(ARCHS), default=None, metavar="ARCH",
                        help=f"backbone for --random-init: {', '.join(ARCHS)} or {TIMM_PREFIX}NAME (a timm model, "
                             f"untrained; pip install 'cwarp[timm]') (default: {DEFAULT_ARCH}); checked against a "
                             "checkpoint's when given with --checkpoint")
    parser.add_argument("--seed", type=_cli.non_negative_int, default=0,
                        help="seed of the synthetic faces, the subsets and the probe")
    parser.add_argument("--device", default="cpu", help="where features are extracted: cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=_cli.positive_int, default=256, help="images per forward pass")
    parser.add_argument("--num-train", type=_cli.positive_int, default=None, metavar="N",
                        help="synthetic: faces to render (default 7000); other formats: a seeded random subset "
                             "(default: all)")
    parser.add_argument("--num-test", type=_cli.positive_int, default=None, metavar="N",
                        help="as --num-train, for the test split (synthetic default 2100)")
    parser.add_argument("--skip-corrupt", action="store_true",
                        help="skip unreadable images with one warning instead of stopping")
    parser.add_argument("--no-cache", action="store_true", help="decode images per batch instead of up front")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle the checkpoint fully (it can run code: only for files you trust)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``cwarp-probe``: 0 on success, 2 on bad input, 130 on Ctrl-C."""
    return _cli.run_script(build_parser(), argv, run)


def _check_paths(args: argparse.Namespace) -> None:
    # Checked before the slow imports, so that a typo fails at once.
    if args.checkpoint is not None and not os.path.isfile(args.checkpoint):
        raise _cli.InputError(f"checkpoint {args.checkpoint} does not exist")
    if args.format not in SYNTHETIC_FORMATS:
        if args.data is None:
            raise _cli.InputError(f"--format {args.format} needs --data PATH")
        if not os.path.exists(args.data):
            raise _cli.InputError(f"--data {args.data} does not exist")
    if os.path.isdir(args.out):
        raise _cli.InputError(f"--out {args.out} is a folder; give the path of the JSON file to write")


def _load_splits(args: argparse.Namespace, image_size: int):
    from cwarp.data import build_dataset

    common = dict(cache=not args.no_cache, skip_corrupt=args.skip_corrupt, seed=args.seed)
    train = build_dataset(args.format, args.data, "train", image_size, num_samples=args.num_train, **common)
    test = build_dataset(args.format, args.data, "test", image_size, num_samples=args.num_test, **common)
    for name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise ValueError(f"{args.format} at {args.data}: the {name} split is empty")
    if train.classes != test.classes:
        raise ValueError(f"the train and test splits disagree on the classes: {train.classes} vs {test.classes}")
    return train, test


def _device(name: str):
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown --device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    return device


def _features(args: argparse.Namespace, backbone, config: dict, train, test, device):
    """(train features, test features) of the backbone, or of the pixels when there is none."""
    from cwarp.eval import probe

    if backbone is None:
        return probe.pixel_features(train), probe.pixel_features(test)
    norm = {"mean": config.get("mean"), "std": config.get("std")}
    progress = not args.no_progress
    return tuple(probe.extract_features(backbone, split, args.batch_size, device, progress=progress, **norm)
                 for split in (train, test))


def run(args: argparse.Namespace) -> dict:
    """Probe as the parsed command line says; writes the JSON and the confusion PNG, returns the result."""
    _check_paths(args)
    import torch

    from cwarp.eval import probe
    from cwarp.models import backbone_from_checkpoint, build_backbone

    device = _device(args.device)
    backbone, config, mode = None, {}, "raw_pixels"
    if args.checkpoint:
        mode = "checkpoint"
        backbone, config = backbone_from_checkpoint(args.checkpoint, arch=args.arch, trust=args.trust_checkpoint)
    image_size = args.image_size or int(config.get("image_size", DEFAULT_IMAGE_SIZE))
    timer = time.perf_counter()
    train, test = _load_splits(args, image_size)
    times = {"time_data_s": time.perf_counter() - timer}
    timer = time.perf_counter()
    if args.random_init:
        mode = "random_init"
        torch.manual_seed(args.seed)
        backbone = build_backbone(args.arch or DEFAULT_ARCH, train.channels, image_size)
    train_x, test_x = _features(args, backbone, config, train, test, device)
    times["time_features_s"] = time.perf_counter() - timer
    timer = time.perf_counter()
    result = probe.evaluate_features(train_x, train.labels, test_x, test.labels, len(train.classes),
                                     seed=args.seed, class_names=train.classes)
    times["time_probe_s"] = time.perf_counter() - timer

    label = {"checkpoint": config.get("arch", ""), "random_init": f"random {args.arch or DEFAULT_ARCH}",
             "raw_pixels": "raw pixels"}[mode]
    png = os.path.splitext(args.out)[0] + "_confusion.png"
    result.update({"mode": mode, "arch": None if backbone is None else getattr(backbone, "arch", args.arch),
                   "checkpoint": args.checkpoint, "format": args.format, "data": args.data,
                   "image_size": image_size, "seed": args.seed, "device": str(device), "confusion_png": png,
                   **{key: round(value, 3) for key, value in times.items()}})
    _write_outputs(args.out, png, result, title=f"{label}: linear {result['linear_acc']:.3f}")
    print(f"{PROG} [{label}] {args.format}: linear {result['linear_acc']:.4f}  knn {result['knn_acc']:.4f}  "
          f"mAP@R {result['map_at_r']:.4f}  (train {result['n_train']}, test {result['n_test']}, "
          f"probe {times['time_probe_s']:.1f}s)")
    print(f"{PROG}: wrote {args.out} and {png}")
    return result


def _write_outputs(path: str, png: str, result: dict, title: str) -> None:
    from cwarp.eval import probe

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    probe.save_confusion_png(result["confusion"], result["classes"], png, title=title)
    # Written atomically: a reader never sees half a file.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
