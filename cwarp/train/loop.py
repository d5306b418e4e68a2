"""The training loop behind cwarp-train: BYOL pretraining with ContraWarping negatives.

``--method contrawarp``: BYOL positives from two global views plus InfoNCE
over N locally warped negatives of the second view (scored against the first
view's prediction, ``--nce-on p1``), through the fused
``cwarp.contrastive_loss``. ``--method byol``: the same pipeline with no
negatives (the baseline). ``--method supervised``: the same backbone, views,
optimizer and budget trained with the labels. The methods' losses live in
``cwarp.train.methods``, one step in ``cwarp.train.trainer``, the online
evaluation (``--eval-every``) in ``cwarp.train.monitor``; this module owns
the loop over epochs, the log and the checkpoints. ``--resume`` continues
bit-for-bit on the CPU. Under torchrun, several processes train with
DistributedDataParallel.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Set, Tuple

import torch

from cwarp.models import checkpoint as ckpt
from cwarp.train import distributed as cdist
from cwarp.train.config import ConfigError, RunConfig, validate
from cwarp.train.host_memory import keep_freed_memory
from cwarp.train.run_folder import OutputError, RunFolder, read_log, resume_state
from cwarp.train.signals import StopFlag
from cwarp.train.trainer import Trainer
from cwarp.train.feeds import make_feed
from cwarp.train.training_data import DataError, TrainingData, load_data, recorded_data_warnings

__all__ = ["train", "TrainingDiverged"]


class TrainingDiverged(FloatingPointError):
    """The loss went NaN or Inf."""


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
    if cfg.out is None:
        raise ConfigError("--out: a run folder is required (on the command line or in --config)")
    fresh = not cfg.bookkeeping.resume
    if fresh:
        cfg = validate(cfg)   # before the folder exists: bad flags leave nothing behind
    folder = RunFolder(cfg.out)
    # Rank 0 writes the folder, so it alone holds the lock (torchrun's RANK; 0 without torchrun).
    with folder.claim(create=fresh) if int(os.environ.get("RANK", "0")) == 0 else folder:
        cfg, state = resume_state(cfg, explicit)
        max_steps = cfg.bookkeeping.max_steps
        if state is not None and (int(state["epoch"]) >= cfg.optimisation.epochs
                                  or (max_steps and int(state["step"]) >= max_steps)):
            return {"status": "done", "already_complete": True, "out": cfg.out, "step": int(state["step"]),
                    "total_steps": int(state["step"]), "checkpoint": folder.checkpoint_path, "config": cfg}
        if cfg.data.threads:
            torch.set_num_threads(cfg.data.threads)
        keep_freed_memory(cfg.reuse_freed_memory)
        device = torch.device(cfg.device)
        info = cdist.init_from_env(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", info.local_rank)
        run = _Run(cfg, info, device, load_data(cfg), step_hook, folder)
        if state is not None:
            run.restore(state)
        elif run.main_rank:
            folder.start_log()
        del state
        return run.loop()


class _Run:
    """One training job's loop state: sampler, trainer, log, checkpoints."""

    def __init__(self, cfg: RunConfig, info, device, data: TrainingData, step_hook, folder: RunFolder):
        self.info, self.device, self.step_hook = info, device, step_hook
        self.data = data
        self.main_rank = info.rank == 0
        batch, n = cfg.optimisation.batch_size, len(data)
        if info.world_size > 1 and batch % info.world_size:
            raise ConfigError(f"--batch-size: {batch} is not divisible by the {info.world_size} processes")
        if n < batch:
            raise ConfigError(f"--batch-size: the training set has {n} images, fewer than one batch of "
                              f"{batch}; lower --batch-size or add data")
        self.local_batch = batch // info.world_size
        self.feed = make_feed(data, cfg, info, device, self.local_batch)
        self.steps_per_epoch = self.feed.steps_per_epoch
        self.trainer = Trainer(cfg, info, device, data.channels, self.steps_per_epoch,
                               num_classes=len(data.classes))
        self.cfg = self.trainer.cfg
        self.out = cfg.out
        self.folder = folder
        self.ckpt_path = folder.checkpoint_path
        self.log_path = folder.log_path
        self.start = (0, 0)
        self.last_good_step = 0
        self.bad = torch.zeros((), dtype=torch.bool, device=device)   # any non-finite loss since the last check
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.loss_count = 0
        self.t_last, self.imgs_since = time.perf_counter(), 0
        self.progress = self.writer = None
        self.monitor = self._build_monitor(data) if self.main_rank and self.cfg.evaluation.eval_every else None

    def _build_monitor(self, data: TrainingData):
        """The online evaluation's bank and held-out set, made before the first step so a problem stops the run
        at once (one rank evaluates; the others wait at the next collective)."""
        from cwarp.train.monitor import OnlineEvaluator, evaluation_sets

        if self.cfg.evaluation.eval_format is None and not data.has_labels:
            raise DataError(f"--eval-every: the {self.cfg.data.format} training set has no labels for the online "
                            f"evaluation's kNN; score a labelled set with --eval-data PATH --eval-format FORMAT, "
                            f"or pass --eval-every 0")
        try:
            with recorded_data_warnings() as caught:
                bank, heldout = evaluation_sets(self.cfg, len(data), data.bank, data.classes)
                monitor = OnlineEvaluator(self.cfg, bank, heldout, self.device)
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
        warning = self.feed.restore(state.get("data"), self.start)
        if warning and self.main_rank:
            print(f"cwarp-train: warning: {warning}", file=sys.stderr)
        self.last_good_step = self.trainer.step
        if self.main_rank:
            if self.folder.truncate_log(self.trainer.step):
                print(f"cwarp-train: warning: {self.log_path}: dropped a line cut short by an earlier stop",
                      file=sys.stderr)

    def _open_outputs(self) -> None:
        if not self.main_rank:
            return
        self.folder.remove_stale_temporaries()
        self.folder.write_config(self.cfg)
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
        rows, _ = read_log(self.log_path)
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
        if interrupted and self.cfg.bookkeeping.max_steps and t.step >= self.cfg.bookkeeping.max_steps:
            status = "max_steps"
        return {"status": status, "out": self.out, "step": t.step, "total_steps": t.total_steps,
                "checkpoint": self.ckpt_path, "config": self.cfg,
                "eval_seconds": self.monitor.seconds if self.monitor is not None else 0.0}

    def _epoch(self, epoch: int, first: int, stop: StopFlag) -> bool:
        """Steps first.. of one epoch; True when a stop (a signal or --max-steps) came before the run's last
        step."""
        batches = self.feed.epoch(epoch, first)
        try:
            return self._steps(epoch, first, stop, batches)
        finally:
            batches.close()   # a stream's worker processes end with it

    def _steps(self, epoch: int, first: int, stop: StopFlag, batches) -> bool:
        t = self.trainer
        last = self.steps_per_epoch - 1
        max_steps = self.cfg.bookkeeping.max_steps
        for s, (images, labels, landmarks) in enumerate(batches, start=first):
            loss = t.train_step(*t.make_views(images, landmarks), labels)
            self.bad |= ~torch.isfinite(loss)
            self.loss_sum += loss
            self.loss_count += 1
            self.imgs_since += self.cfg.optimisation.batch_size
            if self.progress is not None:
                self.progress.update(1)
            stop_now = self._agree(stop.requested) or (max_steps and t.step >= max_steps)
            if s == last or stop_now:
                self._warn_skipped(epoch, final=s == last)
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

    def _warn_skipped(self, epoch: int, final: bool) -> None:
        """The epoch's one warning about images --skip-corrupt left out (so far, when the run stops in it)."""
        line = self.feed.warning(epoch, final)
        if line and self.main_rank:
            line = f"cwarp-train: warning: {line}"
            if self.progress is not None:
                self.progress.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    def _evaluate(self) -> None:
        """One online evaluation, logged; its time is left out of the next images_per_s."""
        t = self.trainer
        row = self.monitor.evaluate(t.model.backbone, t.step)
        row = {"step": row.pop("step"), "epoch": t.step / self.steps_per_epoch, **row}
        self.t_last += row["eval_seconds"]
        self.folder.append_log(row)
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
            try:
                self.folder.save_checkpoint({**self.trainer.state_dict(*resume_at),
                                             "data": self.feed.state(resume_at)})
            except OutputError as err:
                kept = (f"the checkpoint of step {self.last_good_step} is kept" if os.path.exists(self.ckpt_path)
                        else "no checkpoint was written")
                raise OutputError(f"{err}; {kept}") from err
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
        self.folder.append_log(row)
        if self.progress is not None:
            self.progress.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}")
        if self.writer is not None:
            for k in ("loss", "lr", "momentum", "images_per_s", "byol_term", "nce_term", "warp_acc"):
                if k in row:
                    self.writer.add_scalar(f"train/{k}", row[k], t.step)
        if self.step_hook is not None:
            self.step_hook(t.step, row["loss"])
