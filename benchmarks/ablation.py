"""The demo's comparison over several seeds (mean ± std), plus sweeps over the
number of warped negatives and the warps' size.

    python benchmarks/ablation.py [--seeds 0 1 2] [--jobs 2] [--quick] [--epochs N] [--num-train N] [--no-sweep]
                                  [--negatives N ...] [--warp-sizes RMIN,RMAX:MMIN,MMAX ...]
                                  [--warmup-epochs F] [--crop-scale MIN,MAX] [--rotation DEG]
                                  [--jitter-strength S] [--grayscale-p P] [--json PATH]

Each seed pretrains ContraWarping and BYOL-only with the demo's budget
(cwarp.apps.demo.DEMO_RECIPE), each with cwarp-train's recipe for its
--method, trains the supervised reference with the same budget and the
labels, and probes the three beside a random init and raw pixels on
SyntheticFaces' held-out test split. The supervised reference shows what
that many steps allow at all. The sweeps vary one ContraWarping knob at a
time (the first seed); a warp size is a radius range and a magnitude range
together, because a translate warp moves content by at most 0.325 r
whatever its magnitude. --jobs N runs N pretrainings side by side, each
with its share of the threads. Prints the floors and exits 1 when one is
missed: ContraWarping - BYOL >= 5 points on the mean, ContraWarping ahead
of BYOL in every seed, and ContraWarping across at least half of the way
from random init to the supervised reference (linear-probe accuracy).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one


def _ms(values):
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, s


def pretrain_runs(jobs, parallel):
    """Pretrain every (out, argv) of jobs: one at a time in this process, or `parallel` worker processes
    sharing the CPU threads. Stops (exit 130) when Ctrl-C stopped a run."""
    from cwarp.apps import demo

    if parallel <= 1:
        statuses = [demo.pretrain(argv, fresh=True)["status"] for _, argv in jobs]
    else:
        import concurrent.futures
        import multiprocessing

        threads = max(1, torch.get_num_threads() // parallel)
        with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as ex:
            statuses = list(ex.map(demo.pretrain_in_worker, [argv for _, argv in jobs], [threads] * len(jobs)))
    for (out, _), status in zip(jobs, statuses):
        if status != "done":   # Ctrl-C stopped the pretraining: stop the ablation too
            print(f"ablation: stopped during {out}", file=sys.stderr)
            raise SystemExit(130)


def job(tag, method, seed, recipe_over, out_root, extra=None):
    """(run folder, cwarp-train arguments) of one pretraining."""
    from cwarp.apps import demo

    out = os.path.join(out_root, tag, f"{method}_s{seed}")
    return out, demo.demo_config(method, out, seed=seed, overrides=recipe_over) + ["--progress", "false"] + (
        extra or [])


# The size sweep: (--warp-radius, --warp-magnitude): the former default, today's
# default (the wide warps, which change a label-trained network's prediction as
# often as a second global view does; docs/experiments.md, "How big the warps
# are"), and wider still.
WARP_SIZES = ("0.15,0.35:0.05,0.15", "0.4,0.6:0.15,0.3", "0.6,0.8:0.25,0.4")


def warp_size_flags(size: str) -> list:
    """cwarp-train flags of one RMIN,RMAX:MMIN,MMAX sweep entry (ValueError when malformed)."""
    parts = size.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--warp-sizes: expected RMIN,RMAX:MMIN,MMAX, got {size!r}")
    return ["--warp-radius", parts[0], "--warp-magnitude", parts[1]]


# cwarp-train options the ablation passes to every pretraining (all methods alike) when given.
TRAIN_OPTIONS = ("precision", "warmup_epochs", "crop_scale", "rotation", "jitter_strength", "grayscale_p")


def train_flags(args) -> list:
    """The cwarp-train flags of args' TRAIN_OPTIONS that were given."""
    flags = []
    for name in TRAIN_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


# The floors: ContraWarping ahead of BYOL by GAP_FLOOR points on the mean and
# in every seed, and across SHARE_FLOOR of the way from random init to the
# supervised reference trained with the same budget.
GAP_FLOOR = 5.0
SHARE_FLOOR = 0.5


def check_floors(per_seed):
    """The floors' figures and verdicts from {seed: {representation: accuracy in [0, 1]}}."""
    pct = {seed: {k: 100 * v for k, v in accs.items()} for seed, accs in per_seed.items()}
    mean = {k: statistics.fmean(a[k] for a in pct.values()) for k in next(iter(pct.values()))}
    gap = mean["contrawarp"] - mean["byol"]
    ahead = {seed: a["contrawarp"] - a["byol"] for seed, a in pct.items()}
    span = mean["supervised"] - mean["random_init"]
    share = (mean["contrawarp"] - mean["random_init"]) / span if span > 0 else float("nan")
    checks = {"gap_vs_byol": gap >= GAP_FLOOR, "ahead_in_every_seed": all(d > 0 for d in ahead.values()),
              "share_of_supervised_gap": share >= SHARE_FLOOR}

    def verdict(ok):
        return "met" if ok else "NOT met"

    lines = [f"\nContraWarping - BYOL = {gap:+.1f} points on the mean (floor +{GAP_FLOOR:g}: "
             f"{verdict(checks['gap_vs_byol'])})",
             "ContraWarping - BYOL per seed: " + ", ".join(f"seed {s} {d:+.1f}" for s, d in ahead.items())
             + f" (ahead in every seed: {verdict(checks['ahead_in_every_seed'])})",
             f"ContraWarping closes {100 * share:.0f} % of the gap from random init to the supervised reference "
             f"({mean['supervised'] - mean['random_init']:+.1f} points; floor {100 * SHARE_FLOOR:.0f} %: "
             f"{verdict(checks['share_of_supervised_gap'])})"]
    return dict(checks, gap=gap, per_seed_gap=ahead, share=share, met=all(checks.values()), lines=lines)


def main(argv=None):
    from cwarp.apps import demo
    from cwarp.train.config import METHODS, PRECISIONS, ConfigError, config_from_argv
    from cwarp.train.trainer import autocast_dtype

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=os.path.join("results", "ablation"))
    p.add_argument("--quick", action="store_true", help="a tenth of the budget (a smoke run, not a measurement)")
    p.add_argument("--epochs", type=int, default=None,
                   help="the demo's budget with N epochs instead (30: 330 steps, where BYOL and, in one seed of "
                        "three, the supervised reference start to learn; about an hour per seed on 2 CPU cores)")
    p.add_argument("--num-train", type=int, default=None,
                   help="pretrain on N fresh synthetic faces instead of the demo's 1,500 (the data-volume lever; "
                        "the probe keeps the demo's 1,500 training faces, so the rows stay comparable)")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--negatives", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--warp-sizes", nargs="+", default=list(WARP_SIZES), metavar="RMIN,RMAX:MMIN,MMAX",
                   help="--warp-radius:--warp-magnitude pairs of the size sweep (default: the former "
                        "default, the default, wider; see benchmarks/warp_sensitivity.py)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="cwarp-train --precision of every pretraining (auto: fp32 on the CPU)")
    p.add_argument("--warmup-epochs", type=float, default=None, help="cwarp-train --warmup-epochs (default 2)")
    g = p.add_argument_group("global views of every pretraining (default: cwarp-train's)")
    g.add_argument("--crop-scale", default=None, metavar="MIN,MAX")
    g.add_argument("--rotation", type=float, default=None, metavar="DEG")
    g.add_argument("--jitter-strength", type=float, default=None, metavar="S")
    g.add_argument("--grayscale-p", type=float, default=None, metavar="P")
    p.add_argument("--jobs", type=int, default=1,
                   help="pretrainings run side by side, each with its share of the CPU threads")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: expected >= 1, got {args.jobs}")
    over = {}
    if args.quick:
        over = {"num_train": 512, "epochs": 1, "probe_test": 256}
    if args.epochs is not None:
        if args.epochs < 1:
            p.error(f"--epochs: expected >= 1, got {args.epochs}")
        over["epochs"] = args.epochs
    if args.num_train is not None:
        if args.num_train < int(demo.DEMO_RECIPE["batch_size"]):
            p.error(f"--num-train: expected at least one batch ({demo.DEMO_RECIPE['batch_size']}), "
                    f"got {args.num_train}")
        over["num_train"] = args.num_train
    recipe = dict(demo.DEMO_RECIPE, **over)
    common = train_flags(args)
    try:   # refuse a bad value now, not after an hour of pretraining
        sweep_flags = [] if args.no_sweep else [warp_size_flags(w) for w in args.warp_sizes]
        negative_flags = [] if args.no_sweep else [["--num-negatives", str(n)] for n in args.negatives]
        for extra in [[]] + negative_flags + sweep_flags:
            config_from_argv(demo.demo_config("contrawarp", "unchecked", overrides=over) + common + extra)
    except (ConfigError, ValueError) as e:
        p.error(str(e))
    autocast = str(autocast_dtype(args.precision, torch.device("cpu")) or "fp32")
    print(f"pretraining precision: {args.precision} ({autocast} here)", flush=True)
    probe_train = 512 if args.quick else int(demo.DEMO_RECIPE["num_train"])
    probe_kw = dict(image_size=int(recipe["image_size"]), num_train=probe_train,
                    num_test=int(recipe["probe_test"]))
    t0 = time.perf_counter()
    compare = {(seed, m): job("compare", m, seed, over, args.out, common) for seed in args.seeds for m in METHODS}
    # The sweeps' runs by the label they are reported under (none with --no-sweep).
    sweep_jobs = {f"num_negatives={n}": job(f"negatives_{n}", "contrawarp", args.seeds[0], over, args.out,
                                            flags + common) for n, flags in zip(args.negatives, negative_flags)}
    sweep_jobs.update({f"warp_radius:magnitude={size}": job(f"warp_size_{size.replace(':', '_')}", "contrawarp",
                                                            args.seeds[0], over, args.out, flags + common)
                       for size, flags in zip(args.warp_sizes, sweep_flags)})
    pretrain_runs(list(compare.values()) + list(sweep_jobs.values()), args.jobs)
    per_seed = {}
    arch = json.load(open(os.path.join(compare[(args.seeds[0], "contrawarp")][0], "config.json")))["arch"]
    for seed in args.seeds:
        runs = {m: os.path.join(compare[(seed, m)][0], "checkpoint.pt") for m in METHODS}
        res = demo.probe_all(runs, arch=arch, seed=seed, **probe_kw)
        per_seed[seed] = {k: v["linear_acc"] for k, v in res.items()}
        print(f"seed {seed}: " + "  ".join(f"{k} {100 * v:.1f}%" for k, v in per_seed[seed].items()), flush=True)
    names = list(next(iter(per_seed.values())))
    summary = {n: _ms([100 * per_seed[s][n] for s in args.seeds]) for n in names}
    print(f"\nlinear-probe accuracy on SyntheticFaces test, {len(args.seeds)} seeds, {recipe}")
    print(f"{'representation':<14} {'mean':>6} {'± std':>6}")
    for n, (m, s) in summary.items():
        print(f"{n:<14} {m:>6.1f} {s:>6.1f}")
    floors = check_floors(per_seed)
    for line in floors["lines"]:
        print(line)

    sweeps = {}
    seed = args.seeds[0]
    for key, (out, _) in sweep_jobs.items():
        r = demo.probe_all({"cw": os.path.join(out, "checkpoint.pt")}, arch=arch, seed=seed, baselines=False,
                           **probe_kw)
        sweeps[key] = 100 * r["cw"]["linear_acc"]
        print(f"sweep {key}: {sweeps[key]:.1f}%", flush=True)
    record = {"recipe": recipe, "train_flags": common, "precision": args.precision, "autocast": autocast,
              "seeds": args.seeds,
              "per_seed": per_seed,
              "mean_std": {k: list(v) for k, v in summary.items()},
              "floors": {k: v for k, v in floors.items() if k != "lines"},
              "sweeps": sweeps,
              "seconds": time.perf_counter() - t0}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0 if floors["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
