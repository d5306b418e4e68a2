"""The streamed loader: decoded, resized, collated uint8 images per second and per worker, against
torchvision's ImageFolder + DataLoader on the same JPEGs (floor 1.5x per worker); and a CPU pretraining
step fed by it against the same step fed from memory (floor: within 5 %).

    python benchmarks/data_throughput.py [--num 1024] [--source-size 256] [--sizes 112 224] [--workers 1 2]
                                         [--batch 64] [--rounds 3] [--json PATH]
    python benchmarks/data_throughput.py --step [--image-size 64] [--batch-size 128] [--threads 2] [--steps 8]

Loader: both contenders read the same synthetic faces, written once as JPEGs of --source-size pixels (one
class folder, so that ImageFolder reads them), with the same number of worker processes and batch size, and
give the same tensors: uint8 (B, 3, S, S) batches resized with PIL's bilinear filter (antialiased).
torchvision: ImageFolder(transform=Compose([Resize((S, S)), PILToTensor()])) and the default collate. cwarp:
``--format folder``'s StreamedFaces, whose workers decode with libjpeg-turbo (or at a reduced DCT scale when
the file is at least twice the target) straight into one batch tensor. Each loader keeps its workers
(persistent) and is warmed up by one pass; a timing is one pass over every image; the contenders alternate
round by round and each keeps its best round (common.time_interleaved). The table's images/s is per worker.
How far the two batches are apart (the reduced-scale decode) is in the JSON.

--step: one process with --threads threads trains ContraWarping (the demo's convnet-small) on --batch-size
faces a step, fed from memory (``--format imagefolder``, decoded up front) or streamed (``--format folder``
on the same JPEGs, --workers 2 loader processes, the default on 2 cores); a step is fetching its batch,
rendering the views and the optimisation step. The feeds alternate every --steps steps for --rounds rounds;
each keeps its best round's median step.

Exit status 1 when a floor is missed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one

import torch  # noqa: E402

from common import Row, Timing, add_speedups, format_table, time_interleaved, write_json  # noqa: E402

LOADER_FLOOR = 1.5      # cwarp's images/s per worker over torchvision's
STEP_FLOOR = 1.05       # streamed step time / in-memory step time, at most
TORCHVISION = "torchvision ImageFolder"
CWARP = "cwarp folder (streamed)"


def write_faces(root: str, num: int, size: int) -> str:
    """``num`` synthetic faces of ``size`` pixels as root/train/faces/*.jpg; returns root."""
    from cwarp.data.export import write_folder

    folder = os.path.join(root, "train", "faces")
    write_folder(folder, num, size=size)
    return root


def _loaders(root: str, size: int, workers: int, batch: int):
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from cwarp.data import build_dataset
    from cwarp.data.batch import collate_batch
    from cwarp.data.streamed import BatchReader

    common = dict(num_workers=workers, persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tv = datasets.ImageFolder(os.path.join(root, "train"), transform=transforms.Compose([
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
            transforms.PILToTensor()]))
    torchvision_loader = DataLoader(tv, batch_size=batch, shuffle=False, **common)
    ds = build_dataset("folder", os.path.join(root, "train"), "train", size)
    n = len(ds)
    batches = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    cwarp_loader = DataLoader(BatchReader(ds), batch_sampler=batches, collate_fn=collate_batch, **common)
    return torchvision_loader, cwarp_loader


def _first_batches(torchvision_loader, cwarp_loader):
    images, _ = next(iter(torchvision_loader))
    batch = next(iter(cwarp_loader))
    assert batch["images"].dtype == images.dtype == torch.uint8 and batch["images"].shape == images.shape, (
        batch["images"].shape, images.shape)
    diff = (batch["images"].int() - images.int()).abs()
    return {"max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.float().mean())}


def loader_benchmark(args) -> int:
    rows, agreement = [], {}
    with tempfile.TemporaryDirectory() as root:
        started = time.perf_counter()
        write_faces(root, args.num, args.source_size)
        print(f"wrote {args.num} faces of {args.source_size} px as JPEG in {time.perf_counter() - started:.1f} s")
        for size in args.sizes:
            for workers in args.workers:
                tv, cw = _loaders(root, size, workers, args.batch)
                agreement[f"{size}px"] = _first_batches(tv, cw)

                def drain(loader):
                    return lambda: sum(1 for _ in loader)

                timings = time_interleaved({TORCHVISION: drain(tv), CWARP: drain(cw)}, torch.device("cpu"),
                                           min_run_time=args.min_run_time, rounds=args.rounds)
                case = f"{args.source_size}px JPEG -> {size}px, {workers} worker(s)"
                for name, t in timings.items():
                    if isinstance(t, Exception):
                        rows.append(Row(case, name, "uint8", None, 0, note=f"failed: {t}"))
                        continue
                    # items per worker: images/s divided by the workers (the main process when 0).
                    per = Timing(t.p50_ms * max(1, workers), t.p20_ms * max(1, workers), t.p80_ms * max(1, workers))
                    rows.append(Row(case, name, "uint8", per, args.num, note="per worker"))
                del tv, cw
    add_speedups(rows, TORCHVISION)
    print(format_table(rows, unit="images/s/worker"))
    missed = [r for r in rows if r.contender == CWARP and (r.speedup is None or r.speedup < LOADER_FLOOR)]
    for r in missed:
        print(f"MISSES the {LOADER_FLOOR}x floor: {r.case}: "
              f"{'did not run' if r.speedup is None else f'{r.speedup:.2f}x'}")
    if not missed:
        print(f"cwarp's loader is at least {LOADER_FLOOR}x torchvision's per worker in every case")
    print("batch agreement (cwarp vs torchvision, levels of 255):", agreement)
    if args.json:
        write_json(args.json, rows, {"benchmark": "data_throughput", "floor_per_worker": LOADER_FLOOR,
                                     "agreement": agreement, "load_average": os.getloadavg(),
                                     "cpu_count": os.cpu_count()})
    return 1 if missed else 0


# ------------------------------------------------------------------ --step

def _feed(root: str, fmt: str, args, threads: int):
    from cwarp.train import config as C
    from cwarp.train.distributed import DistInfo
    from cwarp.train.feeds import make_feed
    from cwarp.train.training_data import load_data

    data_path = root if fmt == "imagefolder" else os.path.join(root, "train")
    cfg = C.validate(C.parse_command_line([
        "--out", "unused", "--format", fmt, "--data", data_path, "--image-size", str(args.image_size),
        "--batch-size", str(args.batch_size), "--threads", str(threads), "--workers", str(args.loader_workers),
        "--arch", "convnet-small"])[0])
    data = load_data(cfg)
    return cfg, make_feed(data, cfg, DistInfo(), torch.device("cpu"), args.batch_size)


def step_benchmark(args) -> int:
    from cwarp.train.distributed import DistInfo
    from cwarp.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as root:
        count = args.batch_size * args.steps * 4
        started = time.perf_counter()
        write_faces(root, count, args.image_size)
        print(f"wrote {count} faces of {args.image_size} px as JPEG in {time.perf_counter() - started:.1f} s")
        feeds = {}
        for name, fmt in (("in memory", "imagefolder"), ("streamed", "folder")):
            cfg, feed = _feed(root, fmt, args, args.threads)
            feeds[name] = feed
        trainer = Trainer(cfg, DistInfo(), torch.device("cpu"), 3, steps_per_epoch=feeds["streamed"].steps_per_epoch)
        best = {name: float("inf") for name in feeds}
        epoch = 0
        for _ in range(args.rounds):
            for name, feed in feeds.items():
                batches = feed.epoch(epoch, 0)
                images, labels, landmarks = next(batches)          # warm-up: the workers start, the first batch
                trainer.train_step(*trainer.make_views(images, landmarks), labels)
                times = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    images, labels, landmarks = next(batches)
                    trainer.train_step(*trainer.make_views(images, landmarks), labels)
                    times.append(time.perf_counter() - t0)
                batches.close()
                best[name] = min(best[name], statistics.median(times))
            epoch += 1
    ratio = best["streamed"] / best["in memory"]
    rows = [Row(f"step B={args.batch_size} {args.image_size}px, {args.threads} threads", name, "uint8",
                Timing(best[name] * 1e3, best[name] * 1e3, best[name] * 1e3), args.batch_size,
                note=f"{args.loader_workers} loader workers" if name == "streamed" else "decoded up front")
            for name in feeds]
    add_speedups(rows, "in memory")
    print(format_table(rows))
    ok = ratio <= STEP_FLOOR
    print(f"streamed step / in-memory step = {ratio:.3f} ({'within' if ok else 'MISSES'} the "
          f"{(STEP_FLOOR - 1) * 100:.0f} % floor); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        write_json(args.json, rows, {"benchmark": "data_throughput --step", "ratio": ratio, "floor": STEP_FLOOR,
                                     "load_average": os.getloadavg(), "cpu_count": os.cpu_count()})
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", action="store_true", help="time a pretraining step instead of the loader")
    parser.add_argument("--num", type=int, default=1024, help="JPEGs to read (loader)")
    parser.add_argument("--source-size", type=int, default=256, help="side of the JPEGs written (loader)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="target sizes (loader)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes (loader)")
    parser.add_argument("--batch", type=int, default=64, help="batch size (loader)")
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds a timing runs at least")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each keeps its best")
    parser.add_argument("--image-size", type=int, default=64, help="training image size (--step)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch (--step)")
    parser.add_argument("--threads", type=int, default=2, help="training threads (--step)")
    parser.add_argument("--loader-workers", type=int, default=2, help="loader processes of the streamed feed (--step)")
    parser.add_argument("--steps", type=int, default=8, help="steps a round (--step)")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    for name in ("num", "source_size", "batch", "rounds", "image_size", "batch_size", "threads", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if min(args.sizes) < 8 or min(args.workers) < 0 or args.loader_workers < 0:
        parser.error("--sizes: expected >= 8; --workers, --loader-workers: expected >= 0")
    return step_benchmark(args) if args.step else loader_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
