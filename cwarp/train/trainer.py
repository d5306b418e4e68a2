"""The training loop behind cwarp-train: BYOL pretraining with ContraWarping negatives.

``--method contrawarp``: BYOL positives from two global views plus InfoNCE
over N locally warped negatives of the second view (scored against the first
view's prediction, ``--nce-on p1``), through the fused
``cwarp.contrastive_loss``. ``--method byol``: the same pipeline with no
negatives (the baseline). ``--method supervised``: the same backbone, views,
optimizer and budget trained with the labels. The methods' losses live in
``cwarp.train.methods``, the online evaluation (``--eval-every``) in
``cwarp.train.monitor``; this module owns the loop, checkpoints and logging.
Views are rendered by ``cwarp.ContraWarpAugment`` on the training device from
explicit, seeded generators; ``--resume`` continues bit-for-bit on the CPU.
Under torchrun, several processes train with DistributedDataParallel.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch
from torch import nn

from cwarp.train import checkpoint as ckpt
from cwarp.train import distributed as cdist
from cwarp.train.config import AUTO_ARCH, RESUME_MUTABLE, ConfigError, RunConfig, migrate, validate, write_config_files
from cwarp.train.host_memory import keep_freed_memory
from cwarp.train.methods import build_method, warp_accuracy
from cwarp.train.optim import WarmupCosine, build_optimizer

__all__ = ["Trainer", "train", "build_augment", "channels_last", "autocast_dtype", "load_data", "resume_state",
           "TrainingDiverged", "DataError", "warp_accuracy"]


class TrainingDiverged(FloatingPointError):
    """The loss went NaN or Inf."""


class DataError(ValueError):
    """The training data cannot be read (missing folder, corrupt image, empty split)."""


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the networks, or None for plain fp32.

    "auto" is bf16 on CUDA and fp32 on the CPU, where bf16 is opt-in: faster
    on CPUs with native bf16, but its features probed worse at the demo's
    budget (docs/experiments.md, "Other levers"). The loss always runs in fp32.
    """
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def _rng_state(aug_gen: torch.Generator) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "augment": aug_gen.get_state(),
             "python": repr(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any], aug_gen: torch.Generator) -> None:
    import ast

    torch.set_rng_state(state["torch"])
    aug_gen.set_state(state["augment"])
    random.setstate(ast.literal_eval(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_augment(cfg: RunConfig, num_negatives: Optional[int] = None):
    """The ContraWarpAugment of a run's config (docs/api.md)."""
    import cwarp

    v, n = cfg.views, cfg.negatives
    s = v.jitter_strength
    return cwarp.ContraWarpAugment(
        size=cfg.data.image_size, crop_scale=tuple(v.crop_scale), rotation=v.rotation,
        brightness=0.4 * s, contrast=0.4 * s, saturation=0.2 * s, hue=0.1 * s, grayscale_p=v.grayscale_p,
        num_negatives=n.num_negatives if num_negatives is None else num_negatives,
        warps_per_negative=n.warps_per_negative, warp_radius=tuple(n.warp_radius),
        warp_magnitude=tuple(n.warp_magnitude), kind=n.warp_kind, warp_centers=n.warp_centers,
        negative_kind=n.negative_kind)


def channels_last(cfg: RunConfig, device: torch.device) -> bool:
    """Whether the networks run in channels_last: --memory-format, auto meaning on CUDA only (on the CPU,
    torch's BatchNorm in channels_last computes its statistics less accurately; docs/experiments.md)."""
    fmt = cfg.memory_format
    return fmt == "channels_last" or (fmt == "auto" and device.type == "cuda")


class Trainer:
    """Everything one process needs for training; ``train()`` drives it.

    Split into ``make_views`` (augmentation) and ``train_step`` (forward,
    loss, backward, optimizer, EMA) so benchmarks can time the two apart.
    ``cfg`` must be validated; ``self.cfg`` adds what the trainer derives
    (in_channels, the views' mean and std), as checkpoints save it.
    """

    def __init__(self, cfg: RunConfig, info: cdist.DistInfo, device: torch.device,
                 in_channels: int, steps_per_epoch: int, num_classes: Optional[int] = None):
        from cwarp.train.models import build_backbone

        self.info, self.device = info, device
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = cfg.optimisation.epochs * steps_per_epoch
        self.method = build_method(cfg, info)
        self.supervised = cfg.method == "supervised"
        # Same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(cfg.seed)
        model = self.method.build_model(build_backbone(cfg.arch, in_channels, cfg.data.image_size), num_classes)
        if cfg.byol.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(device)
        self.channels_last = channels_last(cfg, device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            # In place (nn.Module.compile): parameters, buffers and state_dict keys stay the module's own.
            for name in ("backbone", "target_backbone"):
                if hasattr(model, name):
                    getattr(model, name).compile()
        self.model = model
        self.ddp = None
        if info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        o = cfg.optimisation
        self.optimizer = build_optimizer(o.optimizer, model.online_parameters(), lr=o.lr,
                                         weight_decay=o.weight_decay, momentum=o.momentum)
        self.schedule = WarmupCosine(self.optimizer, self.total_steps, round(o.warmup_epochs * steps_per_epoch),
                                     o.final_lr_ratio)
        self.augment = build_augment(cfg).to(device)
        # The probe normalizes its inputs with the checkpoint config's mean/std.
        self.cfg = cfg.replace(in_channels=int(in_channels), mean=list(self.augment.mean),
                               std=list(self.augment.std))
        self.method.cfg = self.cfg
        # Augmentation randomness: one explicit CPU generator per rank (the
        # sampler draws on the generator's device, so runs agree across devices).
        self.aug_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7919 * info.rank + 1)
        self.step = 0
        self.amp_dtype = autocast_dtype(cfg.precision, device)
        self.autocast = (torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                         else nullcontext())

    def make_views(self, images: torch.Tensor, landmarks: Optional[torch.Tensor]):
        images = images.to(self.device, non_blocking=True)
        if landmarks is not None:
            landmarks = landmarks.to(self.device, non_blocking=True)
        views = self.augment(images, landmarks=landmarks, generator=self.aug_gen)
        pos1, pos2, neg = views.pos1, views.pos2, views.negatives
        neg = neg if neg is not None and neg.shape[1] > 0 else None
        if self.channels_last:
            cl = torch.channels_last
            pos1, pos2 = pos1.contiguous(memory_format=cl), pos2.contiguous(memory_format=cl)
            if neg is not None:   # (B, N, C, S, S) whose flatten(0, 1) is channels_last
                neg = neg.flatten(0, 1).contiguous(memory_format=cl).unflatten(0, neg.shape[:2])
        return pos1, pos2, neg

    def train_step(self, pos1, pos2, neg, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One optimisation step; returns the (detached) loss tensor, no host sync.

        ``labels`` (B,) are used by --method supervised only, which trains on
        view 1 alone."""
        net = self.ddp if self.ddp is not None else self.model
        net.train()
        loss = self.method.step_loss(net, pos1, pos2, neg, labels, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.method.after_step(self.model, self.step, self.total_steps)
        self.step += 1
        return loss.detach()

    def state_dict(self, epoch: int, step_in_epoch: int) -> Dict[str, Any]:
        return {
            "config": self.cfg.to_flat(),
            "backbone": self.model.backbone.state_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "step": self.step,
            "rng": _rng_state(self.aug_gen),
            "world_size": self.info.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = int(state["step"])
        _set_rng_state(state["rng"], self.aug_gen)


class StopFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM asks for a clean stop after the
    current step and says so at once; a second Ctrl-C raises KeyboardInterrupt
    (the last checkpoint stays)."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\ncwarp-train: stopping after this step and saving a checkpoint (Ctrl-C again to quit at once)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# What the image decoders (libpng, libjpeg) print on their own about a file
# they fail on; the error or the --skip-corrupt warning already names it.
DECODER_CHATTER = ("libpng error:", "libpng warning:", "Corrupt JPEG data:", "Premature end of JPEG file")


@contextlib.contextmanager
def _decoder_chatter_filtered():
    """Route the process's stderr (fd 2) through a file while decoding, then
    pass on every line but DECODER_CHATTER."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith(DECODER_CHATTER):
                    sys.stderr.write(line)


@contextlib.contextmanager
def _recorded_data_warnings():
    """Record the warnings raised while reading data (the caller prints each as one line), without the
    decoders' own chatter and without the warning cwarp.data silences."""
    from cwarp.data.decode import silence_decoder_deprecation

    with warnings.catch_warnings(record=True) as caught, _decoder_chatter_filtered():
        warnings.simplefilter("always")
        silence_decoder_deprecation()
        yield caught


def load_data(cfg: RunConfig):
    """(dataset, images, labels, landmarks) of a run config's training split.

    Raises DataError (one line, naming the data) when it cannot be read; a
    --skip-corrupt warning is printed as one line.
    """
    from cwarp.data import build_dataset

    d = cfg.data
    try:
        with _recorded_data_warnings() as caught:
            ds = build_dataset(d.format, d.data, "train", d.image_size, num_samples=d.num_train, seed=d.data_seed,
                               skip_corrupt=d.skip_corrupt)
            images, labels, landmarks = ds.tensors()
    except (ValueError, OSError, RuntimeError) as e:
        hint = "; pass --skip-corrupt to leave unreadable images out" if "decode" in str(e).lower() else ""
        raise DataError(f"--data {d.data}: {' '.join(str(e).split())}{hint}") from e
    for w in caught:
        print(f"cwarp-train: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    if len(images) == 0:
        raise DataError(f"--data {d.data}: the {d.format} training split is empty")
    return ds, images, labels, landmarks


def _truncate_log(path: str, max_step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (a crash
    between two checkpoints would otherwise log those steps twice)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= max_step]
    with open(path, "w") as f:
        f.writelines(rows)


def resume_state(cfg: RunConfig, explicit: Set[str]) -> Tuple[RunConfig, Optional[Dict[str, Any]]]:
    """(the config to run, the checkpoint to resume or None).

    Without --resume: cfg validated, and --out must not hold a checkpoint.
    With --resume: the checkpoint's config (migrated), with the explicitly
    given RESUME_MUTABLE fields changed; any other explicit field that
    disagrees with the checkpoint is a ConfigError.
    """
    out = cfg.out
    if out is None:
        raise ConfigError("--out: a run folder is required (on the command line or in --config)")
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if not cfg.bookkeeping.resume:
        cfg = validate(cfg)
        if os.path.exists(ckpt_path):
            raise ConfigError(f"--out: {out} already holds a checkpoint; pass --resume to continue it "
                              f"or choose another --out")
        return cfg, None
    if not os.path.exists(ckpt_path):
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
    state = ckpt.load_checkpoint(ckpt_path)
    # Fields the checkpoint predates count with the value it ran with, so an
    # explicit flag that disagrees is a conflict, not silently ignored.
    try:
        saved = migrate(state["config"])
    except ConfigError as e:
        raise ConfigError(f"--resume: checkpoint {ckpt_path}: {e}") from None
    requested, saved_flat = cfg.to_flat(), saved.to_flat()
    # --arch auto asks for no particular backbone: the checkpoint keeps its own.
    keys = sorted(k for k in explicit if k not in RESUME_MUTABLE and not (k == "arch" and cfg.arch == AUTO_ARCH))
    conflicts = ckpt.config_conflicts(saved_flat, requested, keys)
    if conflicts:
        k, (old, new) = next(iter(sorted(conflicts.items())))
        names = ", ".join(f"--{f.replace('_', '-')}" for f in sorted(conflicts))
        raise ConfigError(f"--resume: the checkpoint's config conflicts with the command line on {names} "
                          f"(e.g. {k}: checkpoint has {old!r}, command line has {new!r})")
    changes = {k: requested[k] for k in RESUME_MUTABLE if k in explicit}
    return saved.replace(**{**changes, "resume": True}), state


def train(cfg: RunConfig, explicit: Optional[Set[str]] = None,
          step_hook: Optional[Callable[[int, float], None]] = None) -> Dict[str, Any]:
    """Run (or resume) one training job; returns a summary dict.

    status is "done" (with already_complete=True when a resumed run had
    nothing left to do) or "interrupted" (Ctrl-C or SIGTERM; resumable);
    eval_seconds is what the online evaluation took (set-up included).
    ``step_hook(step, loss_value)`` is called on rank 0 after each logged step
    (tests use it to interrupt a run).
    """
    explicit = set(cfg.to_flat()) if explicit is None else set(explicit)
    cfg, state = resume_state(cfg, explicit)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    if state is not None and int(state["epoch"]) >= cfg.optimisation.epochs:
        return {"status": "done", "already_complete": True, "out": cfg.out, "step": int(state["step"]),
                "total_steps": int(state["step"]), "checkpoint": ckpt_path, "config": cfg}
    if cfg.data.workers:
        torch.set_num_threads(cfg.data.workers)
    keep_freed_memory(cfg.reuse_freed_memory)
    device = torch.device(cfg.device)
    info = cdist.init_from_env(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    ds, images, labels, landmarks = load_data(cfg)
    run = _Run(cfg, info, device, ds, (images, labels, landmarks), step_hook)
    if state is not None:
        run.restore(state)
    del state
    return run.loop()


class _Run:
    """One training job's loop state: sampler, trainer, log, checkpoints."""

    def __init__(self, cfg: RunConfig, info, device, ds, tensors, step_hook):
        from torch.utils.data.distributed import DistributedSampler

        self.info, self.device, self.step_hook = info, device, step_hook
        self.images, self.labels, self.landmarks = tensors
        self.main_rank = info.rank == 0
        batch, n = cfg.optimisation.batch_size, len(self.images)
        if info.world_size > 1 and batch % info.world_size:
            raise ConfigError(f"--batch-size: {batch} is not divisible by the {info.world_size} processes")
        if n < batch:
            raise ConfigError(f"--batch-size: the training set has {n} images, fewer than one batch of "
                              f"{batch}; lower --batch-size or add data")
        self.local_batch = batch // info.world_size
        self.sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.trainer = Trainer(cfg, info, device, int(ds.channels), self.steps_per_epoch,
                               num_classes=len(ds.classes))
        self.cfg = self.trainer.cfg
        self.out = cfg.out
        self.ckpt_path = os.path.join(self.out, "checkpoint.pt")
        self.log_path = os.path.join(self.out, "log.jsonl")
        self.start = (0, 0)
        self.last_good_step = 0
        self.bad = torch.zeros((), dtype=torch.bool, device=device)   # any non-finite loss since the last check
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.loss_count = 0
        self.t_last, self.imgs_since = time.perf_counter(), 0
        self.progress = self.writer = None
        self.monitor = self._build_monitor(ds) if self.main_rank and self.cfg.evaluation.eval_every else None

    def _build_monitor(self, ds):
        """The online evaluation's bank and held-out set, made before the first step so a problem stops the run
        at once (one rank evaluates; the others wait at the next collective)."""
        from cwarp.train.monitor import OnlineEvaluator

        try:
            with _recorded_data_warnings() as caught:
                monitor = OnlineEvaluator(self.cfg, self.images, self.labels, ds.classes, self.device)
        except (ValueError, OSError, RuntimeError) as e:
            raise DataError(f"--eval-every: {' '.join(str(e).split())}") from e
        for w in caught:
            print(f"cwarp-train: warning: held-out images: {' '.join(str(w.message).split())}", file=sys.stderr)
        return monitor

    def restore(self, state: Dict[str, Any]) -> None:
        if state.get("world_size", 1) != self.info.world_size:
            raise ConfigError(f"--resume: the checkpoint was written by {state.get('world_size', 1)} processes, "
                              f"this run has {self.info.world_size}; an exact resume needs the same number")
        try:
            self.trainer.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as e:
            raise ckpt.CheckpointError(f"--resume: checkpoint {self.ckpt_path} does not fit this run's model or "
                                       f"optimizer: {type(e).__name__}: {' '.join(str(e).split())[:300]}") from e
        self.start = (int(state["epoch"]), int(state["step_in_epoch"]))
        self.last_good_step = self.trainer.step
        if self.main_rank:
            _truncate_log(self.log_path, self.trainer.step)

    def _open_outputs(self) -> None:
        if not self.main_rank:
            return
        write_config_files(self.cfg, self.out)
        if self.cfg.bookkeeping.progress:
            from tqdm import tqdm
            self.progress = tqdm(total=self.trainer.total_steps, initial=self.trainer.step, unit="step",
                                 desc=f"cwarp-train {self.cfg.method}", dynamic_ncols=True, file=sys.stderr)
        if self.cfg.bookkeeping.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(self.out, "tb"))
            except ImportError:
                print("cwarp-train: warning: --tensorboard ignored: the tensorboard package is not installed",
                      file=sys.stderr)

    def _close_outputs(self) -> None:
        if self.progress is not None:
            self.progress.close()
        if self.writer is not None:
            self.writer.close()

    def _evaluation_missed(self) -> bool:
        """Whether the step resumed from was due an evaluation that the log lacks (a stop skips it; the
        restored weights are that step's, so it can be made up)."""
        step = self.trainer.step
        if self.monitor is None or step == 0 or not self.monitor.due(step, self.trainer.total_steps):
            return False
        if not os.path.exists(self.log_path):
            return True
        with open(self.log_path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return not any(r.get("step") == step and "knn_acc" in r for r in rows)

    def loop(self) -> Dict[str, Any]:
        self._open_outputs()
        interrupted = False
        try:
            if self._evaluation_missed():
                self._evaluate()
            with StopFlag(announce=self.main_rank) as stop:
                for epoch in range(self.start[0], self.cfg.optimisation.epochs):
                    first = self.start[1] if epoch == self.start[0] else 0
                    if self._epoch(epoch, first, stop):
                        interrupted = True
                        break
        finally:
            self._close_outputs()
        t = self.trainer
        status = "interrupted" if interrupted else "done"
        return {"status": status, "out": self.out, "step": t.step, "total_steps": t.total_steps,
                "checkpoint": self.ckpt_path, "config": self.cfg,
                "eval_seconds": self.monitor.seconds if self.monitor is not None else 0.0}

    def _epoch(self, epoch: int, first: int, stop: StopFlag) -> bool:
        """Steps first.. of one epoch; True when a stop was requested before the run's last step."""
        t = self.trainer
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        last = self.steps_per_epoch - 1
        for s in range(first, self.steps_per_epoch):
            idx = order[s * self.local_batch:(s + 1) * self.local_batch]
            lm = self.landmarks[idx] if self.landmarks is not None else None
            loss = t.train_step(*t.make_views(self.images[idx], lm), self.labels[idx])
            self.bad |= ~torch.isfinite(loss)
            self.loss_sum += loss
            self.loss_count += 1
            self.imgs_since += self.cfg.optimisation.batch_size
            if self.progress is not None:
                self.progress.update(1)
            stop_now = self._agree(stop.requested)
            if t.step % self.cfg.bookkeeping.log_every == 0 or s == last or stop_now:
                self._log(epoch, s, loss)
                stop_now = stop_now or stop.requested   # the hook may have sent a signal
            resume_at = (epoch + 1, 0) if s == last else (epoch, s + 1)
            finished = t.step == t.total_steps
            if self.monitor is not None and self.monitor.due(t.step, t.total_steps) and (finished or not stop_now):
                self._evaluate()
            if stop_now and not finished:
                self._save(resume_at)
                return True
            save_every = self.cfg.bookkeeping.save_every
            if s == last or (save_every and t.step % save_every == 0):
                self._save(resume_at)
        return False

    def _evaluate(self) -> None:
        """One online evaluation, logged; its time is left out of the next images_per_s."""
        t = self.trainer
        row = self.monitor.evaluate(t.model.backbone, t.step)
        row = {"step": row.pop("step"), "epoch": t.step / self.steps_per_epoch, **row}
        self.t_last += row["eval_seconds"]
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.progress is not None:
            linear = f", linear {row['linear_acc']:.3f}" if "linear_acc" in row else ""
            self.progress.write(f"cwarp-train: step {t.step}: online kNN accuracy {row['knn_acc']:.3f}{linear} "
                                f"on {row['eval_size']} held-out images ({row['eval_seconds']:.1f} s)",
                                file=sys.stderr)
        if self.writer is not None:
            for k in ("knn_acc", "linear_acc", "eval_seconds"):
                if k in row:
                    self.writer.add_scalar(f"eval/{k}", row[k], t.step)

    def _agree(self, requested: bool) -> bool:
        """Whether any rank was asked to stop."""
        if not self.info.enabled:
            return requested
        f = torch.tensor([int(requested)], device=self.device)
        torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)
        return bool(f.item())

    def _check_finite(self) -> None:
        flag = self.bad.clone()
        if self.info.enabled:
            flag = flag.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if bool(flag.item()):
            raise TrainingDiverged(
                f"cwarp-train: the loss became NaN or Inf between steps {self.last_good_step} and "
                f"{self.trainer.step}; training stopped. The last good checkpoint ({self.ckpt_path}, step "
                f"{self.last_good_step}) was kept. Try a lower --lr, a longer --warmup-epochs, or --optimizer adamw.")

    def _save(self, resume_at: Tuple[int, int]) -> None:
        self._check_finite()
        if self.main_rank:
            ckpt.save_checkpoint(self.ckpt_path, self.trainer.state_dict(*resume_at))
        cdist.barrier()
        self.last_good_step = self.trainer.step

    def _log(self, epoch: int, s: int, loss: torch.Tensor) -> None:
        self._check_finite()
        t = self.trainer
        now = time.perf_counter()
        ips = self.imgs_since / max(now - self.t_last, 1e-9)
        row = {"step": t.step, "epoch": epoch + (s + 1) / self.steps_per_epoch, "loss": float(loss.item()),
               "loss_avg": float((self.loss_sum / self.loss_count).item()), "lr": t.schedule.get_lr(),
               "images_per_s": ips}
        row.update(t.method.log_fields(t.step, t.total_steps))
        self.loss_sum.zero_()
        self.loss_count = 0
        self.t_last, self.imgs_since = now, 0
        if not self.main_rank:
            return
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
        if self.writer is not None:
            for k in ("loss", "lr", "momentum", "images_per_s", "byol_term", "nce_term", "warp_acc"):
                if k in row:
                    self.writer.add_scalar(f"train/{k}", row[k], t.step)
        if self.step_hook is not None:
            self.step_hook(t.step, row["loss"])
