"""What every console script of pyproject.toml's [project.scripts] does alike, one test body per
behaviour parametrized over the commands: --help is quick, complete and imports no torch; an unknown
flag is one error line with exit status 2; Ctrl-C exits 130 without a traceback and leaves no output.
What a single command does (its runs, its files, its own errors) stays in its own tests."""
from __future__ import annotations

import importlib
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import pytest
from console_scripts import (assert_one_error_line, in_process, interrupted, run_script, timed_help,
                             torch_modules_after_import)
from tiny_runs import tiny_script_args

ROOT = Path(__file__).resolve().parent.parent
# Generous: --help must not wait for torch, whose import alone takes seconds.
HELP_SECONDS = 3.0


@dataclass(frozen=True)
class Command:
    entry: str                    # "module:function", as [project.scripts] names it
    parser: str                   # "module:function" that builds its argparse parser
    light: Tuple[str, ...]        # modules whose import must load no torch (parsing happens there)
    help_mentions: Tuple[str, ...]  # what --help must say, with whitespace folded (lines wrap)
    # A run with the output it writes under a folder; long enough to be still running when Ctrl-C comes.
    long_run: Callable[[Path], Tuple[list, Path]]
    # A quick run (under a folder) whose work `work` ("module:attr") is made to raise KeyboardInterrupt in process.
    quick_run: Callable[[Path], Tuple[list, Path]]
    work: str
    interrupted_stderr: str       # all of stderr when main() is interrupted in process
    interrupted_last_line: str    # a regex the last stderr line of an interrupted run matches in full
    # Ctrl-C the run this many times: cwarp-train's first Ctrl-C asks for a clean stop after the step
    # (tests/train/test_train_cli.py checks the checkpoint it saves), the second quits at once.
    signals: int = 1
    # The run is Ctrl-C'd once it has loaded torch, this many seconds later.
    after: float = 1.0
    # A run that is busy only once this file under its output exists with content (None: loaded is busy).
    busy_file: Optional[str] = None


PROBE_TINY = ["--format", "synthetic", "--num-train", "42", "--num-test", "21", "--image-size", "16", "--no-progress"]

COMMANDS = {
    "cwarp-train": Command(
        entry="cwarp.train.cli:main", parser="cwarp.train.config:build_parser",
        light=("cwarp.train", "cwarp.train.cli", "cwarp.train.config"),
        help_mentions=("convnet-small", "auto: convnet-small on the CPU, resnet18 on CUDA", "(default: contrawarp)",
                       "--config FILE", "--skip-corrupt"),
        long_run=lambda d: (tiny_script_args(d / "run", "--epochs", "200"), d / "run"),
        quick_run=lambda d: (tiny_script_args(d / "run"), d / "run"),
        work="cwarp.train.loop:train",
        interrupted_stderr="\ncwarp-train: stopped at once; the last checkpoint saved (if any) was kept\n",
        # The second Ctrl-C can come after the clean stop has already finished.
        interrupted_last_line=r"cwarp-train: (stopped at once; the last checkpoint saved \(if any\) was kept"
                              r"|interrupted at step \d+/\d+; checkpoint saved to .*)",
        signals=2, after=0.0, busy_file="log.jsonl"),
    "cwarp-probe": Command(
        entry="cwarp.eval.cli:main", parser="cwarp.eval.cli:build_parser", light=("cwarp.eval.cli",),
        help_mentions=("--checkpoint", "--trust-checkpoint"),
        # Thousands of faces at 64 x 64.
        long_run=lambda d: (["--random-init", "--format", "synthetic", "--num-train", "5000", "--no-progress",
                             "--out", d / "x.json"], d / "x.json"),
        quick_run=lambda d: (["--raw-pixels", *PROBE_TINY, "--out", d / "x.json"], d / "x.json"),
        work="cwarp.eval.probe:evaluate_features",
        interrupted_stderr="cwarp-probe: interrupted\n", interrupted_last_line="cwarp-probe: interrupted"),
    "cwarp-preview": Command(
        entry="cwarp.apps.preview:main", parser="cwarp.apps.preview:build_parser", light=("cwarp.apps.preview",),
        help_mentions=("--negatives", "{translate,gaussian}"),
        long_run=lambda d: (["--synthetic", "400", "--size", "64", "--out", d / "v.png"], d / "v.png"),
        quick_run=lambda d: (["--synthetic", "1", "--size", "16", "--out", d / "v.png"], d / "v.png"),
        work="cwarp.apps.preview:make_figure",
        interrupted_stderr="cwarp-preview: interrupted\n", interrupted_last_line="cwarp-preview: interrupted"),
}

commands = pytest.mark.parametrize("prog", sorted(COMMANDS))


def _attr(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def test_every_console_script_is_covered():
    with open(ROOT / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {prog: c.entry for prog, c in COMMANDS.items()} == scripts


@commands
def test_help_is_quick_and_complete(prog):
    command = COMMANDS[prog]
    done, elapsed = timed_help(prog)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"usage: {prog}")
    assert elapsed < HELP_SECONDS, f"{prog} --help took {elapsed:.1f} s"
    for action in _attr(command.parser)()._actions:
        if action.dest != "help":
            assert action.help, action.dest
            assert not action.option_strings or action.option_strings[0] in done.stdout, action.option_strings
    flat = " ".join(done.stdout.split())
    for text in command.help_mentions:
        assert text in flat, text


@commands
def test_parsing_imports_no_torch(prog):
    command = COMMANDS[prog]
    assert command.entry.split(":")[0] in command.light
    assert torch_modules_after_import(*command.light) == []


@commands
def test_unknown_flag_is_one_error_line(prog, tmp_path):
    args, out = COMMANDS[prog].long_run(tmp_path)
    assert_one_error_line(run_script(prog, *args, "--wobble"), prog, "unrecognized arguments: --wobble")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is how Ctrl-C reaches a POSIX process")
@commands
def test_ctrl_c_exits_130_without_traceback(prog, tmp_path):
    command = COMMANDS[prog]
    args, out = command.long_run(tmp_path)

    def busy():
        path = out / command.busy_file
        return path.exists() and path.read_text().strip() != ""

    status, _, stderr = interrupted(prog, args, after=command.after, signals=command.signals,
                                    busy=busy if command.busy_file else None)
    assert status == 130, stderr
    assert "Traceback" not in stderr
    assert re.fullmatch(command.interrupted_last_line, stderr.splitlines()[-1]), stderr
    if command.signals == 1:
        assert not out.exists()


@commands
def test_ctrl_c_in_process_is_130_and_one_line(prog, tmp_path, capsys, monkeypatch):
    command = COMMANDS[prog]

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    module, name = command.work.split(":")
    monkeypatch.setattr(importlib.import_module(module), name, interrupt)
    args, out = command.quick_run(tmp_path)
    status, _, err = in_process(_attr(command.entry), args, capsys)
    assert (status, err) == (130, command.interrupted_stderr)
    assert not out.exists()
