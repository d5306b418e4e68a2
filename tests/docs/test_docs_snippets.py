"""Every ```python block of README.md and docs/*.md runs as pasted.

Each block runs alone in a fresh interpreter, in an empty temporary folder, so
a block cannot lean on names from an earlier one or on files of the checkout.
Blocks that are not meant to run use another fence (```bash, ```text); an
unlabelled fence is refused, so no snippet escapes the check by accident.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The fence languages the docs may use; only "python" blocks are run.
LANGUAGES = {"python", "bash", "text"}
# The docs hold at least this many runnable blocks: extraction cannot find
# none and pass.
MIN_BLOCKS = {"README.md": 3, "docs/api.md": 6}
TIMEOUT_S = 180
_FENCE = re.compile(r"^```(\S*)\s*$")


class Block(NamedTuple):
    path: str
    line: int
    language: str
    code: str


def extract_blocks(text: str, path: str) -> List[Block]:
    """The fenced blocks of a Markdown text, with the line their fence opens on."""
    blocks, open_at, language, body = [], None, "", []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if line.startswith("```") and not match:
            # Markdown may read such a line as a fence and this parser would not.
            raise ValueError(f"{path}:{number}: a line starts with ``` but is not a fence: {line!r}")
        if open_at is None and match:
            open_at, language, body = number, match.group(1), []
        elif open_at is not None and line.strip() == "```":
            blocks.append(Block(path, open_at, language, "\n".join(body) + "\n"))
            open_at = None
        elif open_at is not None:
            body.append(line)
    if open_at is not None:
        raise ValueError(f"{path}:{open_at}: a ``` fence is never closed")
    return blocks


def all_blocks() -> List[Block]:
    return [b for doc in DOCS for b in extract_blocks(doc.read_text(), str(doc.relative_to(ROOT)))]


PYTHON_BLOCKS = [b for b in all_blocks() if b.language == "python"]


def test_extract_blocks_finds_fences_and_their_lines():
    text = "intro\n```python\nx = 1\n```\n\n```bash\nmake test\n```\n"
    assert extract_blocks(text, "t.md") == [Block("t.md", 2, "python", "x = 1\n"),
                                            Block("t.md", 6, "bash", "make test\n")]
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks("```python\nx = 1\n", "t.md")
    with pytest.raises(ValueError, match="not a fence"):
        extract_blocks("```python block in prose\n", "t.md")


def test_docs_exist_and_hold_enough_runnable_blocks():
    counts = {}
    for block in PYTHON_BLOCKS:
        counts[block.path] = counts.get(block.path, 0) + 1
    for path, minimum in MIN_BLOCKS.items():
        assert (ROOT / path).is_file(), f"{path} is missing"
        assert counts.get(path, 0) >= minimum, f"{path}: {counts.get(path, 0)} python blocks, expected >= {minimum}"


def test_every_fence_names_a_known_language():
    bad = [f"{b.path}:{b.line}: ```{b.language}" for b in all_blocks() if b.language not in LANGUAGES]
    assert not bad, f"fences must be one of {sorted(LANGUAGES)}: " + "; ".join(bad)


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(text: str) -> set:
    """The anchors GitHub gives a Markdown text's headings (outside code blocks)."""
    anchors, in_code = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_heading_anchors_follow_github():
    assert heading_anchors("## 5. Command line and data formats\n### The `build`\n") == {
        "5-command-line-and-data-formats", "the-build"}


def test_relative_links_point_at_files_and_headings_inside_the_repository():
    broken = []
    for doc in DOCS:
        for target in _LINK.findall(doc.read_text()):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if ROOT not in dest.parents:
                broken.append(f"{doc.name}: {target} (outside the repository: the docs must be self-contained)")
            elif not dest.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif anchor and anchor not in heading_anchors(dest.read_text()):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, "; ".join(broken)


def _snippet_env() -> dict:
    env = dict(os.environ)
    # A snippet runs as a user would: no interpreter mode for Triton, and the
    # checkout under test first on the path.
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"{b.path}:{b.line}" for b in PYTHON_BLOCKS])
def test_python_block_runs_as_pasted(block: Block, tmp_path):
    proc = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, env=_snippet_env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"{block.path}:{block.line}: the block exits {proc.returncode}\n"
                                  f"--- code\n{block.code}--- stderr\n{proc.stderr[-3000:]}")
