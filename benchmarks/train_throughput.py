"""CPU training throughput: cwarp-train's step as it runs by default against the
step it ran before (fp32, glibc's default malloc, the former defaults), at the
demo's model; with --levers, the default step against each cheaper-step
option of cwarp-train (LEVERS); and, with --rendering, views rendered on the
fly against pre-rendered ones.

    python benchmarks/train_throughput.py [--methods contrawarp byol] [--batch-size 128] [--steps 3]
                                          [--rounds 2] [--json PATH]
    python benchmarks/train_throughput.py --levers [--batch-size 32] [--methods contrawarp byol]
    python benchmarks/train_throughput.py --rendering [--arch resnet18] [--image-size 64] [--batch-size 64]

Each contender runs in its own process (malloc's settings are process-wide),
the contenders alternating round by round; a step is what cwarp-train does:
render the views and the negatives from uint8 faces, forward, loss,
backward, optimizer, EMA. Each process warms up with one step, then times
--steps steps with torch.utils.benchmark at its thread count; a contender's
figure is its best round's median. Floors: the default step at least 3x the
former one for each method (exit 1 when missed); --rendering: on the fly
within 15 % of pre-rendered. --levers has no floor: whether a lever is
worth its cost in accuracy is judged on the validation faces
(benchmarks/select_recipe.py --search levers); it reports each step's time,
the first step's (which holds torch.compile's compilation), and the CPU
seconds each takes (all threads; on a machine shared with other jobs, the
work a step does, which its wall-clock time is not).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one
from common import Row, Timing, add_speedups, format_table, quantile_ms, time_fn, write_json  # noqa: E402

SPEEDUP_FLOOR = 3.0
RENDERING_FLOOR = 0.85
# The step as cwarp-train ran it before: glibc's default malloc and the former
# defaults of the negatives and views (fp32 and the contiguous layout are
# unchanged).
FORMER = ["--reuse-freed-memory", "false", "--num-negatives", "2", "--warps-per-negative", "4",
          "--negatives-through", "online", "--warp-radius", "0.15,0.35", "--warp-magnitude", "0.05,0.15",
          "--crop-scale", "0.5,1", "--rotation", "10", "--jitter-strength", "1"]
CONTENDERS = {"former step": FORMER, "cwarp-train default": []}
# The cheaper-step options of cwarp-train, each alone, and the two that cut the negatives' work together;
# the methods each applies to (the negatives' options do nothing without negatives).
LEVERS = {"cwarp-train default": ([], ("contrawarp", "byol", "supervised")),
          "detached negatives": (["--detach-negatives", "true"], ("contrawarp",)),
          "negatives for half the anchors": (["--negative-anchors", "0.5"], ("contrawarp",)),
          "detached, half the anchors": (["--detach-negatives", "true", "--negative-anchors", "0.5"],
                                         ("contrawarp",)),
          "channels_last": (["--memory-format", "channels_last"], ("contrawarp", "byol")),
          "torch.compile": (["--compile", "true"], ("contrawarp", "byol")),
          "stride-2 stem": (["--arch", "convnet-small-s2"], ("contrawarp", "byol"))}


def _trainer(args, extra):
    from cwarp.data import SyntheticFaces
    from cwarp.train import distributed as D
    from cwarp.train import trainer as T
    from cwarp.train.config import config_from_argv
    from cwarp.train.host_memory import keep_freed_memory

    cfg = config_from_argv(["--out", "unused", "--arch", args.arch, "--image-size", str(args.image_size),
                            "--batch-size", str(args.batch_size), "--method", args.method,
                            "--device", args.device] + extra)
    keep_freed_memory(cfg.reuse_freed_memory)   # as cwarp-train's train() does
    trainer = T.Trainer(cfg, D.DistInfo(), torch.device(args.device), 3, steps_per_epoch=10_000, num_classes=7)
    images, labels, landmarks = SyntheticFaces(args.batch_size, image_size=args.image_size, seed=0).tensors()
    return cfg, trainer, images, labels, landmarks


def worker(args) -> int:
    """Time --steps steps of one contender; print one JSON line."""
    import torch.utils.benchmark as tbench

    cfg, trainer, images, labels, landmarks = _trainer(args, json.loads(args.worker))

    def step():
        trainer.train_step(*trainer.make_views(images, landmarks), labels)

    t0, c0 = time.perf_counter(), time.process_time()
    step()   # warm-up: first-call allocations, oneDNN's kernel choice, torch.compile's compilation
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    timer = tbench.Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    c0 = time.process_time()
    times = sorted(timer.timeit(1).mean for _ in range(args.steps))
    cpu = (time.process_time() - c0) / args.steps
    n = cfg.negatives
    print(json.dumps({"times_s": times, "first_step_s": first, "cpu_s_per_step": cpu, "first_step_cpu_s": first_cpu,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "negatives": f"N={n.num_negatives}x{n.warps_per_negative} {n.negatives_through}",
                      "dtype": str(trainer.amp_dtype or torch.float32).replace("torch.", "")}))
    return 0


def _run_contender(args, method, flags) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(flags), "--method", method,
           "--arch", args.arch, "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--device", args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"train_throughput: the {method} contender {flags} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(args) -> int:
    rows, ratios, best = [], {}, {}
    for method in args.methods:
        for _ in range(args.rounds):
            for name, flags in CONTENDERS.items():
                r = _run_contender(args, method, flags)
                median = r["times_s"][len(r["times_s"]) // 2]
                old = best.get((method, name))
                if old is None or median < old["median"]:
                    best[(method, name)] = dict(r, median=median)
                print(f"[{method}] {name}: {median:.2f} s per step", flush=True)
        for name in CONTENDERS:
            r = best[(method, name)]
            t = Timing(p50_ms=r["median"] * 1e3, p20_ms=quantile_ms(r["times_s"], 0.2),
                       p80_ms=quantile_ms(r["times_s"], 0.8))
            case = f"{method} {args.arch} B={args.batch_size} {args.image_size}x{args.image_size}"
            rows.append(Row(case=case, contender=name, dtype=r["dtype"], timing=t, items=args.batch_size,
                            note=r["negatives"] if method == "contrawarp" else "", peak_mem_mb=r["peak_rss_mb"]))
        add_speedups(rows, baseline="former step")
        ratios[method] = rows[-1].speedup
    print()
    print(format_table(rows))
    print(f"\n{torch.get_num_threads()} threads; peak MB is the process's peak resident memory")
    missed = [m for m, r in ratios.items() if r < SPEEDUP_FLOOR]
    for m, r in ratios.items():
        print(f"{m}: default / former step throughput = {r:.2f}x "
              f"({'meets' if r >= SPEEDUP_FLOOR else 'MISSES'} the {SPEEDUP_FLOOR:g}x floor)")
    if args.json:
        write_json(args.json, rows, extra={"speedups": ratios, "floor": SPEEDUP_FLOOR, "former_flags": FORMER})
    return 1 if missed else 0


def levers(args) -> int:
    """The default step against each lever of LEVERS, alternating in separate processes; no floor."""
    rows, record = [], {}
    for method in args.methods:
        names = [name for name, (_, methods) in LEVERS.items() if method in methods]
        best = {}
        for _ in range(args.rounds):
            for name in names:
                r = _run_contender(args, method, LEVERS[name][0])
                median = r["times_s"][len(r["times_s"]) // 2]
                if name not in best or median < best[name]["median"]:
                    best[name] = dict(r, median=median)
                print(f"[{method}] {name}: {median:.2f} s per step, {r['cpu_s_per_step']:.2f} CPU s "
                      f"(first step {r['first_step_s']:.1f} s)", flush=True)
        for name in names:
            r = best[name]
            t = Timing(p50_ms=r["median"] * 1e3, p20_ms=quantile_ms(r["times_s"], 0.2),
                       p80_ms=quantile_ms(r["times_s"], 0.8))
            case = f"{method} {args.arch} B={args.batch_size} {args.image_size}x{args.image_size}"
            base_cpu = best["cwarp-train default"]["cpu_s_per_step"]
            rows.append(Row(case=case, contender=name, dtype=r["dtype"], timing=t, items=args.batch_size,
                            note=f"{r['cpu_s_per_step']:.2f} CPU s a step ({base_cpu / r['cpu_s_per_step']:.2f}x); "
                                 f"first step {r['first_step_s']:.1f} s", peak_mem_mb=r["peak_rss_mb"]))
            record[f"{method}: {name}"] = {"step_s": r["median"], "first_step_s": r["first_step_s"],
                                           "cpu_s_per_step": r["cpu_s_per_step"],
                                           "cpu_speedup": base_cpu / r["cpu_s_per_step"]}
        add_speedups(rows, baseline="cwarp-train default")
    print()
    print(format_table(rows))
    print(f"\n{torch.get_num_threads()} threads; each lever alone in its own process, alternating; no floor")
    if args.json:
        write_json(args.json, rows, extra={"levers": record, "flags": {k: v[0] for k, v in LEVERS.items()}})
    return 0


def rendering(args) -> int:
    """cwarp-train's step (views rendered on the fly) against a loop fed pre-rendered views."""
    cfg, trainer, images, labels, landmarks = _trainer(args, [])
    dev = torch.device(args.device)
    views = trainer.make_views(images, landmarks)          # pre-rendered once, reused
    fns = (("pre-rendered views (reference loop)", lambda: trainer.train_step(*views, labels)),
           ("cwarp-train step (on the fly)", lambda: trainer.train_step(*trainer.make_views(images, landmarks),
                                                                        labels)),
           ("view rendering alone", lambda: trainer.make_views(images, landmarks)))
    case = (f"{args.method} {args.arch} B={args.batch_size} {args.image_size}x{args.image_size} "
            f"N={cfg.negatives.num_negatives}x{cfg.negatives.warps_per_negative} warps")
    dtype = str(trainer.amp_dtype or torch.float32).replace("torch.", "")
    rows = [Row(case=case, contender=name, dtype=dtype, items=args.batch_size,
                timing=time_fn(fn, dev, args.min_run_time)) for name, fn in fns]
    add_speedups(rows, baseline="pre-rendered views (reference loop)")
    print(format_table(rows))
    ratio = rows[1].items_per_s / rows[0].items_per_s
    verdict = "meets" if ratio >= RENDERING_FLOOR else "MISSES"
    print(f"\non-the-fly / pre-rendered throughput = {ratio:.3f} ({verdict} the {RENDERING_FLOOR} floor)")
    if args.json:
        write_json(args.json, rows, extra={"ratio": ratio, "floor": RENDERING_FLOOR})
    return 0 if ratio >= RENDERING_FLOOR else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["contrawarp", "byol"], choices=("contrawarp", "byol", "supervised"),
                   help="the methods compared (supervised: --levers only, its default step, for the ratio of step "
                        "times that equal wall-clock budgets are set from)")
    p.add_argument("--method", default="contrawarp", choices=("contrawarp", "byol", "supervised"),
                   help="the method of --rendering (and of a --worker)")
    p.add_argument("--arch", default="convnet-small")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3, help="timed steps per contender and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each contender keeps its best")
    p.add_argument("--rendering", action="store_true", help="on-the-fly vs pre-rendered views instead")
    p.add_argument("--levers", action="store_true", help="the default step against each cheaper-step option")
    p.add_argument("--min-run-time", type=float, default=3.0, help="seconds per --rendering contender")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    for name in ("steps", "rounds", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if "supervised" in args.methods and not args.levers and not args.rendering:
        p.error("--methods supervised: only with --levers (the former step is contrawarp's and byol's)")
    if args.worker is not None:
        return worker(args)
    if args.levers:
        return levers(args)
    return rendering(args) if args.rendering else compare(args)


if __name__ == "__main__":
    sys.exit(main())
