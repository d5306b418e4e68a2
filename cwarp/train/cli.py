"""cwarp-train: the command line of cwarp.train.

    cwarp-train --format synthetic --method contrawarp --out runs/cw
    cwarp-train --config run.toml --lr 0.001
    cwarp-train --out runs/cw --resume

Exit status: 0 when done or stopped at --max-steps (the last line says where
the checkpoint is), 2 with one line ``cwarp-train: error: ...`` on bad input
(flags, config file, data, checkpoint, a run folder another run holds), 3 when
the loss diverged, 4 with one line naming the file and the system's reason
when the run folder cannot be written (a full disk, no permission; the last
checkpoint is kept), 130 when stopped by Ctrl-C or SIGTERM (a first one saves
a resumable checkpoint after the current step; a second Ctrl-C quits at once;
before training starts either stops at once). Parsing imports neither torch
nor torchvision, so ``--help`` is quick.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional, Sequence

from cwarp.train.config import ConfigError, parse_command_line

__all__ = ["main", "EXIT_OUTPUT_FAILED"]

PROG = "cwarp-train"
EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OUTPUT_FAILED, EXIT_INTERRUPTED = 2, 3, 4, 130


def _error(message: str, status: int = EXIT_BAD_INPUT) -> int:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return status


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
    from cwarp.train.run_folder import OutputError
    from cwarp.train.training_data import DataError

    try:
        return _report(train(cfg, explicit))
    except (ConfigError, DataError, CheckpointError) as e:
        return _error(e)
    except OutputError as e:
        return _error(e, EXIT_OUTPUT_FAILED)
    except TrainingDiverged as e:
        print(str(e), file=sys.stderr)
        return EXIT_DIVERGED
    finally:
        cdist.cleanup()


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point; returns the exit status (see the module docstring)."""
    # SIGTERM (a scheduler's stop, torchrun's) stops the run as Ctrl-C does: at
    # once while it starts, cleanly after the current step once it trains
    # (the loop's StopFlag takes both signals over while it runs).
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print(f"\n{PROG}: stopped at once; the last checkpoint saved (if any) was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
