"""cwarp-train: the command line of cwarp.train.

    cwarp-train --format synthetic --method contrawarp --out runs/cw
    cwarp-train --config run.toml --lr 0.001
    cwarp-train --out runs/cw --resume

Exit status: 0 when done or stopped at --max-steps (the last line says where
the checkpoint is), 2 with one line ``cwarp-train: error: ...`` on bad input
(flags, config file, data, checkpoint), 3 when the loss diverged, 130 when
stopped by Ctrl-C (a first
Ctrl-C saves a resumable checkpoint after the current step; a second quits at
once). Parsing imports neither torch nor torchvision, so ``--help`` is quick.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from cwarp.train.config import ConfigError, parse_command_line

__all__ = ["main"]

PROG = "cwarp-train"


def _error(message: str) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def _report(result: dict) -> int:
    if result.get("already_complete"):
        print(f"{PROG}: {result['out']} is already complete (step {result['step']}); nothing to do. "
              f"Checkpoint at {result['checkpoint']}")
        return 0
    if result["status"] == "max_steps":
        print(f"{PROG}: stopped at --max-steps, step {result['step']}/{result['total_steps']}; checkpoint at "
              f"{result['checkpoint']}. Continue with the same command plus --resume and a larger --max-steps "
              f"(0: to the end).")
        return 0
    if result["status"] == "interrupted":
        print(f"{PROG}: interrupted at step {result['step']}/{result['total_steps']}; checkpoint saved to "
              f"{result['checkpoint']}. Continue with the same command plus --resume.", file=sys.stderr)
        return 130
    print(f"{PROG}: done, {result['step']} steps; checkpoint at {result['checkpoint']}, log at "
          f"{result['out']}/log.jsonl")
    return 0


def _run(argv: Optional[Sequence[str]]) -> int:
    try:
        cfg, explicit = parse_command_line(argv)
    except SystemExit as e:   # argparse printed its usage line and message, or --help
        return 2 if e.code not in (0, None) else 0
    except ConfigError as e:
        return _error(e)
    from cwarp.models import CheckpointError
    from cwarp.train import distributed as cdist
    from cwarp.train.loop import TrainingDiverged, train
    from cwarp.train.training_data import DataError

    try:
        return _report(train(cfg, explicit))
    except (ConfigError, DataError, CheckpointError) as e:
        return _error(e)
    except TrainingDiverged as e:
        print(str(e), file=sys.stderr)
        return 3
    finally:
        cdist.cleanup()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; returns the exit status (see the module docstring)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print(f"\n{PROG}: stopped at once; the last checkpoint saved (if any) was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
