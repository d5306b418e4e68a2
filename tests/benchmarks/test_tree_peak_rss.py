"""scripts/tree_peak_rss.py counts a process's children: a tree whose child holds 64 MiB reads as two
processes, the largest one holding them, and a sum above it (the parent's own pages added)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "tree_peak_rss.py")

# A parent that starts a child holding 64 MiB of touched pages, waits for it, and exits.
TREE = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
        "\"import time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2)\"])")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's /proc smaps_rollup")
def test_sums_the_children():
    tree = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        out = subprocess.run([sys.executable, SCRIPT, str(tree.pid), "--interval", "0.05"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    finally:
        tree.wait(timeout=60)
    found = re.search(r"sum RSS ([\d.]+) MiB, sum PSS ([\d.]+) MiB, largest process RSS ([\d.]+) MiB, "
                      r"processes (\d+)", out)
    assert found, out
    total, pss, largest, processes = map(float, found.groups())
    assert processes == 2, out
    assert largest >= 64, out
    assert total > largest and pss >= 64, out


def test_refuses_a_bad_interval():
    done = subprocess.run([sys.executable, SCRIPT, "1", "--interval", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--interval: expected > 0, got 0.0" in done.stderr
