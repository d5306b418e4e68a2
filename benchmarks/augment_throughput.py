"""Views per second of ContraWarping's view generation.

Contenders, each producing pos1, pos2 and N locally warped negatives per image
(so 2 + N views per image) from a uint8 batch:

- "cwarp": cwarp.ContraWarpAugment, every view of the batch in one fused call
  (parameter sampling included).
- "torchvision v2 per-sample": the way people write it today: for each image,
  v2.Compose([RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter),
  RandomGrayscale, ToDtype, Normalize]) twice, then the negatives as
  cwarp.reference.local_warp (eager, float32) of pos2. The baseline.
- "kornia batched" (when kornia is installed): kornia.augmentation
  RandomResizedCrop, RandomHorizontalFlip, ColorJiggle, RandomGrayscale,
  Normalize on the float batch, negatives by RandomThinPlateSpline (the
  nearest local warp kornia has).
- "PIL DataLoader (workers=2)": PIL images through torchvision transforms in
  a torch DataLoader with two worker processes, negatives by the reference
  local warp in the workers.

Floors (issue 5): on the CPU with 2 threads, cwarp >= 5x the torchvision v2
per-sample pipeline at B=64, 128x128 uint8 source, S=112, N=2. On an H200:
>= 50,000 views/s at S=112 (run with --device cuda). The floor of the device
is checked at the default shapes, put in the JSON under "floors", and a miss
exits 1.

    python benchmarks/augment_throughput.py [--device cpu|cuda] [--threads 2]
        [--batch 64] [--src 128] [--size 112] [--negatives 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, add_speedups, format_table, time_fn, write_json  # noqa: E402

import cwarp  # noqa: E402
from cwarp import reference  # noqa: E402

BASELINE = "torchvision v2 per-sample"
MEAN, STD = cwarp.nn.augment.IMAGENET_MEAN, cwarp.nn.augment.IMAGENET_STD


def make_images(B: int, side: int, device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (B, 3, side, side), dtype=torch.uint8, generator=g).to(device)


def cwarp_fn(images, size, N, K, out_dtype=torch.float32):
    aug = cwarp.ContraWarpAugment(size=size, num_negatives=N, warps_per_negative=K, out_dtype=out_dtype)
    gen = torch.Generator(device=images.device).manual_seed(0)
    return lambda: aug(images, generator=gen).all


def _global_v2(size):
    from torchvision.transforms import v2
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(1.0, 1.0), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])


def torchvision_fn(images, size, N, K):
    t = _global_v2(size)
    gen = torch.Generator().manual_seed(0)

    def run():
        out = []
        for img in images:
            p1, p2 = t(img), t(img)
            prm = cwarp.sample_local_warps(N, K, generator=gen, device=images.device)
            negs = reference.local_warp(p2.expand(N, *p2.shape), prm, out_size=(size, size), compute_dtype=None)
            out.append((p1, p2, negs))
        return out
    return run


def kornia_fn(images, size, N, K):
    import kornia.augmentation as KA
    glob = KA.AugmentationSequential(
        KA.RandomResizedCrop((size, size), scale=(0.6, 1.0), ratio=(1.0, 1.0)),
        KA.RandomHorizontalFlip(p=0.5),
        KA.ColorJiggle(0.4, 0.4, 0.2, 0.1, p=0.8),
        KA.RandomGrayscale(p=0.2),
    ).to(images.device)
    tps = KA.RandomThinPlateSpline(scale=0.1, p=1.0).to(images.device)
    norm = KA.Normalize(torch.tensor(MEAN), torch.tensor(STD)).to(images.device)

    def run():
        x = images.float() / 255.0
        p1, p2 = glob(x), glob(x)
        negs = tps(p2.repeat_interleave(N, dim=0))
        return norm(p1), norm(p2), norm(negs)
    return run


class _PilViews(torch.utils.data.Dataset):
    def __init__(self, images, size, N, K):
        from PIL import Image
        from torchvision import transforms as T
        self.pils = [Image.fromarray(im.permute(1, 2, 0).cpu().numpy()) for im in images]
        self.t = T.Compose([
            T.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(1.0, 1.0)),
            T.RandomHorizontalFlip(0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(0.2),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ])
        self.size, self.N, self.K = size, N, K

    def __len__(self):
        return len(self.pils)

    def __getitem__(self, i):
        img = self.pils[i]
        p1, p2 = self.t(img), self.t(img)
        prm = cwarp.sample_local_warps(self.N, self.K)
        negs = reference.local_warp(p2.expand(self.N, *p2.shape), prm, compute_dtype=None)
        return p1, p2, negs


def pil_loader_fn(images, size, N, K, workers=2):
    ds = _PilViews(images, size, N, K)
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds), num_workers=workers, persistent_workers=True)

    def run():
        return [b for b in loader]
    return run, loader


CPU_FLOOR_SPEEDUP = 5.0
CUDA_FLOOR_VIEWS_PER_S = 50_000


def check_floors(rows: List[Row], device: torch.device) -> List[dict]:
    """The floor of the device, as {check, measured, floor, ok}. A cwarp row
    that could not be timed is a miss."""
    ref = next((r for r in rows if r.contender == "cwarp" and r.dtype == "float32"), None)
    if device.type == "cuda":
        measured = ref.items_per_s if ref is not None and ref.timing is not None else None
        return [dict(check="cwarp views/s on CUDA", measured=measured, floor=CUDA_FLOOR_VIEWS_PER_S,
                     ok=measured is not None and measured >= CUDA_FLOOR_VIEWS_PER_S)]
    measured = ref.speedup if ref is not None else None
    return [dict(check=f"cwarp / {BASELINE} on the CPU", measured=measured, floor=CPU_FLOOR_SPEEDUP,
                 ok=measured is not None and measured >= CPU_FLOOR_SPEEDUP)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--src", type=int, default=128)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--negatives", type=int, default=2)
    ap.add_argument("--warps", type=int, default=2)
    ap.add_argument("--min-run-time", type=float, default=1.0)
    ap.add_argument("--skip", nargs="*", default=[], help="contenders to skip: torchvision kornia pil")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, S, N, K = args.batch, args.size, args.negatives, args.warps
    images = make_images(B, args.src, device)
    views = B * (2 + N)
    case = f"B={B} 3x{args.src}x{args.src} uint8 -> S={S} N={N} K={K}"
    rows: List[Row] = []

    def bench(name, fn, dtype="float32", note=""):
        try:
            t = time_fn(fn, device, args.min_run_time)
            rows.append(Row(case, name, dtype, t, views, note))
        except Exception as exc:  # a contender that cannot run is reported, not hidden
            rows.append(Row(case, name, dtype, None, views, f"failed: {type(exc).__name__}: {exc}"[:120]))

    bench("cwarp", cwarp_fn(images, S, N, K), note="fused, one call")
    bench("cwarp", cwarp_fn(images, S, N, K, torch.bfloat16), dtype="bfloat16", note="fused, one call")
    if "torchvision" not in args.skip:
        bench(BASELINE, torchvision_fn(images, S, N, K), note="per-sample loop + reference local_warp")
    if "kornia" not in args.skip:
        try:
            import kornia  # noqa: F401
            bench("kornia batched", kornia_fn(images, S, N, K), note="negatives: RandomThinPlateSpline")
        except ImportError:
            rows.append(Row(case, "kornia batched", "float32", None, views, "kornia not installed"))
    if "pil" not in args.skip and device.type == "cpu":
        run, loader = pil_loader_fn(images, S, N, K)
        try:
            bench("PIL DataLoader (workers=2)", run, note="PIL transforms + reference local_warp")
        finally:
            del loader
    add_speedups(rows, BASELINE)
    print(f"device={device} threads={torch.get_num_threads()}  (items = views = B * (2 + N))")
    print(format_table(rows, unit="views/s"))
    floor_case = args.size == 112 and (device.type == "cuda" or (args.batch, args.src, args.negatives) == (64, 128, 2))
    floors = check_floors(rows, device) if floor_case else []
    if not floor_case:
        print("(not the floor's shapes: no floor checked)")
    for c in floors:
        measured = "not measured" if c["measured"] is None else f"{c['measured']:,.2f}"
        print(f"[{'ok' if c['ok'] else 'MISSED'}] {c['check']}: {measured} (floor {c['floor']:,})")
    if args.json:
        write_json(args.json, rows, extra={"args": vars(args), "floors": floors})
    if not all(c["ok"] for c in floors):
        print("augment_throughput.py: a floor was missed (exit 1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
