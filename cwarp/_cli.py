"""What every cwarp console script shares: its parser and its exit statuses.

Every script exits 0 on success, 2 with one line ``PROG: error: ...`` on bad
input (no traceback), and 130 on Ctrl-C. Nothing here imports torch, so that
``--help`` and argument errors answer before the slow import.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence

from cwarp._constants import TIMM_PREFIX

__all__ = ["Parser", "InputError", "run_script", "one_line", "positive_int", "non_negative_int", "arch_type",
           "is_arch", "arch_expected"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# The errors that library code raises for bad input, with a message naming it.
# (CorruptImageError and the checkpoint loader's errors are RuntimeErrors.)
INPUT_ERRORS = (ValueError, OSError, RuntimeError)


class InputError(ValueError):
    """Bad input found by a script itself (a missing file, a bad number)."""


def one_line(message: str) -> str:
    """``message`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(message).split())


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout and appends each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" not in text and default is not None and default is not False \
                and default != argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``PROG: error: ...``, with exit status 2."""

    def __init__(self, prog: str, doc: str):
        # A script's docstring: a summary line, an indented block of examples, then the details.
        summary, examples, details = (doc.strip("\n").split("\n\n", 2) + ["", ""])[:3]
        super().__init__(prog=prog, description=f"{summary}\n\n{details.strip()}".strip(),
                         epilog=f"examples:\n{examples}" if examples else None, formatter_class=_HelpFormatter)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def run_script(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]],
               body: Callable[[argparse.Namespace], object]) -> int:
    """Parse ``argv`` and run ``body`` on it: 0 when it returns, 2 on bad input, 130 on Ctrl-C.

    Never raises SystemExit, so that ``main(argv)`` returns its status to a
    caller in the same process too. Errors of the types in INPUT_ERRORS become
    one line on stderr; anything else is a bug and keeps its traceback.
    """
    prog = parser.prog
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0), or an argument error already printed (2)
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT
    with _noting_interrupts() as interrupts:
        try:
            body(args)
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return EXIT_INTERRUPTED
        except Exception as err:
            if interrupts:
                # A Ctrl-C that broke into an import or a library can surface as
                # another error (a half-initialized module); it is still the
                # user's interrupt, not a bug to show a traceback for.
                sys.stderr.write(f"{prog}: interrupted\n")
                return EXIT_INTERRUPTED
            if isinstance(err, INPUT_ERRORS):
                sys.stderr.write(f"{prog}: error: {one_line(err)}\n")
                return EXIT_BAD_INPUT
            raise
    return EXIT_OK


@contextlib.contextmanager
def _noting_interrupts() -> Iterator[List[int]]:
    """Python's own Ctrl-C behaviour (KeyboardInterrupt), with every SIGINT
    also noted in the list it yields. Installed only over Python's default
    handler in the main thread; a handler the body installs (the trainer's)
    takes precedence while it is installed."""
    noted: List[int] = []
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield noted
        return

    def on_sigint(signum, frame):
        noted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def positive_int(text: str) -> int:
    """argparse type: an int >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an int >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
    return value


def is_arch(arch: object, names: Sequence[str]) -> bool:
    """Whether ``arch`` names a backbone: one of ``names``, or ``timm:NAME``.

    Only the form is checked here (no torch, no timm); whether timm has a model
    NAME is checked where the backbone is built (cwarp.models.timm_backbone).
    """
    if not isinstance(arch, str):
        return False
    return arch in names or (arch.startswith(TIMM_PREFIX) and bool(arch[len(TIMM_PREFIX):].strip()))


def arch_expected(names: Sequence[str]) -> str:
    """What an --arch option takes, for its error message."""
    return f"expected one of {', '.join(names)} or {TIMM_PREFIX}NAME (a timm model)"


def arch_type(names: Sequence[str]) -> Callable[[str], str]:
    """argparse type of an --arch option: one of ``names`` or ``timm:NAME`` (see is_arch)."""
    def arch(text: str) -> str:
        if not is_arch(text, names):
            raise argparse.ArgumentTypeError(f"{arch_expected(names)}, got {text!r}")
        return text

    return arch
