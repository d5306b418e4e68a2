"""What cwarp-train --eval-every costs at the demo's settings: evaluation time over training time (floor: <= 5 %).

    python benchmarks/online_eval_cost.py [--method contrawarp ...] [--json PATH]

Each method is pretrained exactly as ``make demo`` does (cwarp.apps.demo's
recipe: its model, image size, batch size, steps and online-evaluation
settings) in a temporary folder. The evaluation time is everything the
monitor spends: building its bank and held-out set, then every evaluation
(the sum of the log's eval_seconds rows plus the set-up); the training time
is the rest of the run's wall time. Exits 1 when a method's ratio, or the
total's, is above the limit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one
import common  # noqa: E402

LIMIT = 0.05


def measure(method: str, overrides: dict, seed: int) -> dict:
    from cwarp.apps import demo

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, method)
        res = demo.pretrain(demo.demo_config(method, out, seed=seed, overrides=overrides) + ["--progress", "false"],
                            fresh=True)
        with open(os.path.join(out, "log.jsonl")) as f:
            evals = [row for row in map(json.loads, f) if "knn_acc" in row]
    eval_s = res["eval_seconds"]
    train_s = res["seconds"] - eval_s
    return {"method": method, "steps": res["step"], "evaluations": len(evals),
            "eval_bank": evals[-1]["eval_bank"], "eval_size": evals[-1]["eval_size"],
            "setup_s": eval_s - sum(r["eval_seconds"] for r in evals),
            "per_eval_s": sum(r["eval_seconds"] for r in evals) / len(evals),
            "train_s": train_s, "eval_s": eval_s, "ratio": eval_s / train_s,
            "knn_acc": [[r["step"], r["knn_acc"]] for r in evals]}


def table(rows) -> str:
    head = (f"{'method':<11} {'steps':>5} {'evals':>5} {'bank+held':>9} {'setup s':>7} {'per eval s':>10} "
            f"{'train s':>8} {'eval s':>7} {'eval/train':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r['eval_bank']}+{r['eval_size']}" if "eval_bank" in r else "-"
        setup, per_eval = (f"{r[k]:.2f}" if k in r else "-" for k in ("setup_s", "per_eval_s"))
        lines.append(f"{r['method']:<11} {r['steps']:>5} {r['evaluations']:>5} {size:>9} {setup:>7} {per_eval:>10} "
                     f"{r['train_s']:>8.1f} {r['eval_s']:>7.2f} {100 * r['ratio']:>9.2f}%")
    return "\n".join(lines)


def main(argv=None) -> int:
    from cwarp.apps import demo
    from cwarp.train.config import METHODS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", action="append", choices=METHODS,
                   help="a method to pretrain (repeatable; default: all three, at the demo's budget)")
    for flag in ("epochs", "num-train", "image-size", "batch-size", "eval-bank", "eval-size"):
        p.add_argument(f"--{flag}", type=int, default=None, help="override the demo's (a quicker, rougher look)")
    p.add_argument("--arch", default=None, help="override the demo's backbone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=float, default=LIMIT, help="the largest evaluation / training time allowed")
    p.add_argument("--json", metavar="PATH", help="also write the rows here")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items()
                 if k in ("epochs", "num_train", "image_size", "arch", "batch_size", "eval_bank", "eval_size") and v}
    rows = [measure(m, overrides, args.seed) for m in (args.method or METHODS)]
    if len(rows) > 1:
        total = {k: sum(r[k] for r in rows) for k in ("steps", "evaluations", "train_s", "eval_s")}
        rows.append(dict(total, method="total", ratio=total["eval_s"] / total["train_s"]))
    print(table(rows))
    missed = [r["method"] for r in rows if r["ratio"] > args.limit]
    print(f"\nonline evaluation / training time: {'MISSES' if missed else 'meets'} the {100 * args.limit:g} % limit"
          + (f" ({', '.join(missed)})" if missed else ""))
    if args.json:
        common.write_record(args.json, {"benchmark": "online_eval_cost", "limit": args.limit,
                                        "recipe": dict(demo.DEMO_RECIPE, **overrides), "rows": rows,
                                        "load_average": os.getloadavg()})
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
