"""Throughput of cwarp.local_warp against the ways one would do it without cwarp.

Contenders, per (mode, batch, size):
  cwarp cpp            the fused kernel, NCHW input (and channels_last input)
  reference (eager)    cwarp.reference.local_warp(compute_dtype=None): the warp
                       grid built with tensor ops, then F.grid_sample
  reference (compile)  the same function under torch.compile
  cv2.remap            OpenCV on HWC float32 images with the map precomputed
                       outside the timing (so it does the sampling only), one
                       image at a time, cv2.setNumThreads(torch threads)
  kornia remap         kornia.geometry.transform.remap with the same
                       precomputed map (kornia has no fused local warp; its
                       remap is a grid_sample of the map)
Modes: "fwd", and "fwd+bwd" (gradient w.r.t. the image for a fixed grad_out).

Prints a table (images/s, speedup over the eager reference), the floor
ratios for the floor case (CPU, 2 threads, float32, B=64, 3x112x112, K=4,
border, align_corners=False) with met / NOT met, and a memory probe. Exits 1
when a CPU floor is missed (the JSON is written first).

  python benchmarks/warp_throughput.py [--quick] [--device cpu|cuda] [--dtype float32]
                                       [--threads 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Callable, List, Optional, Tuple

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import cwarp  # noqa: E402
from cwarp import reference  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
K, C = 4, 3
PADDING, ALIGN = "border", False
FLOOR_CASE = (64, 112)
EAGER = "reference (eager)"


def make_inputs(batch: int, size: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, C, size, size, generator=g).to(device=device, dtype=dtype)
    params = cwarp.sample_local_warps(batch, K, generator=g, device=device)
    grad_out = torch.rand(batch, C, size, size, generator=g).to(device=device, dtype=dtype)
    return image, params, grad_out


def _ref(image, params):
    return reference.local_warp(image, params, padding_mode=PADDING, align_corners=ALIGN, compute_dtype=None)


def _cwarp(image, params):
    return cwarp.local_warp(image, params, padding_mode=PADDING, align_corners=ALIGN, backend="cpp")


_compiled_ref = None


def compiled_ref():
    global _compiled_ref
    if _compiled_ref is None:
        _compiled_ref = torch.compile(_ref)
    return _compiled_ref


def fwd_bwd(fn: Callable, image, params, grad_out) -> Callable[[], object]:
    x = image.detach().requires_grad_()

    def run():
        out = fn(x, params)
        return torch.autograd.grad(out, x, grad_out)

    return run


def pixel_maps(params, size, kornia_convention=False):
    """The sampling grid of local_warp (align_corners=False) in pixel coordinates.

    cv2 pixel centres sit at integers: x = ((s + 1) * size - 1) / 2. kornia's
    remap normalizes pixel maps by (size - 1) whatever align_corners says, so
    its map is the one that normalizes back to s: x = (s + 1) * (size - 1) / 2.
    """
    grid = cwarp.local_warp_grid(params.double(), (size, size), align_corners=False)
    pix = (grid + 1) * (size - 1) / 2 if kornia_convention else ((grid + 1) * size - 1) / 2
    return pix[..., 0].float(), pix[..., 1].float()


def cv2_setup(image, params, size):
    """(run, max |cv2 - cwarp|) for cv2.remap with precomputed maps, border padding."""
    import cv2
    cv2.setNumThreads(torch.get_num_threads())
    map_x, map_y = pixel_maps(params.cpu(), size)
    map_x, map_y = map_x.numpy(), map_y.numpy()
    imgs = [im.permute(1, 2, 0).contiguous().float().cpu().numpy() for im in image]
    outs = [None] * len(imgs)

    def run():
        for b, im in enumerate(imgs):
            outs[b] = cv2.remap(im, map_x[b], map_y[b], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return outs

    run()
    got = torch.stack([torch.from_numpy(o).permute(2, 0, 1) for o in outs])
    ours = _cwarp(image.float().cpu(), params.cpu())
    return run, float((got - ours).abs().max())


def kornia_setup(image, params, size):
    from kornia.geometry.transform import remap
    map_x, map_y = (m.to(image.device, image.dtype) for m in pixel_maps(params.cpu(), size, kornia_convention=True))

    def fn(x, _params):
        return remap(x, map_x, map_y, mode="bilinear", padding_mode=PADDING, align_corners=ALIGN)

    diff = float((fn(image, params).float() - _cwarp(image, params).float()).abs().max())
    return fn, diff


def bench_case(mode: str, batch: int, size: int, dtype, device, min_run_time: float, rows: List[common.Row],
               contenders: Optional[set] = None, rounds: int = 3):
    image, params, grad_out = make_inputs(batch, size, dtype, device)
    case = f"{mode} B={batch} {C}x{size}x{size} K={K}"
    dname = str(dtype).replace("torch.", "")
    want = (lambda name: contenders is None or name in contenders)

    fns, notes = {}, {}

    def add(name, fn, note=""):
        if want(name):
            fns[name], notes[name] = fn, note

    cl = image.contiguous(memory_format=torch.channels_last)
    if mode == "fwd":
        add("cwarp cpp", lambda: _cwarp(image, params))
        add("cwarp cpp (channels_last)", lambda: _cwarp(cl, params))
        add(EAGER, lambda: _ref(image, params))
        add("reference (compile)", lambda: compiled_ref()(image, params))
        if device.type == "cpu" and dtype == torch.float32 and want("cv2.remap"):
            run, diff = cv2_setup(image, params, size)
            add("cv2.remap", run, f"precomputed map; max|cv2-cwarp|={diff:.1e} (cv2 rounds maps to 1/32 px)")
        if want("kornia remap"):
            try:
                kfn, diff = kornia_setup(image, params, size)
                add("kornia remap", lambda: kfn(image, params), f"grid_sample of precomputed map; max diff {diff:.1e}")
            except ImportError:
                rows.append(common.Row(case, "kornia remap", dname, None, batch, "kornia not installed"))
    else:
        add("cwarp cpp", fwd_bwd(_cwarp, image, params, grad_out))
        add("cwarp cpp (channels_last)", fwd_bwd(_cwarp, cl, params, grad_out.contiguous(
            memory_format=torch.channels_last)))
        add(EAGER, fwd_bwd(_ref, image, params, grad_out))
        add("reference (compile)", fwd_bwd(compiled_ref(), image, params, grad_out))
        if want("kornia remap"):
            try:
                kfn, _ = kornia_setup(image, params, size)
                add("kornia remap", fwd_bwd(kfn, image, params, grad_out), "grid_sample of precomputed map")
            except ImportError:
                pass
    for name, t in common.time_interleaved(fns, device, min_run_time, rounds).items():
        if isinstance(t, Exception):  # a contender that cannot run here is reported, not hidden
            rows.append(common.Row(case, name, dname, None, batch, f"failed: {type(t).__name__}: {t}"[:120]))
        else:
            rows.append(common.Row(case, name, dname, t, batch, notes[name]))


def memory_probe(size: int = 112) -> List[str]:
    """Bytes the forward allocates beyond its output, at B=8 and B=64, as seen
    by torch's CPU allocator (the kernel's O(threads x Wo) std::vector scratch
    is invisible to it, and tiny)."""
    from torch.profiler import ProfilerActivity, profile
    lines = []
    for batch in (8, 64):
        image, params, _ = make_inputs(batch, size, torch.float32, torch.device("cpu"))
        _cwarp(image, params)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = _cwarp(image, params)
        # Every allocation made inside the call, by any op nested in it.
        allocated = sum(e.self_cpu_memory_usage for e in prof.events() if e.self_cpu_memory_usage > 0)
        out_bytes = out.numel() * out.element_size()
        lines.append(f"B={batch:3d} 3x{size}x{size}: allocated {allocated:,} B, output {out_bytes:,} B, "
                     f"extra {allocated - out_bytes:,} B")
    return lines


def floor_report(rows: List[common.Row]) -> Tuple[List[str], bool]:
    """(lines, all met). A floor whose case could not be measured counts as missed."""
    b, s = FLOOR_CASE
    get = lambda mode, name: next((r.timing.p50_ms for r in rows if r.case == f"{mode} B={b} {C}x{s}x{s} K={K}"
                                   and r.contender == name and r.timing is not None), None)
    checks = [
        ("cwarp fwd vs eager reference fwd (speedup)", get("fwd", EAGER), get("fwd", "cwarp cpp"), ">=", 10.0),
        ("cwarp fwd vs torch.compile(reference) fwd (speedup)", get("fwd", "reference (compile)"),
         get("fwd", "cwarp cpp"), ">=", 2.0),
        ("cwarp fwd time / cv2.remap time", get("fwd", "cwarp cpp"), get("fwd", "cv2.remap"), "<=", 1.25),
        ("cwarp fwd+bwd vs eager reference fwd+bwd (speedup)", get("fwd+bwd", EAGER), get("fwd+bwd", "cwarp cpp"),
         ">=", 4.0),
    ]
    out = [f"Floors (CPU, {torch.get_num_threads()} threads, float32, B={b}, 3x{s}x{s}, K={K}, {PADDING}, "
           f"align_corners={ALIGN}):"]
    all_met = True
    for name, num, den, op, floor in checks:
        if num is None or den is None:
            out.append(f"  {name}: not measured")
            all_met = False
            continue
        ratio = num / den
        met = ratio >= floor if op == ">=" else ratio <= floor
        all_met &= met
        out.append(f"  {name}: {ratio:.2f} (floor {op} {floor:g}) {'met' if met else 'NOT met'}")
    return out, all_met


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the floor case only, short timings (< 60 s)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the floors are for 2)")
    ap.add_argument("--contenders", nargs="+", metavar="NAME", default=None,
                    help="time only these contenders (e.g. 'cwarp cpp' 'reference (eager)'); the floors are then "
                         "not checked")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    args = ap.parse_args(argv)
    contenders = None if args.contenders is None else set(args.contenders)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is visible")
    dtype = DTYPES[args.dtype]
    t0 = time.time()
    rows: List[common.Row] = []
    if args.quick:
        cases = [(m, *FLOOR_CASE) for m in ("fwd", "fwd+bwd")]
        min_run = 0.2
    else:
        cases = [(m, b, s) for m in ("fwd", "fwd+bwd") for s in (64, 112, 224) for b in (1, 64)]
        min_run = 0.5
    for mode, batch, size in cases:
        bench_case(mode, batch, size, dtype, device, min_run, rows, contenders)
        print(f"  ... {mode} B={batch} {size}x{size} done ({time.time() - t0:.0f} s)", file=sys.stderr)
    common.add_speedups(rows, EAGER)
    if contenders is not None and EAGER not in contenders:
        print(f"(no speedups: {EAGER!r} was not timed)", file=sys.stderr)
    print(f"cwarp.local_warp throughput: {args.device}, {args.threads} threads, {args.dtype}, K={K}, "
          f"padding={PADDING}, align_corners={ALIGN}; speedup over the eager reference")
    print(common.format_table(rows))
    extra = {}
    floors_met = True
    if device.type == "cpu" and dtype == torch.float32 and contenders is None:
        print()
        floors, floors_met = floor_report(rows)
        print("\n".join(floors))
        extra["floors"] = floors
        extra["floors_met"] = floors_met
    if device.type == "cpu":
        print()
        print("Memory probe (forward; allocations seen by torch's CPU allocator, via torch.profiler):")
        mem = memory_probe()
        print("\n".join("  " + line for line in mem))
        extra["memory_probe"] = mem
    print(f"\n(total {time.time() - t0:.0f} s)")
    if args.json:
        common.write_json(args.json, rows, extra)
    if not floors_met:
        print("warp_throughput.py: a floor was missed (exit 1)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
