"""The evaluation protocol of benchmarks/select_recipe.py and benchmarks/ablation.py.

Every pretraining sees the demo's faces (SyntheticFaces' train split of data
seed 0, or the hard faces'); labels are used only by the probes. Two probe
splits, each from a data seed of its own, so no face is shared:

- VALIDATION (data seed 1): a linear probe fitted on 1,536 faces of its
  train split and scored on the 1,400 of its test split. Every choice (the
  recipe, its levers, each baseline's settings) is made here.
- TEST (data seed TEST_DATA_SEED): fitted on 1,536 faces of its train split
  and scored on 2,800 of its test split. It reports the frozen recipe; no run
  was scored on this data seed before the recipe was frozen.

Pretrainings are resumable: a finished run with the same settings is reused
and a stopped one resumed (cwarp.apps.demo.pretrain); each writes how long
it took to RUN/timing.json. Probe results are cached beside the checkpoint
(RUN/probe_<split>.json), keyed by the checkpoint file and the split, so a
rerun of a script probes only what changed.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # this checkout's cwarp, not an installed one

# A data seed that no run had been scored on before the recipe was frozen (docs/experiments.md).
TEST_DATA_SEED = 33
VALIDATION_DATA_SEED = 1
PRETRAIN_DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """A probe split: fitted on `train` faces of the train split of `data_seed`, scored on `test` faces of its
    test split."""
    name: str
    data_seed: int
    train: int
    test: int


VALIDATION = Split("val", VALIDATION_DATA_SEED, 1536, 1400)
TEST = Split("test", TEST_DATA_SEED, 1536, 2800)
SPLITS = {s.name: s for s in (VALIDATION, TEST)}


# ------------------------------------------------------------------ pretraining

def _timed_pretrain(argv: Sequence[str], threads: int) -> Dict[str, object]:
    """demo.pretrain(argv) on `threads` threads, reusing or resuming what --out holds; writes RUN/timing.json for
    a run it trained (a reused one keeps its own)."""
    import torch

    from cwarp.apps import demo

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    res = demo.pretrain(argv)
    seconds = time.perf_counter() - t0
    if res["status"] == "done" and not res.get("already_complete"):
        # A resumed run's figure is the time since it resumed: "resumed" says so.
        write_cache(os.path.join(res["out"], "timing.json"),
                    {"seconds": seconds, "threads": threads, "resumed": bool(res["config"].bookkeeping.resume)})
    return {"status": res["status"], "out": res["out"]}


def pretrain_runs(jobs: Sequence[Tuple[str, List[str]]], parallel: int, threads: Optional[int] = None) -> None:
    """Pretrain every (out, cwarp-train argv) of jobs, `parallel` at a time in worker processes with `threads`
    threads each (default: this process's threads shared out); finished runs are reused. Exits 130 when Ctrl-C
    stopped a run (a rerun resumes it)."""
    import concurrent.futures
    import multiprocessing

    import torch

    threads = threads or max(1, torch.get_num_threads() // max(1, parallel))
    if parallel <= 1:
        statuses = []
        for _, argv in jobs:   # one at a time: a stopped run stops the rest (a rerun resumes it)
            statuses.append(_timed_pretrain(argv, threads))
            if statuses[-1]["status"] != "done":
                break
    else:
        with concurrent.futures.ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as ex:
            statuses = list(ex.map(_timed_pretrain, [argv for _, argv in jobs], [threads] * len(jobs)))
    for (out, _), status in zip(jobs, statuses):
        if status["status"] != "done":
            print(f"stopped during {out}; run the same command again to resume", file=sys.stderr)
            raise SystemExit(130)


def run_key(argv: Sequence[str]) -> str:
    """A folder name for the run cwarp-train argv describes: its method and a hash of the settings that change
    what it computes and differ from cwarp-train's defaults (DEFAULTS), the seed and --out left out: the same
    settings give the same name, and an option added later with a default that keeps old runs as they were
    does not rename them."""
    import hashlib

    from cwarp.train.config import DEFAULTS, DERIVED, RESUME_MUTABLE, config_from_argv

    flat = config_from_argv(list(argv)).to_flat()
    kept = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(flat.items())
            if k in DEFAULTS and k not in RESUME_MUTABLE and k not in DERIVED and k != "seed"
            and flat[k] != (list(DEFAULTS[k]) if isinstance(DEFAULTS[k], tuple) else DEFAULTS[k])}
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]
    return f"{flat['method']}-{digest}"


def run_summary(out: str) -> Dict[str, Optional[float]]:
    """What a finished run's log says about its end: seconds (timing.json); for ContraWarping the InfoNCE
    term and warp_acc of its last logged step; the online kNN accuracy at the last evaluation and at the best
    one, with its step (whether the run was still improving)."""
    rows = []
    if os.path.exists(os.path.join(out, "log.jsonl")):
        with open(os.path.join(out, "log.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "knn_acc" in r]
    last = train_rows[-1] if train_rows else {}
    timing = read_cache(os.path.join(out, "timing.json")) or {}
    best = max(evals, key=lambda r: r["knn_acc"]) if evals else {}
    return {"seconds": timing.get("seconds"), "nce_term": last.get("nce_term"), "warp_acc": last.get("warp_acc"),
            "step": last.get("step"), "knn_last": evals[-1]["knn_acc"] if evals else None,
            "knn_best": best.get("knn_acc"), "knn_best_step": best.get("step")}


# -------------------------------------------------------------------- probes

@functools.lru_cache(maxsize=8)
def _faces(fmt: str, split: str, data_seed: int, count: int, image_size: int):
    from cwarp.data import build_dataset

    return build_dataset(fmt, None, split, image_size, num_samples=count, seed=data_seed)


def _features(backbone, faces, norm):
    import torch

    from cwarp.eval.probe import extract_features

    return extract_features(backbone, faces, 256, torch.device("cpu"), mean=norm.get("mean"), std=norm.get("std"),
                            progress=False)


def _probe(train_x, test_x, split: Split, fmt: str, image_size: int, seed: int) -> dict:
    from cwarp.eval.probe import evaluate_features

    train = _faces(fmt, "train", split.data_seed, split.train, image_size)
    test = _faces(fmt, "test", split.data_seed, split.test, image_size)
    res = evaluate_features(train_x, train.labels, test_x, test.labels, len(train.classes), seed=seed,
                            class_names=train.classes)
    res["labels"] = test.labels.tolist()
    res["balanced_acc"] = _balanced(res["per_class_acc"])
    return res


def _balanced(per_class: Dict[str, Optional[float]]) -> float:
    values = [v for v in per_class.values() if v is not None]
    return sum(values) / len(values)


def probe_checkpoint(run_dir: str, split: Split, fmt: str, seed: int) -> dict:
    """The linear probe (cwarp.eval.probe) of run_dir's checkpoint on `split` of the `fmt` faces, with its
    per-face predictions and the test labels; cached in RUN/probe_<split>.json."""
    from cwarp.models import backbone_from_checkpoint

    path = os.path.join(run_dir, "checkpoint.pt")
    st = os.stat(path)
    key = {"checkpoint": [st.st_size, st.st_mtime_ns], "split": dataclasses.asdict(split), "format": fmt,
           "seed": seed}
    cache = os.path.join(run_dir, f"probe_{split.name}.json")
    cached = read_cache(cache)
    if cached is not None and cached.get("key") == key:
        return cached["result"]
    backbone, config = backbone_from_checkpoint(path)
    size = int(config["image_size"])
    xs = [_features(backbone, _faces(fmt, part, split.data_seed, count, size), config)
          for part, count in (("train", split.train), ("test", split.test))]
    result = _probe(*xs, split, fmt, size, seed)
    write_cache(cache, {"key": key, "result": result})
    return result


def probe_baselines(out_root: str, split: Split, fmt: str, seed: int, arch: str, image_size: int) -> Dict[str, dict]:
    """{random_init, raw_pixels}: the probe of an untrained backbone (seeded by `seed`) and of the pixels;
    cached under out_root/baselines/."""
    import torch

    from cwarp.models import build_backbone

    cache = os.path.join(out_root, "baselines", f"{fmt}_{split.name}_s{seed}_{arch}_{image_size}.json")
    key = {"split": dataclasses.asdict(split), "format": fmt, "seed": seed, "arch": arch, "image_size": image_size}
    cached = read_cache(cache)
    if cached is not None and cached.get("key") == key:
        return cached["result"]
    train = _faces(fmt, "train", split.data_seed, split.train, image_size)
    test = _faces(fmt, "test", split.data_seed, split.test, image_size)
    torch.manual_seed(seed)
    backbone = build_backbone(arch, train.channels, image_size)
    result = {"random_init": _probe(_features(backbone, train, {}), _features(backbone, test, {}), split, fmt,
                                    image_size, seed)}
    pixels = [f.images.flatten(1).float() / 255.0 for f in (train, test)]
    result["raw_pixels"] = _probe(*pixels, split, fmt, image_size, seed)
    write_cache(cache, {"key": key, "result": result})
    return result


# --------------------------------------------------------------------- files

def read_cache(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_cache(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)   # atomic: a reader never sees half a file
