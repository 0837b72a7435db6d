"""Every ```python block of README.md and docs/ runs: the blocks of one file in order, in one
namespace, so that a page's examples may build on each other. A block that cannot run here, or
only at a cost out of proportion (a GPU, torchrun, a long compile), is marked by
``<!-- no-run: why -->`` on the line before its fence (docs/development.md)."""

from __future__ import annotations

import re
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

BLOCK = re.compile(
    r"^(?P<mark><!-- no-run: .+? -->\n)?(?P<indent>[ \t]*)```python\n(?P<code>.*?)^(?P=indent)```$",
    re.MULTILINE | re.DOTALL,
)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """The runnable ```python blocks of a Markdown file: (line of the fence, code)."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start("indent")) + 1, textwrap.dedent(match["code"]))
        for match in BLOCK.finditer(text)
        if match["mark"] is None
    ]


WITH_BLOCKS = [path for path in DOCUMENTS if python_blocks(path)]


@pytest.mark.parametrize("path", WITH_BLOCKS, ids=lambda path: str(path.relative_to(ROOT)))
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # what a block writes lands here
    module = types.ModuleType("doc_blocks")  # a real module: torch.compile looks its globals up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in python_blocks(path):
        where = f"{path.relative_to(ROOT)}, block at line {line}"
        exec(compile(code, where, "exec"), module.__dict__)


def test_blocks_are_found() -> None:
    """The pattern sees the blocks: the README's library example and the guides' examples."""
    names = {path.relative_to(ROOT).as_posix() for path in WITH_BLOCKS}
    assert {"README.md", "docs/getting-started.md", "docs/guides/stiff.md"} <= names
