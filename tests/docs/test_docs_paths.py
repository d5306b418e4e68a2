"""The docs describe the tree as it is: every path they name exists.

Two checks: the README's Layout block, read as the tree it draws (a folder
per line, its files after it, two spaces of indent per level, a description
after ``#``), and every backticked repository path in README.md and docs/*.md
(``<op>`` stands for any op folder, ``*`` is a glob).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP_FOLDERS = ("cwarp/", "csrc/", "tests/", "benchmarks/", "scripts/", "docs/", ".ci/", "configs/")
OPS = sorted(p.name for p in (ROOT / "cwarp" / "ops").iterdir() if p.is_dir() and not p.name.startswith("_"))


def layout_paths(text: str) -> List[str]:
    """The paths the README's Layout block names, folders ending with '/'."""
    block = text.split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    paths, parents = [], []
    for line in block.splitlines():
        body = line.split("#", 1)[0].rstrip()
        if not body.strip():
            continue
        depth = (len(body) - len(body.lstrip(" "))) // 2
        assert len(body) - len(body.lstrip(" ")) == 2 * depth, f"odd indent in the Layout block: {line!r}"
        del parents[depth:]
        tokens = [t for t in body.split() if t != "..."]
        here = "".join(parents)
        if tokens[0].endswith("/"):
            folder = here + tokens[0]
            paths.append(folder)
            parents.append(tokens[0])
            paths += [folder + t for t in tokens[1:]]
            # Files given on a folder's own line belong to it; deeper lines do too.
        else:
            paths += [here + t for t in tokens]
    return paths


def test_readme_layout_exists():
    paths = layout_paths((ROOT / "README.md").read_text())
    assert len(paths) > 60, "the Layout block was not read"
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


def test_readme_layout_lists_every_package_module():
    """Every module of the package appears, so the layout cannot fall behind the tree (train/ lists its main
    files and ends with '...')."""
    named = set(layout_paths((ROOT / "README.md").read_text()))
    text = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    elided = {line.split("#")[0].split()[0] for line in text.splitlines() if "..." in line.split("#")[0]}
    modules = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "cwarp").rglob("*.py")) if p.name != "__init__.py"]
    unlisted = [m for m in modules if m not in named
                and not any(m.startswith(f"cwarp/{folder}") for folder in elided)]
    assert not unlisted, f"modules the README's Layout does not name: {unlisted}"


_PATH = re.compile(r"`([^`\s]+)`")


def _doc_paths(path: Path) -> List[str]:
    found = []
    for token in _PATH.findall(path.read_text()):
        token = token.split("::")[0].rstrip(".,:;")
        if token.startswith(TOP_FOLDERS) and "=" not in token and "(" not in token:
            found.append(token)
    return found


def _expand_braces(pattern: str) -> List[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [p for choice in match.group(1).split(",") for p in _expand_braces(head + choice + tail)]


def _exists(pattern: str) -> bool:
    """Whether the path exists: ``<op>`` for some op folder, another ``<name>`` or ``*`` for anything,
    ``{a,b}`` for each of a and b."""
    def one(p: str) -> bool:
        candidates = [p.replace("<op>", op) for op in OPS] if "<op>" in p else [p]
        candidates = [re.sub(r"<[^<>/]+>", "*", c) for c in candidates]
        return any(list(ROOT.glob(c)) if "*" in c else (ROOT / c).exists() for c in candidates)

    return all(one(p) for p in _expand_braces(pattern))


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_backticked_paths_exist(doc):
    paths = _doc_paths(doc)
    missing = sorted({p for p in paths if not _exists(p)})
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_path_check_sees_a_missing_path(tmp_path):
    fake = tmp_path / "x.md"
    fake.write_text("see `cwarp/ops/no_such_file.py`, `csrc/ops/<op>/<op>_cpu.cpp`, "
                    "`cwarp/ops/<op>/{api,register}.py` and `cwarp/ops/<op>/{api,nothing}.py`\n")
    paths = _doc_paths(fake)
    assert paths == ["cwarp/ops/no_such_file.py", "csrc/ops/<op>/<op>_cpu.cpp", "cwarp/ops/<op>/{api,register}.py",
                     "cwarp/ops/<op>/{api,nothing}.py"]
    assert [_exists(p) for p in paths] == [False, True, True, False]
