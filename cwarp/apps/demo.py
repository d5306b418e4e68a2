"""The README's main job: ``python -m cwarp.apps.demo`` (what ``make demo`` runs).

On a CPU, with nothing downloaded, it

1. runs the short warp throughput benchmark (benchmarks/warp_throughput.py --quick);
2. pretrains ContraWarping and a BYOL-only baseline with identical budgets on
   the built-in SyntheticFaces, and, with the same budget and the labels, the
   supervised reference (what the budget allows at all);
3. probes the three, plus a randomly initialized backbone and raw pixels, with
   a linear classifier on frozen features (train split -> test split);
4. prints one table and writes results/demo/summary.json, loss_curves.png,
   accuracy.png and views.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

__all__ = ["main", "demo_config", "pretrain", "probe_all", "DEMO_RECIPE", "METHODS"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo's budget, sized for 2 CPU cores and 15 minutes in all. Every method
# gets exactly these settings; only --method differs. See cwarp.train.trainer.DEFAULTS
# and the README section "Pretraining recipe, and what to expect".
DEMO_RECIPE: Dict[str, object] = dict(image_size=48, num_train=1500, epochs=3, batch_size=128, probe_test=1400)
# The two self-supervised methods, then the supervised reference (same budget, with labels).
METHODS = ("contrawarp", "byol", "supervised")


def demo_config(method: str, out: str, *, seed: int = 0, arch: Optional[str] = None,
                overrides: Optional[dict] = None) -> List[str]:
    """cwarp-train arguments of one demo pretraining."""
    from cwarp.train.trainer import compact_arch

    r = dict(DEMO_RECIPE, **(overrides or {}))
    argv = ["--format", "synthetic", "--method", method, "--out", out, "--arch", arch or compact_arch(),
            "--image-size", str(r["image_size"]), "--num-train", str(r["num_train"]),
            "--epochs", str(r["epochs"]), "--batch-size", str(r["batch_size"]), "--seed", str(seed),
            "--log-every", "5"]
    for k, v in r.items():
        if k in ("image_size", "num_train", "epochs", "batch_size", "probe_test"):
            continue
        flag = "--" + k.replace("_", "-")
        argv += [flag, ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)]
    return argv


def run_benchmark(python: str = sys.executable) -> Optional[str]:
    """benchmarks/warp_throughput.py --quick; only its absence is tolerated."""
    script = os.path.join(ROOT, "benchmarks", "warp_throughput.py")
    if not os.path.exists(script):
        print(f"[demo] skipping the throughput benchmark: {script} is not in this checkout", flush=True)
        return None
    print("[demo] warp throughput benchmark (--quick)", flush=True)
    proc = subprocess.run([python, script, "--quick"], cwd=ROOT, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"benchmarks/warp_throughput.py --quick failed with exit code {proc.returncode}")
    return proc.stdout


def pretrain(argv: Sequence[str]) -> Dict[str, object]:
    from cwarp.train import trainer as T

    cfg, explicit = T.config_from_args(list(argv))
    t0 = time.perf_counter()
    res = T.train(cfg, explicit)
    if res["status"] != "done":
        raise RuntimeError(f"pretraining {cfg['out']} stopped early ({res['status']})")
    res["seconds"] = time.perf_counter() - t0
    return res


def probe_all(runs: Dict[str, str], *, arch: str, image_size: int, num_train: int, num_test: int,
              seed: int = 0, data_seed: int = 0, device: str = "cpu",
              baselines: bool = True) -> Dict[str, dict]:
    """Linear probe (and kNN, mAP@R) of each checkpoint, random init and raw pixels.

    runs: {name: checkpoint path}. The probe's train split is the pretraining
    set (labels are used only here); the test split is SyntheticFaces' held-out
    split, rendered from a different random stream. Nothing is tuned on it.
    """
    from cwarp.train.checkpoint import load_checkpoint
    from cwarp.data import build_dataset
    from cwarp.train.models import build_backbone
    from cwarp.eval.probe import evaluate_features, extract_features

    train_ds = build_dataset("synthetic", None, "train", image_size, num_samples=num_train, seed=data_seed)
    test_ds = build_dataset("synthetic", None, "test", image_size, num_samples=num_test, seed=data_seed)
    n_cls = len(train_ds.classes)
    dev = torch.device(device)
    results = {}

    tr_y, te_y = train_ds.tensors()[1], test_ds.tensors()[1]

    def feats(backbone, norm):
        kw = dict(mean=norm.get("mean"), std=norm.get("std"), progress=False)
        return (extract_features(backbone, train_ds, 256, dev, **kw), tr_y,
                extract_features(backbone, test_ds, 256, dev, **kw), te_y)

    c: dict = {}
    for name, path in runs.items():
        state = load_checkpoint(path)
        c = state["config"]
        bb = build_backbone(c["arch"], c["in_channels"], c["image_size"])
        bb.load_state_dict(state["backbone"])
        results[name] = evaluate_features(*feats(bb, c), n_cls, seed=seed)
    if not baselines:
        return results
    torch.manual_seed(seed)
    bb = build_backbone(arch, train_ds.channels, image_size)
    results["random_init"] = evaluate_features(*feats(bb, c), n_cls, seed=seed)
    tr_i, tr_y, _ = train_ds.tensors()
    te_i, te_y, _ = test_ds.tensors()
    px = lambda t: t.flatten(1).float() / 255.0  # noqa: E731
    results["raw_pixels"] = evaluate_features(px(tr_i), tr_y, px(te_i), te_y, n_cls, seed=seed)
    return results


def _table(results: Dict[str, dict]) -> str:
    head = f"{'representation':<14} {'linear acc':>10} {'kNN acc':>8} {'mAP@R':>7}"
    lines = [head, "-" * len(head)]
    for name, r in results.items():
        lines.append(f"{name:<14} {100 * r['linear_acc']:>9.1f}% {100 * r['knn_acc']:>7.1f}% "
                     f"{100 * r.get('map_at_r', float('nan')):>6.1f}%")
    return "\n".join(lines)


def _plots(out_dir: str, run_dirs: Dict[str, str], results: Dict[str, dict], image_size: int, seed: int) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, d in run_dirs.items():
        with open(os.path.join(d, "log.jsonl")) as f:
            rows = [json.loads(x) for x in f]
        ax.plot([r["step"] for r in rows], [r["loss_avg"] for r in rows], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss (each method on its own objective)")
    ax.legend()
    fig.tight_layout()
    written.append(os.path.join(out_dir, "loss_curves.png"))
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(results)
    accs = [100 * results[n]["linear_acc"] for n in names]
    palette = {"contrawarp": "tab:red", "byol": "tab:blue", "supervised": "tab:green", "random_init": "tab:gray",
               "raw_pixels": "tab:olive"}
    bars = ax.bar(names, accs, color=[palette.get(n, "tab:purple") for n in names])
    for b, a in zip(bars, accs):
        ax.text(b.get_x() + b.get_width() / 2, a + 0.5, f"{a:.1f}", ha="center")
    ax.axhline(100 / 7, ls="--", c="k", lw=0.8, label="chance (7 classes)")
    ax.set_ylabel("linear-probe accuracy (%)")
    ax.set_title("SyntheticFaces test split")
    ax.legend()
    fig.tight_layout()
    written.append(os.path.join(out_dir, "accuracy.png"))
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    written.append(save_views_preview(os.path.join(out_dir, "views.png"), image_size, seed))
    return written


def save_views_preview(path: str, image_size: int, seed: int = 0, n: int = 4, num_negatives: int = 3) -> str:
    """A grid: source face, view 1, view 2, and view 2's warped negatives, for n faces."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cwarp.data import SyntheticFaces
    from cwarp.train.trainer import DEFAULTS, build_augment

    ds = SyntheticFaces(n, image_size=image_size, seed=seed)
    images, labels, landmarks = ds.tensors()
    aug = build_augment(dict(DEFAULTS, image_size=image_size), num_negatives=num_negatives)
    views = aug(images, landmarks=landmarks, generator=torch.Generator().manual_seed(seed))
    cols = [("source", images.float() / 255.0), ("view 1", views.pos1), ("view 2", views.pos2)]
    cols += [(f"negative {j + 1}", views.negatives[:, j]) for j in range(views.negatives.shape[1])]

    def show(t):
        t = t.detach().float()
        t = (t - t.amin()) / (t.amax() - t.amin()).clamp_min(1e-6)   # undo any normalization for display
        return t.permute(1, 2, 0).squeeze(-1).numpy()

    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n))
    for i in range(n):
        for j, (title, batch) in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(show(batch[i]), cmap="gray" if batch.shape[1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[i, 0].set_ylabel(ds.classes[int(labels[i])], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cwarp.apps.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join("results", "demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-benchmark", action="store_true")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's budget (both methods)")
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--probe-test", type=int, default=None, help="test faces for the probes")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    if not args.skip_benchmark:
        run_benchmark()
    overrides = {k: v for k, v in (("epochs", args.epochs), ("num_train", args.num_train),
                                   ("image_size", args.image_size), ("probe_test", args.probe_test)) if v is not None}
    recipe = dict(DEMO_RECIPE, **overrides)
    run_dirs, timings = {}, {}
    for method in METHODS:
        d = os.path.join(args.out, "runs", method)
        if os.path.exists(os.path.join(d, "checkpoint.pt")):
            os.remove(os.path.join(d, "checkpoint.pt"))   # the demo always starts fresh
        if os.path.exists(os.path.join(d, "log.jsonl")):
            os.remove(os.path.join(d, "log.jsonl"))
        verb = "training" if method == "supervised" else "pretraining"
        print(f"[demo] {verb} {method} ({recipe['epochs']} epochs on {recipe['num_train']} synthetic faces)",
              flush=True)
        res = pretrain(demo_config(method, d, seed=args.seed, overrides=overrides) + ["--progress", "false"])
        run_dirs[method], timings[f"pretrain_{method}_s"] = d, res["seconds"]
    print("[demo] probing", flush=True)
    t1 = time.perf_counter()
    with open(os.path.join(run_dirs["contrawarp"], "config.json")) as f:
        run_cfg = json.load(f)
    arch = run_cfg["arch"]
    results = probe_all({m: os.path.join(d, "checkpoint.pt") for m, d in run_dirs.items()}, arch=arch,
                        image_size=int(recipe["image_size"]), num_train=int(recipe["num_train"]),
                        num_test=int(recipe["probe_test"]), seed=args.seed)
    timings["probe_s"] = time.perf_counter() - t1
    print()
    print(_table(results))
    plots = _plots(args.out, run_dirs, results, int(recipe["image_size"]), args.seed)
    timings["total_s"] = time.perf_counter() - t0
    summary = {key: {name: r[key] for name, r in results.items() if key in r}
               for key in ("linear_acc", "knn_acc", "map_at_r", "per_class_acc", "n_train", "n_test")}
    from cwarp.train.trainer import autocast_dtype
    autocast = autocast_dtype(run_cfg["precision"], torch.device("cpu"))
    summary.update(recipe=recipe, seed=args.seed, arch=arch, timings=timings, autocast=str(autocast or "fp32"),
                   plots=[os.path.basename(x) for x in plots])
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    print(f"\n[demo] done in {timings['total_s'] / 60:.1f} min; wrote {args.out}/summary.json and "
          f"{', '.join(os.path.basename(x) for x in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
