"""The documentation runs as written: every Python block of README.md and docs/*.md.

Each block runs on its own, in a fresh namespace and a temporary working directory, so every
block must be self-contained (its own imports, data, key and config). A block must not
diverge: ``BCDDivergenceWarning`` is an error here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("error::bcd_jax.BCDDivergenceWarning")

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _blocks():
    out = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # first line of code inside the fence
            name = page.relative_to(ROOT).as_posix()
            out.append(pytest.param(name, line, match.group(1), id=f"{name}:{line}"))
    return out


BLOCKS = _blocks()


def test_every_page_has_a_title_and_the_readme_has_examples():
    for page in PAGES:
        assert page.read_text().startswith("# "), page
    assert sum(1 for p in BLOCKS if p.values[0] == "README.md") >= 1


@pytest.mark.parametrize(("page", "line", "code"), BLOCKS)
def test_block_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace = {"__name__": "__main__"}
    # Pad with blank lines so that a traceback points at the page's own line numbers.
    exec(compile("\n" * (line - 1) + code, str(ROOT / page), "exec"), namespace)  # noqa: S102 - the point of the test


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_stay_inside_the_repository(page):
    """Every Markdown link is relative, resolves inside the repository and names a file that exists."""
    text = page.read_text()
    assert "../shared" not in text and "/work/" not in text, f"{page.name} points outside the repository"
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        assert "://" not in target and not target.startswith(("/", "mailto:")), f"{page.name}: {target}"
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} points outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(resolved), f"{page.name}: {target}: no such heading"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)  # no '#' comments of code
    titles = re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
