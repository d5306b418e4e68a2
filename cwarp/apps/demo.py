"""The README's main job: ``python -m cwarp.apps.demo`` (what ``make demo`` runs).

On a CPU, with nothing downloaded, it

1. times cwarp's fused warp against the eager PyTorch reference (benchmarks/warp_throughput.py --quick)
   and says how much faster it is;
2. pretrains ContraWarping and a BYOL-only baseline on the built-in
   SyntheticFaces with the same budget, each with its own recipe (cwarp-train's
   defaults for its --method), each with a progress bar; ``--supervised`` adds
   the reference trained with the labels (what the budget allows at all);
3. probes them, plus a randomly initialized backbone and raw pixels, with a
   linear classifier on frozen features (train split -> test split);
4. prints one table, ContraWarping - BYOL with its uncertainty over the test
   faces (a paired bootstrap interval and McNemar's test) and a line on what
   one seed does and does not show, and writes results/demo/summary.json,
   loss_curves.png (the training loss, and ContraWarping's pretext accuracy
   warp_acc: whether the network tells a view from its warped copies),
   accuracy.png (the final probe with 95 % intervals) and views.png.

Finished pretrainings whose settings match are reused when the demo runs
again, and one stopped half-way (Ctrl-C) resumes; ``--fresh`` starts over.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

__all__ = ["main", "demo_config", "pretrain", "pretrain_in_worker", "probe_all", "gap_to_byol", "DEMO_RECIPE",
           "DEMO_METHODS", "DEMO_SEED"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The demo's budget: 7 epochs of 1,536 faces of 32 px in batches of 32, 336
# steps per method, on convnet-small with a stride-2 stem: the scale at which
# docs/experiments.md compares the methods over 8 fresh seeds, so that what
# one run of the demo shows can be read against that spread. Every method
# gets this budget; the rest of each recipe is cwarp-train's defaults for its
# --method (docs/experiments.md, "The recipe at the demo's budget"). The
# online kNN evaluation runs once per epoch (and at the last step) on
# eval_size held-out faces against eval_bank training faces, sizes that keep
# its cost within 5 % of the training time (benchmarks/online_eval_cost.py
# measures it).
DEMO_RECIPE: Dict[str, object] = dict(image_size=32, arch="convnet-small-s2", num_train=1536, epochs=7,
                                      batch_size=32, warmup_epochs=1, probe_test=1400, eval_bank=128, eval_size=128)
# The demo's seed: one of the fresh seeds of docs/experiments.md's comparison, none of which chose anything.
DEMO_SEED = 3
# What the demo pretrains; --supervised adds the labelled reference.
DEMO_METHODS = ("contrawarp", "byol")
CHANCE = 1 / 7   # seven expression classes
# benchmarks/warp_throughput.py's names of the two contenders the demo compares.
CWARP_CPP, EAGER_REFERENCE = "cwarp cpp", "reference (eager)"
RUN_FILES = ("checkpoint.pt", "log.jsonl", "config.json", "config.toml")


def demo_config(method: str, out: str, *, seed: int = 0, arch: Optional[str] = None,
                overrides: Optional[dict] = None) -> List[str]:
    """cwarp-train arguments of one demo pretraining."""
    r = dict(DEMO_RECIPE, **(overrides or {}))
    every = r.get("eval_every") or max(1, int(r["num_train"]) // int(r["batch_size"]))   # once per epoch
    argv = ["--format", "synthetic", "--method", method, "--out", out, "--arch", arch or str(r["arch"]),
            "--image-size", str(r["image_size"]), "--num-train", str(r["num_train"]),
            "--epochs", str(r["epochs"]), "--batch-size", str(r["batch_size"]), "--seed", str(seed),
            "--log-every", "5", "--eval-every", str(every)]
    for k, v in r.items():
        if k in ("arch", "image_size", "num_train", "epochs", "batch_size", "probe_test", "eval_every"):
            continue
        flag = "--" + k.replace("_", "-")
        argv += [flag, ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)]
    return argv


def run_benchmark(python: str = sys.executable) -> Optional[str]:
    """benchmarks/warp_throughput.py --quick with cwarp and the eager reference only, run quietly; returns one
    sentence on what it found.

    Only the script's absence is tolerated (an installed cwarp has no benchmarks/).
    """
    script = os.path.join(ROOT, "benchmarks", "warp_throughput.py")
    if not os.path.exists(script):
        return None
    print("[demo] timing cwarp's fused local warp against the eager PyTorch reference (a few seconds)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        record_path = os.path.join(tmp, "warp.json")
        # Only the two contenders the sentence compares (no torch.compile, cv2 or kornia): seconds, not a minute.
        proc = subprocess.run([python, script, "--quick", "--contenders", CWARP_CPP, EAGER_REFERENCE,
                               "--json", record_path], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-2000:])
            raise RuntimeError(f"benchmarks/warp_throughput.py --quick failed with exit code {proc.returncode}")
        with open(record_path) as f:
            rows = json.load(f)["rows"]
    return _speedup_sentence(rows)


def _speedup_sentence(rows: List[dict]) -> str:
    def speedup(mode: str) -> Optional[float]:
        found = [r["speedup"] for r in rows if r["contender"] == CWARP_CPP and r["case"].split()[0] == mode
                 and r.get("speedup")]
        return found[0] if found else None

    fwd, both = speedup("fwd"), speedup("fwd+bwd")
    if fwd is None:
        return "the fused kernel could not be timed here (see python benchmarks/warp_throughput.py)"
    case = next(r["case"] for r in rows if r["contender"] == CWARP_CPP)
    tail = f", {both:.1f}x with the backward pass" if both is not None else ""
    return f"cwarp warps images {fwd:.1f}x faster than the eager PyTorch pipeline ({case.split(' ', 1)[1]}{tail})"


def _clear_run(out: str) -> None:
    for name in RUN_FILES:
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))


def _reusable(out: str, wanted) -> bool:
    """Whether out's checkpoint ran with the wanted settings (so it can be reused or resumed)."""
    from cwarp.models import CheckpointError, load_checkpoint
    from cwarp.train.config import ConfigError, migrate, run_differences

    try:
        saved = migrate(load_checkpoint(out)["config"])
    except (CheckpointError, ConfigError) as e:
        print(f"[demo] {out}: starting over ({e})", flush=True)
        return False
    diff = run_differences(saved, wanted)
    if diff:
        k, (old, new) = next(iter(sorted(diff.items())))
        print(f"[demo] {out}: its settings differ ({k}: {old!r} there, {new!r} now); starting over", flush=True)
    return not diff


def pretrain(argv: Sequence[str], *, fresh: bool = False) -> Dict[str, object]:
    """Run cwarp-train's ``train`` for these arguments; returns its summary plus ``seconds``.

    A finished run in --out with the same settings is reused and a stopped one
    resumed, unless ``fresh``; status "interrupted" means Ctrl-C stopped it
    (resumable by calling again).
    """
    from cwarp.train.config import parse_command_line, validate
    from cwarp.train.loop import train

    cfg, explicit = parse_command_line(list(argv))
    wanted = validate(cfg)
    out = wanted.out
    if fresh or not os.path.exists(os.path.join(out, "checkpoint.pt")) or not _reusable(out, wanted):
        _clear_run(out)
    else:
        cfg = cfg.replace(resume=True)
    t0 = time.perf_counter()
    res = train(cfg, explicit)
    res["seconds"] = time.perf_counter() - t0
    return res


def pretrain_in_worker(argv: Sequence[str], threads: int, fresh: bool = True) -> str:
    """``pretrain(argv, fresh=fresh)`` with ``threads`` CPU threads, for a process pool; returns its status."""
    import torch

    torch.set_num_threads(threads)
    return str(pretrain(argv, fresh=fresh)["status"])


def probe_all(runs: Dict[str, str], *, arch: str, image_size: int, num_train: int, num_test: int,
              seed: int = 0, data_seed: int = 0, device: str = "cpu",
              baselines: bool = True) -> Dict[str, dict]:
    """Linear probe (and kNN, mAP@R) of each checkpoint, random init and raw pixels.

    runs: {name: checkpoint path}. The probe's train split is the pretraining
    set (labels are used only here); the test split is SyntheticFaces' held-out
    split, rendered from a different random stream. Nothing is tuned on it.
    Each result carries the probe's per-face ``predictions`` and the test
    ``labels``, for paired comparisons.
    """
    import torch

    from cwarp.data import build_dataset
    from cwarp.eval.probe import evaluate_features, extract_features
    from cwarp.models import backbone_from_checkpoint, build_backbone

    train_ds = build_dataset("synthetic", None, "train", image_size, num_samples=num_train, seed=data_seed)
    test_ds = build_dataset("synthetic", None, "test", image_size, num_samples=num_test, seed=data_seed)
    n_cls = len(train_ds.classes)
    dev = torch.device(device)
    tr_i, tr_y, _ = train_ds.tensors()
    te_i, te_y, _ = test_ds.tensors()

    def probe(backbone, norm):
        kw = dict(mean=norm.get("mean"), std=norm.get("std"), progress=False)
        return evaluate_features(extract_features(backbone, train_ds, 256, dev, **kw), tr_y,
                                 extract_features(backbone, test_ds, 256, dev, **kw), te_y, n_cls, seed=seed)

    results, config = {}, {}
    for name, path in runs.items():
        backbone, config = backbone_from_checkpoint(path)
        results[name] = probe(backbone, config)
    if baselines:
        torch.manual_seed(seed)
        results["random_init"] = probe(build_backbone(arch, train_ds.channels, image_size), config)
        px = lambda t: t.flatten(1).float() / 255.0  # noqa: E731
        results["raw_pixels"] = evaluate_features(px(tr_i), tr_y, px(te_i), te_y, n_cls, seed=seed)
    for r in results.values():
        r["labels"] = te_y.tolist()
    return results


def _correct(result: dict) -> List[bool]:
    return [p == y for p, y in zip(result["predictions"], result["labels"])]


def gap_to_byol(results: Dict[str, dict]) -> Optional[dict]:
    """ContraWarping - BYOL on one seed's test faces: the gap in points, its 95 % paired bootstrap interval
    over the faces, and McNemar's exact test (faces only ContraWarping gets right, only BYOL, p)."""
    from cwarp.eval.stats import mcnemar, paired_bootstrap_ci

    if "contrawarp" not in results or "byol" not in results:
        return None
    a, b = _correct(results["contrawarp"]), _correct(results["byol"])
    lo, hi = paired_bootstrap_ci(a, b)
    only_a, only_b, p = mcnemar(a, b)
    gap = 100 * (results["contrawarp"]["linear_acc"] - results["byol"]["linear_acc"])
    return {"points": gap, "ci95": [100 * lo, 100 * hi], "only_contrawarp": only_a, "only_byol": only_b,
            "mcnemar_p": p}


def _wilson(acc: float, n: int, z: float = 1.96):
    """The 95 % Wilson interval of an accuracy measured on n faces, in points."""
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((acc * (1 - acc) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def _table(results: Dict[str, dict]) -> str:
    """Method, linear accuracy with its 95 % interval over the test faces, and its gap to BYOL and to random
    init, in points."""
    acc = {name: 100 * r["linear_acc"] for name, r in results.items()}

    def gap(name: str, to: str) -> str:
        return "" if name == to or to not in acc else f"{acc[name] - acc[to]:+.1f}"

    head = f"{'representation':<14} {'linear acc':>10} {'95 % interval':>14} {'vs BYOL':>8} {'vs random init':>15}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lo, hi = _wilson(r["linear_acc"], int(r["n_test"]))
        lines.append(f"{name:<14} {acc[name]:>9.1f}% {f'{lo:.1f}-{hi:.1f}':>14} {gap(name, 'byol'):>8} "
                     f"{gap(name, 'random_init'):>15}")
    return "\n".join(lines)


def _gap_line(gap: dict, n_test: int) -> str:
    lo, hi = gap["ci95"]
    holds = "excludes 0" if lo > 0 or hi < 0 else "includes 0: on these faces the two are not told apart"
    return (f"ContraWarping - BYOL = {gap['points']:+.1f} points, 95 % interval over the {n_test:,} test faces "
            f"{lo:+.1f} to {hi:+.1f} ({holds}); McNemar: {gap['only_contrawarp']} faces only ContraWarping "
            f"gets right, {gap['only_byol']} only BYOL, p = {gap['mcnemar_p']:.3g}")


def _meaning(results: Dict[str, dict], recipe: dict, steps: Optional[int]) -> str:
    """What one seed shows and what it does not, in one line."""
    budget = f"{steps} steps" if steps else f"{recipe['epochs']} epochs"
    return (f"This is one seed after {budget}: the interval covers which test faces were drawn, not how the "
            f"pretraining varies from seed to seed, which is larger; whether ContraWarping leads BYOL across "
            f"seeds is docs/experiments.md's question (benchmarks/ablation.py, 8 seeds).")


def _loss_plot(path: str, run_dirs: Dict[str, str]) -> str:
    """Training loss per method, and beside it ContraWarping's warp_acc: how often the online network ranks
    view 2 above every warped copy of it (whether the method has started)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_warp) = plt.subplots(1, 2, figsize=(11, 4))
    chance = None
    for name, d in run_dirs.items():
        with open(os.path.join(d, "log.jsonl")) as f:
            rows = [r for r in map(json.loads, filter(str.strip, f)) if "loss_avg" in r]   # not the eval rows
        # Markers: a run with a single logged step still shows a point.
        ax.plot([r["step"] for r in rows], [r["loss_avg"] for r in rows], "o-", markersize=3, label=name)
        warp = [r for r in rows if "warp_acc" in r]
        if warp:
            ax_warp.plot([r["step"] for r in warp], [100 * r["warp_acc"] for r in warp], "o-", markersize=3,
                         label=name)
            with open(os.path.join(d, "config.json")) as f:
                chance = 100 / (1 + int(json.load(f)["num_negatives"]))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss (each method on its own objective)")
    ax.legend()
    if chance is not None:
        ax_warp.axhline(chance, ls="--", c="k", lw=0.8, label="chance")
        ax_warp.legend()
    ax_warp.set_xlabel("step")
    ax_warp.set_ylabel("warp_acc (%)")
    ax_warp.set_title("View 2 ranked above its warped copies")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def online_knn(run_dir: str) -> List[List[float]]:
    """[[step, kNN accuracy], ...] of a run's online evaluation (its log.jsonl rows with knn_acc). Kept in
    summary.json, not plotted: on the demo's eval_size held-out faces a kNN accuracy's standard error is about
    3 points, as large as the differences it would show."""
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        rows = [json.loads(x) for x in f if x.strip()]
    return [[r["step"], r["knn_acc"]] for r in rows if "knn_acc" in r]


def _accuracy_plot(path: str, results: Dict[str, dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(results)
    accs = [100 * results[n]["linear_acc"] for n in names]
    palette = {"contrawarp": "tab:red", "byol": "tab:blue", "supervised": "tab:green", "random_init": "tab:gray",
               "raw_pixels": "tab:olive"}
    intervals = [_wilson(results[n]["linear_acc"], int(results[n]["n_test"])) for n in names]
    errors = [[a - lo for a, (lo, _) in zip(accs, intervals)], [hi - a for a, (_, hi) in zip(accs, intervals)]]
    bars = ax.bar(names, accs, color=[palette.get(n, "tab:purple") for n in names], yerr=errors, capsize=4)
    for b, a, (_, hi) in zip(bars, accs, intervals):
        ax.text(b.get_x() + b.get_width() / 2, hi + 0.5, f"{a:.1f}", ha="center")
    ax.axhline(100 * CHANCE, ls="--", c="k", lw=0.8, label="chance (7 classes)")
    ax.set_ylabel("linear-probe accuracy (%)")
    n_test = int(next(iter(results.values()))["n_test"])
    ax.set_title(f"SyntheticFaces test split, one seed ({n_test:,} faces; bars: 95 % intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_views(path: str, run_dir: str, seed: int = 0, faces: int = 4, num_negatives: int = 3) -> str:
    """cwarp-preview's figure (crops, views, warped negatives with their warp arrows) of a few synthetic
    faces, through the augmentation of the run in run_dir."""
    import torch

    from cwarp.apps.preview import make_figure
    from cwarp.data import SyntheticFaces
    from cwarp.models import load_checkpoint
    from cwarp.train.config import migrate
    from cwarp.train.trainer import build_augment

    cfg = migrate(load_checkpoint(run_dir)["config"])
    ds = SyntheticFaces(faces, image_size=cfg.data.image_size, seed=seed)
    images, labels, landmarks = ds.tensors()
    aug = build_augment(cfg, num_negatives=num_negatives)
    make_figure(images, aug, path, landmarks=landmarks, generator=torch.Generator().manual_seed(seed),
                row_labels=[ds.classes[int(y)] for y in labels])
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cwarp.apps.demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join("results", "demo"), help="where runs, plots and summary go")
    p.add_argument("--seed", type=int, default=DEMO_SEED,
                   help="seed of every pretraining and probe (the default chose nothing: docs/experiments.md)")
    p.add_argument("--fresh", action="store_true", help="retrain even where a finished matching run exists")
    p.add_argument("--skip-benchmark", action="store_true", help="skip the warp throughput timing")
    p.add_argument("--supervised", action="store_true",
                   help="also train the supervised reference (the labels, the same budget)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's budget (every method)")
    p.add_argument("--num-train", type=int, default=None, help="synthetic faces to pretrain on")
    p.add_argument("--image-size", type=int, default=None, help="side of the faces, in pixels")
    p.add_argument("--arch", default=None, help=f"backbone instead of {DEMO_RECIPE['arch']} (cwarp-train --arch)")
    p.add_argument("--probe-test", type=int, default=None, help="test faces for the probes")
    return p


def _pretrain_all(args, overrides: dict, recipe: dict) -> Optional[Dict[str, dict]]:
    """{method: train summary}, or None when Ctrl-C stopped one."""
    results = {}
    for method in DEMO_METHODS + (("supervised",) if args.supervised else ()):
        d = os.path.join(args.out, "runs", method)
        verb = "training" if method == "supervised" else "pretraining"
        print(f"[demo] {verb} {method} ({recipe['epochs']} epochs on {recipe['num_train']} synthetic faces)",
              flush=True)
        res = pretrain(demo_config(method, d, seed=args.seed, overrides=overrides), fresh=args.fresh)
        if res["status"] == "interrupted":
            print(f"[demo] stopped during {method} (step {res['step']}/{res['total_steps']}); run the same "
                  f"command again to resume", file=sys.stderr)
            return None
        if res.get("already_complete"):
            print(f"[demo] reused the finished run in {d} (--fresh retrains)", flush=True)
        results[method] = res
    return results


def _run(args) -> int:
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    speed = None if args.skip_benchmark else run_benchmark()
    if speed:
        print(f"[demo] {speed}", flush=True)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("num_train", args.num_train),
                                   ("image_size", args.image_size), ("arch", args.arch),
                                   ("probe_test", args.probe_test)) if v is not None}
    recipe = dict(DEMO_RECIPE, **overrides)
    trained = _pretrain_all(args, overrides, recipe)
    if trained is None:
        return 130
    run_dirs = {m: r["out"] for m, r in trained.items()}
    timings = {f"pretrain_{m}_s": r["seconds"] for m, r in trained.items()}
    timings.update({f"online_eval_{m}_s": r.get("eval_seconds", 0.0) for m, r in trained.items()})
    print("[demo] probing the frozen features with a linear classifier", flush=True)
    t1 = time.perf_counter()
    arch = trained["contrawarp"]["config"].arch
    results = probe_all({m: os.path.join(d, "checkpoint.pt") for m, d in run_dirs.items()}, arch=arch,
                        image_size=int(recipe["image_size"]), num_train=int(recipe["num_train"]),
                        num_test=int(recipe["probe_test"]), seed=args.seed)
    timings["probe_s"] = time.perf_counter() - t1
    print("\n" + _table(results) + "\n")
    gap = gap_to_byol(results)
    if gap is not None:
        print(_gap_line(gap, int(results["contrawarp"]["n_test"])))
    print(_meaning(results, recipe, trained["contrawarp"]["step"]))
    curves = {m: online_knn(d) for m, d in run_dirs.items()}
    plots = [_loss_plot(os.path.join(args.out, "loss_curves.png"), run_dirs),
             _accuracy_plot(os.path.join(args.out, "accuracy.png"), results),
             save_views(os.path.join(args.out, "views.png"), run_dirs["contrawarp"], args.seed)]
    timings["total_s"] = time.perf_counter() - t0
    _write_summary(args, results, recipe, trained, timings, plots, speed, curves, gap)
    print(f"\n[demo] done in {timings['total_s'] / 60:.1f} min; wrote {args.out}/summary.json and "
          f"{', '.join(os.path.basename(x) for x in plots)}")
    return 0


def _write_summary(args, results, recipe, trained, timings, plots, speed, curves, gap) -> None:
    import torch

    from cwarp.train.trainer import autocast_dtype

    cfg = trained["contrawarp"]["config"]
    summary = {key: {name: r[key] for name, r in results.items() if key in r}
               for key in ("linear_acc", "knn_acc", "map_at_r", "per_class_acc", "n_train", "n_test")}
    autocast = autocast_dtype(cfg.precision, torch.device(cfg.device))
    summary.update(recipe=recipe, seed=args.seed, arch=cfg.arch, timings=timings, autocast=str(autocast or "fp32"),
                   warp_speed=speed, plots=[os.path.basename(x) for x in plots], online_knn=curves,
                   contrawarp_minus_byol=gap)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: 0 when done, 130 when Ctrl-C stopped it (a rerun resumes)."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\n[demo] stopped; the last checkpoints were kept, run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
