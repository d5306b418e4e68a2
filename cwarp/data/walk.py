"""Listing the image files under a folder: any depth, a stable order, each real file and folder once.

Names starting with "." (files and folders) are left out. Symbolic links are
followed, but a folder or file reached twice (a link loop such as
``ln -s . loop``, or two names of one file) is listed once, at its first
path. A link whose target lies outside ``boundary`` (the split's folder) is
still followed, and the walker reports it (``ImageWalker.warning``) so the
caller can warn: such a link can pull another split's images in.

Order: folder by folder, depth first, names in code-point order, a folder's
files before its sub-folders.
"""
from __future__ import annotations

import os
from typing import List, Optional, Set, Tuple

from .decode import IMAGE_EXTENSIONS

__all__ = ["ImageWalker"]


def _inside(path: str, boundary: str) -> bool:
    return path == boundary or path.startswith(boundary.rstrip(os.sep) + os.sep)


class ImageWalker:
    """Lists image files under one or more folders of a split, each real file and folder once across them all.

    ``escaping`` collects the (link, target) pairs whose target lies outside ``boundary``.
    """

    def __init__(self, boundary: str):
        self.boundary = os.fspath(boundary)
        self._real_boundary = os.path.realpath(self.boundary)
        self._seen_dirs: Set[Tuple[int, int]] = set()
        self._seen_files: Set[Tuple[int, int]] = set()
        self.escaping: List[Tuple[str, str]] = []

    def list(self, root: str) -> List[str]:
        """The image files under ``root``, as paths relative to it, in the module's order.

        Unreadable folders raise OSError naming them.
        """
        found: List[str] = []
        stack = [(os.fspath(root), "")]
        while stack:
            folder, relative = stack.pop()
            subdirs = self._visit(folder, relative, found)
            stack.extend(reversed(subdirs))
        return found

    def _visit(self, folder: str, relative: str, found: List[str]) -> List[Tuple[str, str]]:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in self._seen_dirs:
            return []
        self._seen_dirs.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError as err:
            raise type(err)(err.errno, f"cannot list folder {folder}: {err.strerror}") from None
        subdirs = []
        for entry in entries:
            rel = os.path.join(relative, entry.name) if relative else entry.name
            link = entry.is_symlink()
            if link and not _inside(os.path.realpath(entry.path), self._real_boundary):
                self.escaping.append((entry.path, os.path.realpath(entry.path)))
            try:
                is_dir = entry.is_dir()   # follows links; False for a dangling one
            except OSError:
                is_dir = False
            if is_dir:
                subdirs.append((entry.path, rel))
                continue
            if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if link:
                try:
                    fst = entry.stat()   # the target's
                    key = (fst.st_dev, fst.st_ino)
                except OSError:          # a dangling link: listed, so that reading it names it
                    found.append(rel)
                    continue
            else:
                key = (st.st_dev, entry.inode())
            if key in self._seen_files:
                continue
            self._seen_files.add(key)
            found.append(rel)
        return subdirs

    def warning(self, source: str) -> Optional[str]:
        """One line about the links that leave the boundary, or None."""
        if not self.escaping:
            return None
        link, target = self.escaping[0]
        more = f" and {len(self.escaping) - 1} more" if len(self.escaping) > 1 else ""
        return (f"{source}: {len(self.escaping)} symbolic link(s) under {self.boundary} lead outside it "
                f"({link} -> {target}{more}); the images they reach are used, which can mix in another split")
