"""Helpers for tests that run the installed console scripts as a user does: as subprocesses."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence, Tuple

TIMEOUT = 600


def script_path(name: str) -> str:
    """The installed console script `name` beside this interpreter."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.isfile(path), f"{path} is not installed; run `pip install -e .` (see the Makefile)"
    return path


def run_script(name: str, *args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run([script_path(name), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(done: subprocess.CompletedProcess, prog: str, pattern: str = "") -> str:
    """Exit status 2, nothing on stdout, one line `prog: error: ...` containing `pattern` on stderr."""
    assert done.returncode == 2, done.stderr
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{prog}: error: ") and pattern in lines[0], lines[0]
    return lines[0]


def in_process(main: Callable, argv: Sequence[str], capsys) -> Tuple[int, str, str]:
    """(exit status, stdout, stderr) of a console script's `main(argv)` called in this process."""
    status = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line_in_process(main: Callable, prog: str, argv: Sequence[str], capsys, pattern: str) -> str:
    """`main(argv)` in this process: exit status 2 and one line `prog: error: ...` on stderr that
    the regular expression `pattern` matches."""
    status, _, err = in_process(main, argv, capsys)
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def timed_help(name: str) -> Tuple[subprocess.CompletedProcess, float]:
    """`name --help`: its result and how long it took, in seconds."""
    started = time.perf_counter()
    done = run_script(name, "--help")
    return done, time.perf_counter() - started


def torch_modules_after_import(*modules: str) -> list:
    """The torch / torchvision modules a fresh interpreter has loaded after importing `modules`."""
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # a printed list of str


def _wait_until_mapped(process: subprocess.Popen, library: str, timeout: float) -> None:
    """Wait until `process` has `library` mapped (Linux /proc; elsewhere return at once);
    fail if it is still running without it after `timeout` seconds."""
    maps = f"/proc/{process.pid}/maps"
    deadline = time.monotonic() + timeout
    while os.path.exists(maps) and process.poll() is None:
        try:
            with open(maps) as f:
                if library in f.read():
                    return
        except OSError:
            return
        assert time.monotonic() < deadline, f"{process.args} has not loaded {library} in {timeout} s"
        time.sleep(0.05)


def interrupted(name: str, args: Sequence[str], after: float = 0.0, signals: int = 1, gap: float = 0.05,
                busy: Optional[Callable[[], bool]] = None) -> Tuple[int, str, str]:
    """Start `name args`, send SIGINT `signals` times (`gap` seconds apart) `after` seconds
    after it has loaded torch and `busy()` (when given) has come true;
    its exit status, stdout and stderr."""
    # SIGINT as in a terminal: a test run started in the background of a
    # non-interactive shell inherits SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler in the child.
    process = subprocess.Popen([script_path(name), *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # `after` counts from the moment the script has loaded torch (every script
    # does, once its arguments are parsed; not every one loads cwarp's kernels):
    # on a loaded machine the imports alone can take longer than `after`.
    _wait_until_mapped(process, "libtorch_cpu", timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while busy is not None and not busy():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(after)
    for i in range(signals):
        if i:
            time.sleep(gap)
        process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    return process.returncode, stdout, stderr
