"""The frozen recipe against its baselines and controls, seed by seed, with paired statistics.

    python benchmarks/ablation.py [--seeds 3 4 5 6 7 8 9 10] [--arms contrawarp byol ...] [--jobs 2]
                                  [--format synthetic|synthetic-hard] [--select-on val|test] [--no-sweep]
                                  [--epochs N] [--num-train N] [--image-size S] [--arch ARCH] [--quick]
                                  [--out DIR] [--json PATH]

Each seed pretrains every arm (ARMS) at the demo's budget
(cwarp.apps.demo.DEMO_RECIPE) with cwarp-train's recipe for its --method and
the arm's flags: ContraWarping; BYOL at the same steps and at ContraWarping's
wall-clock (--wallclock-epochs), with its default settings and with those
its own validation search chose (select_recipe.SEARCHED_BYOL); the
supervised reference with the labels, for as long as ContraWarping's
wall-clock (--supervised-epochs); and the controls (warps at uniform
centres, affine negatives, InfoNCE alone, the negatives through the
target). Every run is probed on the validation split
and on the test split of benchmarks/protocol.py, beside a random init and raw
pixels: the test split's data seed (protocol.TEST_DATA_SEED) was scored by no
run before the recipe was frozen.

For ContraWarping against each other arm it prints, on both splits: the
per-seed gaps, their mean with a 95 % percentile-bootstrap interval, the
paired t test and Wilcoxon's exact signed-rank test over seeds, and McNemar's
exact test per seed over the test faces (cwarp.eval.stats). The
sweeps (--negatives, --warp-sizes; off with --no-sweep) vary one
ContraWarping knob at the first seed and are scored on --select-on (the
validation split unless asked otherwise): they choose, so they never see the
test split.

Runs and probes are cached under --out: a rerun reuses finished runs, resumes
a stopped one and probes only new checkpoints, so a long ablation can be
stopped (Ctrl-C) and finished later with the same command.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one
import protocol  # noqa: E402
import select_recipe  # noqa: E402
from common import write_record  # noqa: E402

from cwarp.eval import stats as ps  # noqa: E402

# Seeds that chose nothing: the recipe was chosen on seeds 0 and 1, and seeds 0 to 2 reported earlier results.
FRESH_SEEDS = (3, 4, 5, 6, 7, 8, 9, 10)
# arm: (cwarp-train --method, its extra flags). Controls keep ContraWarping's recipe but for one part.
ARMS = {
    "contrawarp": ("contrawarp", []),
    "byol": ("byol", []),
    "byol_wallclock": ("byol", []),          # --wallclock-epochs instead of the demo's
    # BYOL with the settings its own search chose on the validation faces (SEARCHED_BYOL), at the same steps and
    # at ContraWarping's wall-clock.
    "byol_searched": ("byol", select_recipe.SEARCHED_BYOL),
    "byol_searched_wallclock": ("byol", select_recipe.SEARCHED_BYOL),
    # --supervised-epochs instead of the demo's, its online evaluation on 1,000 validation faces (its standard
    # error about 1.2 points) to show whether its accuracy had stopped rising by the end.
    "supervised": ("supervised", ["--eval-size", "1000", "--eval-bank", "1536"]),
    "uniform_centres": ("contrawarp", ["--warp-centers", "uniform"]),
    "affine_negatives": ("contrawarp", ["--negative-kind", "affine"]),
    "infonce_only": ("contrawarp", ["--byol-weight", "0"]),
    "target_negatives": ("contrawarp", ["--negatives-through", "target", "--detach-negatives", "false"]),
}
MAIN_ARMS = ("contrawarp", "byol", "byol_wallclock", "byol_searched", "byol_searched_wallclock")
CONTROLS = ("uniform_centres", "affine_negatives", "infonce_only", "target_negatives")
# The size sweep: (--warp-radius, --warp-magnitude): the former warps, today's
# (wide) warps and wider still. A translate warp moves content by at most
# 0.325 r whatever its magnitude, so radius and magnitude vary together.
WARP_SIZES = ("0.15,0.35:0.05,0.15", "0.4,0.6:0.15,0.3", "0.6,0.8:0.25,0.4")
# cwarp-train options the ablation passes to every pretraining (all arms alike) when given.
TRAIN_OPTIONS = ("arch", "precision", "warmup_epochs", "crop_scale", "rotation", "jitter_strength", "grayscale_p")


def warp_size_flags(size: str) -> list:
    """cwarp-train flags of one RMIN,RMAX:MMIN,MMAX sweep entry (ValueError when malformed)."""
    parts = size.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--warp-sizes: expected RMIN,RMAX:MMIN,MMAX, got {size!r}")
    return ["--warp-radius", parts[0], "--warp-magnitude", parts[1]]


def train_flags(args) -> list:
    """The cwarp-train flags of args' TRAIN_OPTIONS that were given."""
    flags = []
    for name in TRAIN_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def job(tag, method, seed, recipe_over, out_root, extra=None, fmt="synthetic"):
    """(run folder, cwarp-train arguments) of one pretraining."""
    from cwarp.apps import demo

    out = os.path.join(out_root, tag, f"seed{seed}")
    argv = demo.demo_config(method, out, seed=seed, overrides=recipe_over) + ["--progress", "false"]
    return out, argv + ["--format", fmt] + (extra or [])


def arm_jobs(args, over, common):
    """{(arm, seed): (out, argv)} of the comparison, seed by seed (so that finished seeds are complete pairs)."""
    jobs = {}
    for seed in args.seeds:
        for arm in args.arms:
            method, flags = ARMS[arm]
            arm_over = dict(over)
            if arm.endswith("_wallclock"):
                arm_over["epochs"] = args.wallclock_epochs
            elif arm == "supervised":
                arm_over["epochs"] = args.supervised_epochs
            jobs[(arm, seed)] = job(os.path.join(args.format, arm), method, seed, arm_over, args.out,
                                    flags + common, args.format)
    return jobs


def gap_report(name_a, name_b, per_seed, split):
    """ContraWarping's (name_a's) paired comparison with name_b on one split: {seed: result} of both."""
    seeds = [s for s in per_seed if name_a in per_seed[s] and name_b in per_seed[s]]
    if not seeds:
        return None
    gaps = [100 * (per_seed[s][name_a]["linear_acc"] - per_seed[s][name_b]["linear_acc"]) for s in seeds]
    report = {"seeds": seeds, "gaps": gaps, "mean": statistics.fmean(gaps)}
    if len(gaps) >= 2:
        report["ci95"] = ps.bootstrap_ci(gaps)
        report["t"], report["df"], report["t_p"] = ps.paired_t(gaps)
        report["wilcoxon_w"], report["wilcoxon_p"], report["wilcoxon_method"] = ps.wilcoxon(gaps)
    report["mcnemar"] = {}
    for s in seeds:
        a, b = per_seed[s][name_a], per_seed[s][name_b]
        labels = a["labels"]
        if b["labels"] != labels:
            raise ValueError(f"{name_a} and {name_b} of seed {s} were probed on different {split} faces")
        right_a = [p == y for p, y in zip(a["predictions"], labels)]
        right_b = [p == y for p, y in zip(b["predictions"], labels)]
        report["mcnemar"][s] = ps.mcnemar(right_a, right_b)
    report["ahead"] = sum(g > 0 for g in gaps)
    return report


def format_gap(name_a, name_b, r, split) -> list:
    lines = [f"{name_a} - {name_b} ({split}): per seed " + ", ".join(f"{s}: {g:+.1f}" for s, g in
                                                                     zip(r["seeds"], r["gaps"]))]
    if "ci95" in r:
        lo, hi = r["ci95"]
        verdict = "excludes 0" if lo > 0 or hi < 0 else "includes 0"
        lines.append(f"  mean {r['mean']:+.1f} points, 95 % bootstrap CI [{lo:+.1f}, {hi:+.1f}] ({verdict}); "
                     f"ahead in {r['ahead']} of {len(r['gaps'])} seeds; paired t = {r['t']:.2f} (df {r['df']}, "
                     f"p = {r['t_p']:.3f}); Wilcoxon signed-rank W+ = {r['wilcoxon_w']:g} "
                     f"(p = {r['wilcoxon_p']:.3f}, {r['wilcoxon_method']})")
    else:
        lines.append(f"  one seed: {r['mean']:+.1f} points")
    lines.append("  McNemar per seed (faces only A right / only B right, exact p): " + ", ".join(
        f"{s}: {a}/{b} p={p:.3f}" for s, (a, b, p) in r["mcnemar"].items()))
    return lines


def summary_table(per_seed, names, split_obj) -> list:
    lines = [f"\n{split_obj.name} split: data seed {split_obj.data_seed}, probe fitted on {split_obj.train} faces, "
             f"scored on {split_obj.test} (chance 14.3 %; accuracy, mean per-class accuracy in brackets)",
             f"{'representation':<18} {'mean %':>7} {'± std':>6}  per seed"]
    for name in names:
        accs = [100 * per_seed[s][name]["linear_acc"] for s in per_seed if name in per_seed[s]]
        bal = [100 * per_seed[s][name]["balanced_acc"] for s in per_seed if name in per_seed[s]]
        if not accs:
            continue
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"{name:<18} {statistics.fmean(accs):>7.1f} {sd:>6.1f}  "
                     + " / ".join(f"{a:.1f}" for a in accs) + f"  [{statistics.fmean(bal):.1f}]")
    return lines


def _parser():
    from cwarp.train.config import PRECISIONS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(FRESH_SEEDS))
    p.add_argument("--arms", nargs="+", default=list(MAIN_ARMS), choices=list(ARMS),
                   help="what each seed pretrains (default: ContraWarping, BYOL, BYOL at equal wall-clock)")
    p.add_argument("--controls", action="store_true", help="add the four controls to --arms")
    p.add_argument("--format", default="synthetic", choices=("synthetic", "synthetic-hard"),
                   help="the faces every run pretrains and is probed on")
    p.add_argument("--select-on", default="val", choices=("val", "test"),
                   help="the split the sweeps are scored on (they choose: the validation split)")
    p.add_argument("--out", default=os.path.join("results", "ablation"))
    p.add_argument("--quick", action="store_true", help="a tenth of the budget (a smoke run, not a measurement)")
    p.add_argument("--epochs", type=int, default=None, help="the demo's budget with N epochs instead")
    p.add_argument("--wallclock-epochs", type=int, default=12,
                   help="the *_wallclock arms' epochs: the demo's 7 times ContraWarping's step time over BYOL's, "
                        "1.75 at the demo's scale (benchmarks/train_throughput.py --levers; docs/experiments.md)")
    p.add_argument("--supervised-epochs", type=int, default=29,
                   help="the supervised reference's epochs: the demo's 7 times ContraWarping's step time over its "
                        "own, 4.1 at the demo's scale")
    p.add_argument("--num-train", type=int, default=None, help="pretrain on N faces instead of the demo's 1,536")
    p.add_argument("--image-size", type=int, default=None,
                   help="pretrain and probe at S pixels instead of the demo's (every arm)")
    p.add_argument("--arch", default=None, help="every arm's backbone instead of the demo's")
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--negatives", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--warp-sizes", nargs="+", default=list(WARP_SIZES), metavar="RMIN,RMAX:MMIN,MMAX")
    p.add_argument("--precision", choices=PRECISIONS, default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    g = p.add_argument_group("global views of every pretraining (default: each method's recipe)")
    g.add_argument("--crop-scale", default=None, metavar="MIN,MAX")
    g.add_argument("--rotation", type=float, default=None, metavar="DEG")
    g.add_argument("--jitter-strength", type=float, default=None, metavar="S")
    g.add_argument("--grayscale-p", type=float, default=None, metavar="P")
    p.add_argument("--jobs", type=int, default=1, help="pretrainings side by side")
    p.add_argument("--threads", type=int, default=None, help="threads per pretraining (default: shared out)")
    p.add_argument("--json", default=None)
    return p


def main(argv=None):
    from cwarp.apps import demo
    from cwarp.train.config import ConfigError, config_from_argv

    p = _parser()
    args = p.parse_args(argv)
    for name in ("jobs", "wallclock_epochs", "supervised_epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if args.controls:
        args.arms = list(dict.fromkeys(list(args.arms) + list(CONTROLS)))
    if "contrawarp" not in args.arms:
        p.error("--arms: the comparisons are against contrawarp, which must be one of them")
    over = {"num_train": 512, "epochs": 1} if args.quick else {}
    if args.epochs is not None:
        if args.epochs < 1:
            p.error(f"--epochs: expected >= 1, got {args.epochs}")
        over["epochs"] = args.epochs
    if args.num_train is not None:
        if args.num_train < int(demo.DEMO_RECIPE["batch_size"]):
            p.error(f"--num-train: expected at least one batch ({demo.DEMO_RECIPE['batch_size']}), "
                    f"got {args.num_train}")
        over["num_train"] = args.num_train
    if args.image_size is not None:
        over["image_size"] = args.image_size
    common = train_flags(args)
    try:   # refuse a bad value now, not after an hour of pretraining
        sweep_flags = [] if args.no_sweep else [warp_size_flags(w) for w in args.warp_sizes]
        negative_flags = [] if args.no_sweep else [["--num-negatives", str(n)] for n in args.negatives]
        for extra in [flags for _, flags in ARMS.values()] + negative_flags + sweep_flags:
            config_from_argv(demo.demo_config("contrawarp", "unchecked", overrides=over) + common + extra)
    except (ConfigError, ValueError) as e:
        p.error(str(e))
    splits = [protocol.VALIDATION, protocol.TEST]
    if args.quick:
        splits = [protocol.Split(s.name, s.data_seed, 256, 256) for s in splits]
    t0 = time.perf_counter()
    jobs = arm_jobs(args, over, common)
    sweep_jobs = {f"num_negatives={n}": job(os.path.join(args.format, f"negatives_{n}"), "contrawarp",
                                            args.seeds[0], over, args.out, flags + common, args.format)
                  for n, flags in zip(args.negatives, negative_flags)}
    sweep_jobs.update({f"warp_radius:magnitude={size}": job(os.path.join(args.format, "warp_size_" +
                                                                         size.replace(":", "_")),
                                                            "contrawarp", args.seeds[0], over, args.out,
                                                            flags + common, args.format)
                       for size, flags in zip(args.warp_sizes, sweep_flags)})
    protocol.pretrain_runs(list(jobs.values()) + list(sweep_jobs.values()), args.jobs, args.threads)

    record = {"format": args.format, "seeds": args.seeds, "arms": args.arms, "train_flags": common,
              "recipe": dict(demo.DEMO_RECIPE, **over), "wallclock_epochs": args.wallclock_epochs,
              "supervised_epochs": args.supervised_epochs, "test_data_seed": protocol.TEST_DATA_SEED,
              "splits": {}, "runs": {}}
    first = jobs[("contrawarp", args.seeds[0])][0]
    with open(os.path.join(first, "config.json")) as f:
        cfg = json.load(f)
    for split in splits:
        per_seed = {}
        for seed in args.seeds:
            per_seed[seed] = {arm: protocol.probe_checkpoint(jobs[(arm, seed)][0], split, args.format, seed)
                              for arm in args.arms}
            per_seed[seed].update(protocol.probe_baselines(args.out, split, args.format, seed, cfg["arch"],
                                                           int(cfg["image_size"])))
        names = list(args.arms) + ["random_init", "raw_pixels"]
        for line in summary_table(per_seed, names, split):
            print(line)
        gaps = {}
        for other in [a for a in args.arms if a != "contrawarp"] + ["random_init", "raw_pixels"]:
            r = gap_report("contrawarp", other, per_seed, split.name)
            if r is not None:
                gaps[other] = r
                for line in format_gap("contrawarp", other, r, split.name):
                    print(line)
        record["splits"][split.name] = {
            "split": vars(split),
            "accuracy": {s: {k: v["linear_acc"] for k, v in per_seed[s].items()} for s in per_seed},
            "balanced_accuracy": {s: {k: v["balanced_acc"] for k, v in per_seed[s].items()} for s in per_seed},
            "gaps_vs_contrawarp": gaps}
    for (arm, seed), (out, _) in jobs.items():
        record["runs"][f"{arm}/seed{seed}"] = protocol.run_summary(out)
    select = protocol.SPLITS[args.select_on] if not args.quick else splits[0 if args.select_on == "val" else 1]
    sweeps = {}
    for key, (out, _) in sweep_jobs.items():
        sweeps[key] = 100 * protocol.probe_checkpoint(out, select, args.format, args.seeds[0])["linear_acc"]
        print(f"sweep {key} ({select.name} split): {sweeps[key]:.1f}%", flush=True)
    record.update(sweeps=sweeps, sweeps_scored_on=select.name, seconds=time.perf_counter() - t0)
    if args.json:
        write_record(args.json, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
