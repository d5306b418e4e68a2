"""Peak memory of a process and all its descendants, sampled from /proc until it exits (Linux).

    python scripts/tree_peak_rss.py PID [--interval 0.2]

GNU time's "Maximum resident set size" is the largest single process of the
tree (getrusage's ru_maxrss is a maximum over the waited-for children, not a
sum), so it leaves out DataLoader workers beside the training process. This
samples every process of the tree (children found through
/proc/PID/task/TID/children) and prints the peaks of three figures: the sum
of their RSS (pages shared by fork are counted once per process), the sum of
their PSS (each shared page divided among the processes that map it: what the
tree costs the machine) and the largest single RSS. A peak shorter than the
interval can be missed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Tuple


def descendants(root: int) -> List[int]:
    """root and every process below it."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def rss_pss_kib(pid: int) -> Optional[Tuple[int, int]]:
    """(RSS, PSS) of one process in KiB, or None when it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        return None
    return rss, pss


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pid", type=int, help="the root of the process tree")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error(f"--interval: expected > 0, got {args.interval}")
    peak_rss = peak_pss = peak_one = most = samples = 0
    while alive(args.pid):
        sizes = [m for m in map(rss_pss_kib, descendants(args.pid)) if m is not None]
        if sizes:
            peak_rss = max(peak_rss, sum(r for r, _ in sizes))
            peak_pss = max(peak_pss, sum(p for _, p in sizes))
            peak_one = max(peak_one, max(r for r, _ in sizes))
            most = max(most, len(sizes))
        samples += 1
        time.sleep(args.interval)
    print(f"tree peak: sum RSS {peak_rss / 1024:.1f} MiB, sum PSS {peak_pss / 1024:.1f} MiB, largest process RSS "
          f"{peak_one / 1024:.1f} MiB, processes {most}, samples {samples}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
