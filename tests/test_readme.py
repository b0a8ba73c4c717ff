"""README.md's Python examples run as written.

Each ```python block of README.md runs in its own namespace, in the order of the README, in one temporary
working directory (a block may read a file an earlier one wrote). A block that needs files or a network
connection a test cannot have starts with the NEEDS_OWN_FILES comment, visible to readers, and is skipped;
every other block must run. Bash blocks are not run here (CI runs the Quickstart's test command itself).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS_OWN_FILES = "# needs your own files"
QUICKSTART = (
    'python -m pip install -e ".[test,onnx]" && maskrcnn demo --out demo_out',
    './scripts/setup-tests.sh && python -m pytest -q',
)


def python_blocks(text: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.DOTALL | re.MULTILINE)


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def test_readme_has_python_examples_and_the_quickstart():
    assert len(BLOCKS) >= 5
    runnable = [block for block in BLOCKS if not block.lstrip().startswith(NEEDS_OWN_FILES)]
    assert len(runnable) >= len(BLOCKS) - 1, "only blocks that need the reader's own files may be skipped"
    text = README.read_text(encoding="utf-8")
    for command in QUICKSTART:
        assert command in text


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(index, workdir, monkeypatch):
    block = BLOCKS[index]
    if block.lstrip().startswith(NEEDS_OWN_FILES):
        pytest.skip(f"README block {index} needs the reader's own files: {block.lstrip().splitlines()[0]}")
    monkeypatch.chdir(workdir)
    code = compile(block, f"README.md python block {index}", "exec")
    exec(code, {"__name__": f"readme_block_{index}"})
    assert os.getcwd() == str(workdir)
