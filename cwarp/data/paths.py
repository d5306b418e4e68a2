"""PathTable: many file paths held in two numpy arrays instead of one Python string each.

A list of 200,000 ``str`` costs tens of MB, and every DataLoader worker that
reads it touches each object's reference count, which copies the pages that
fork shared: the list's memory grows with the workers. Two flat arrays (the
UTF-8 bytes of all paths and their offsets) are a few bytes a path and stay
shared.
"""
from __future__ import annotations

import os
from typing import Iterable, List, Sequence

import numpy as np

__all__ = ["PathTable"]


class PathTable(Sequence[str]):
    """Paths relative to ``root`` (absolute ones stay absolute); ``table[i]`` is the full path."""

    def __init__(self, root: str, relative: Iterable[str]):
        self.root = os.fspath(root)
        chunks: List[bytes] = []
        ends: List[int] = []
        total = 0
        for path in relative:
            data = os.fsencode(path)
            chunks.append(data)
            total += len(data)
            ends.append(total)
        self._bytes = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        self._ends = np.asarray(ends, dtype=np.int64)

    @classmethod
    def absolute(cls, paths: Iterable[str]) -> "PathTable":
        return cls("", paths)

    def __len__(self) -> int:
        return len(self._ends)

    def relative(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i > 0 else 0
        return os.fsdecode(self._bytes[start:int(self._ends[i])].tobytes())

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"path index {i} out of range for {n} paths")
        return os.path.join(self.root, self.relative(i)) if self.root else self.relative(i)

    def select(self, indices: Sequence[int]) -> "PathTable":
        """The table of the given paths, in that order."""
        return PathTable(self.root, (self.relative(int(i)) for i in indices))

    @property
    def nbytes(self) -> int:
        return int(self._bytes.nbytes + self._ends.nbytes)
