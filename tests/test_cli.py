"""cwarp._cli.run_script: the exit statuses every console script shares."""
from __future__ import annotations

import os
import signal

import pytest

from cwarp import _cli


def _parser():
    return _cli.Parser("prog", "Summary.\n\n    prog\n\nDetails.")


def _run(body, capsys):
    status = _cli.run_script(_parser(), [], body)
    return status, capsys.readouterr().err


@pytest.fixture
def python_sigint():
    # A suite started in the background of a shell inherits SIGINT ignored;
    # these tests need Python's own handler, as a script run from a terminal has.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_statuses(capsys, python_sigint):
    assert _run(lambda args: None, capsys) == (0, "")

    def bad(args):
        raise ValueError("no such\nfile")

    assert _run(bad, capsys) == (2, "prog: error: no such file\n")

    def bug(args):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        _cli.run_script(_parser(), [], bug)


def test_ctrl_c_is_130(capsys, python_sigint):
    def body(args):
        os.kill(os.getpid(), signal.SIGINT)

    assert _run(body, capsys) == (130, "prog: interrupted\n")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_turned_into_another_error_is_still_130(capsys, python_sigint):
    """A Ctrl-C inside an import can leave a module half-initialized, and the
    next use of it fails with another error: still the user's interrupt."""
    def body(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass                                   # swallowed, as some libraries do
        raise AttributeError("module 'numpy' has no attribute 'matrix'")

    assert _run(body, capsys) == (130, "prog: interrupted\n")
