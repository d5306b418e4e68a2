"""How the recipes were chosen: each search's configurations pretrained at the demo's budget and probed on the
validation faces only (benchmarks/protocol.py), so the choice can be rerun.

    python benchmarks/select_recipe.py --search contrawarp|byol|levers|supervised [--seeds 0 1] [--jobs 2]
                                       [--image-size S] [--arch ARCH] [--out results/select] [--json PATH]

SEARCHES holds each search's configurations as (label, cwarp-train --method,
flags); a configuration's flags are added to cwarp-train's defaults for its
method, so after a recipe is adopted (cwarp.train.config.METHOD_DEFAULTS)
its row reads as the defaults. The table gives each configuration's
validation accuracy per seed, and for ContraWarping p1's InfoNCE half and
warp_acc at the last logged step (chance: ln(1 + N) / 2 and 1 / (1 + N)) and
each run's wall-clock. The best mean validation accuracy per method is
marked; the test split is never read. Runs and probes are cached under --out
(a rerun reuses them, a stopped run resumes).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one
import protocol  # noqa: E402
from common import write_record  # noqa: E402

STRONG = ["--crop-scale", "0.5,1", "--rotation", "10", "--jitter-strength", "1"]
MILD = ["--crop-scale", "0.8,1", "--rotation", "5", "--jitter-strength", "0.5"]
FORMER_WARPS = ["--warp-radius", "0.15,0.35", "--warp-magnitude", "0.05,0.15"]
FLIPS_ONLY = ["--crop-scale", "1,1", "--rotation", "0", "--jitter-strength", "0", "--grayscale-p", "0"]

# What `--search byol --image-size 32 --arch convnet-small-s2 --seeds 0 1` chose on the validation faces
# (docs/experiments.md, section 21, "Fair baselines"): BYOL's flags on top of its
# cwarp-train defaults, for benchmarks/ablation.py's byol_searched arms.
SEARCHED_BYOL = MILD

# search: [(label, method, flags)]. "contrawarp" is docs/experiments.md's recipe search (five
# configurations, at the former demo scale: --image-size 48 --arch convnet-small); "byol" gives BYOL as many
# (its two view sets, learning rate and base EMA); "levers" the cheaper steps, each judged by the accuracy it
# keeps (the demo's stride-2 stem among them, against the plain stem); "supervised" the labels' two view sets.
SEARCHES = {
    "contrawarp": [
        ("strong views, former warps", "contrawarp", STRONG + FORMER_WARPS),
        ("strong views, wide warps", "contrawarp", STRONG),
        ("mild views, wide warps", "contrawarp", MILD),
        ("mild views, wide warps, N = 1", "contrawarp", MILD + ["--num-negatives", "1"]),
        ("mild views, wide Gaussian warps", "contrawarp", MILD + ["--warp-kind", "gaussian"]),
    ],
    "byol": [
        ("strong views, lr 2e-3, base EMA 0.99", "byol", STRONG + ["--lr", "2e-3", "--base-momentum", "0.99"]),
        ("mild views, lr 2e-3, base EMA 0.99", "byol", MILD + ["--lr", "2e-3", "--base-momentum", "0.99"]),
        ("strong views, lr 5e-3, base EMA 0.99", "byol", STRONG + ["--lr", "5e-3", "--base-momentum", "0.99"]),
        ("strong views, lr 2e-3, base EMA 0.96", "byol", STRONG + ["--lr", "2e-3", "--base-momentum", "0.96"]),
        ("strong views, lr 5e-3, base EMA 0.96", "byol", STRONG + ["--lr", "5e-3", "--base-momentum", "0.96"]),
    ],
    "levers": [
        ("default step", "contrawarp", []),
        ("detached negatives", "contrawarp", ["--detach-negatives", "true"]),
        ("negatives for half the anchors", "contrawarp", ["--negative-anchors", "0.5"]),
        ("detached, half the anchors", "contrawarp", ["--detach-negatives", "true", "--negative-anchors", "0.5"]),
        ("channels_last", "contrawarp", ["--memory-format", "channels_last"]),
        ("torch.compile", "contrawarp", ["--compile", "true"]),
        ("plain stem (convnet-small)", "contrawarp", ["--arch", "convnet-small"]),
    ],
    "supervised": [
        ("flips only", "supervised", FLIPS_ONLY),
        ("mild views", "supervised", MILD + ["--grayscale-p", "0.2"]),
    ],
}


def search_jobs(search, seeds, out_root, fmt="synthetic", over=None, arch=None):
    """{(label, seed): (out, argv)}, seed-major so that the first seed's table fills first. A run's folder is
    named by its settings (protocol.run_key), so that searches sharing a configuration share its runs."""
    from cwarp.apps import demo

    jobs = {}
    for seed in seeds:
        for label, method, flags in SEARCHES[search]:
            argv = demo.demo_config(method, "unset", seed=seed, arch=arch, overrides=over) + ["--progress", "false",
                                                                                   "--format", fmt] + flags
            out = os.path.join(out_root, "runs", protocol.run_key(argv), f"seed{seed}")
            jobs[(label, seed)] = (out, argv + ["--out", out])
    return jobs


def table(search, seeds, results, summaries) -> list:
    """The search's table: validation accuracy per seed, its mean, and the last logged InfoNCE half and warp_acc."""
    lines = [f"{'configuration':<42} {'method':<11} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
             + f" {'mean':>6} {'InfoNCE':>8} {'warp_acc':>8} {'minutes':>8}"]
    best = {}
    for label, method, _ in SEARCHES[search]:
        accs = [results[(label, s)] for s in seeds if (label, s) in results]
        if accs:
            mean = statistics.fmean(accs)
            if mean > best.get(method, (None, -1.0))[1]:
                best[method] = (label, mean)
    for label, method, _ in SEARCHES[search]:
        accs = [results.get((label, s)) for s in seeds]
        done = [a for a in accs if a is not None]
        last = summaries.get((label, seeds[0]), {})
        nce, warp, sec = last.get("nce_term"), last.get("warp_acc"), last.get("seconds")
        mark = " *" if best.get(method, (None,))[0] == label else ""
        lines.append(f"{label:<42} {method:<11} " + " ".join(f"{a:>8.1f}" if a is not None else f"{'-':>8}"
                                                             for a in accs)
                     + f" {statistics.fmean(done) if done else math.nan:>6.1f}"
                     + f" {nce if nce is not None else math.nan:>8.3f} {warp if warp is not None else math.nan:>8.2f}"
                     + f" {sec / 60 if sec else math.nan:>8.1f}{mark}")
    lines.append("* the best mean validation accuracy of its method; InfoNCE (p1's half) and warp_acc at the last "
                 f"logged step of seed {seeds[0]}")
    return lines


def main(argv=None):
    from cwarp.apps import demo
    from cwarp.train.config import ConfigError

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", required=True, choices=list(SEARCHES))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                   help="run these configurations of the search only (their labels)")
    p.add_argument("--format", default="synthetic", choices=("synthetic", "synthetic-hard"))
    p.add_argument("--image-size", type=int, default=None,
                   help="pretrain and probe at S px instead of the demo's (benchmarks/ablation.py's smaller scale)")
    p.add_argument("--arch", default=None, help="every configuration's backbone instead of the demo's "
                                                "(a configuration's own --arch still wins)")
    p.add_argument("--out", default=os.path.join("results", "select"))
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs: expected >= 1, got {args.jobs}")
    labels = [label for label, _, _ in SEARCHES[args.search]]
    unknown = [x for x in args.only or [] if x not in labels]
    if unknown:
        p.error(f"--only: {unknown[0]!r} is not a configuration of --search {args.search} ({labels})")
    over = {} if args.image_size is None else {"image_size": args.image_size}
    try:   # naming each run parses its configuration: a bad one is refused before an hour of pretraining
        jobs = search_jobs(args.search, args.seeds, args.out, args.format, over, args.arch)
    except (ConfigError, ValueError) as e:
        p.error(str(e))
    if args.only:
        jobs = {k: v for k, v in jobs.items() if k[0] in args.only}
    protocol.pretrain_runs(list(jobs.values()), args.jobs, args.threads)
    results, summaries = {}, {}
    for (label, seed), (out, _) in jobs.items():
        res = protocol.probe_checkpoint(out, protocol.VALIDATION, args.format, seed)
        results[(label, seed)] = 100 * res["linear_acc"]
        summaries[(label, seed)] = protocol.run_summary(out)
    print(f"\n--search {args.search}: validation split (data seed {protocol.VALIDATION.data_seed}, "
          f"{protocol.VALIDATION.test} faces), demo budget {demo.DEMO_RECIPE['epochs']} epochs of "
          f"{demo.DEMO_RECIPE['num_train']} faces in batches of {demo.DEMO_RECIPE['batch_size']}, "
          f"{args.image_size or demo.DEMO_RECIPE['image_size']} px, {args.arch or demo.DEMO_RECIPE['arch']}")
    for line in table(args.search, args.seeds, results, summaries):
        print(line)
    if args.json:
        write_record(args.json, {"search": args.search, "seeds": args.seeds, "format": args.format,
                                 "image_size": args.image_size, "arch": args.arch,
                                 "validation": vars(protocol.VALIDATION),
                                 "runs": {f"{label} / seed {seed}": dict(summaries[(label, seed)],
                                                                         val_acc=results[(label, seed)],
                                                                         argv=jobs[(label, seed)][1])
                                          for label, seed in results}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
