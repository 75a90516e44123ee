"""A griffe extension for the reference pages: bcd_jax's docstrings are Google style with a few
reStructuredText habits, which Markdown would render as noise. Before a docstring is parsed:

* a role (``:class:`bcd_jax.Network```, ``:func:``, ``:meth:``, ...) becomes inline code;
* a simple table (columns under ``===== =====`` rules) becomes a Markdown table;
* a paragraph ending in ``::`` (a literal block follows) ends in ``:`` instead.

Only the rendering changes; the docstrings in the code stay as they are. mkdocs.yml loads this
file (``extensions: [docs/griffe_rest.py]``).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`~?([^`]+)`")
RULE = re.compile(r"^( *)=+( +=+)+ *$")


def _columns(rule: str) -> list[int]:
    """The start of every column of a table rule (``===  ====``)."""
    return [m.start() for m in re.finditer(r"=+", rule)]


def _cells(line: str, starts: list[int]) -> list[str]:
    ends = [*starts[1:], None]
    return [line[a:b].strip() if len(line) > a else "" for a, b in zip(starts, ends)]


def _table(lines: list[str], indent: str) -> list[str]:
    """A reST simple table (rules included) as Markdown table lines."""
    rules = [i for i, line in enumerate(lines) if RULE.match(line)]
    starts = _columns(lines[rules[0]])
    rows: list[list[str]] = []
    header: list[str] | None = None
    for i, line in enumerate(lines):
        if i in rules:
            if len(rules) >= 3 and i == rules[1] and header is None:
                header, rows = rows[0] if rows else [""] * len(starts), []
            continue
        if not line.strip():
            continue
        cells = _cells(line, starts)
        if rows and not cells[0]:  # a continuation line: its text belongs to the row above
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
        else:
            rows.append(cells)
    if header is None:
        header, rows = rows[0], rows[1:]
    out = [indent + "| " + " | ".join(header) + " |", indent + "|" + " --- |" * len(header)]
    out += [indent + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def convert(text: str) -> str:
    """The Markdown form of a docstring written with the reST habits above."""
    text = ROLE.sub(lambda m: f"``{m.group(1)}``", text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = RULE.match(lines[i])
        if match is None:
            line = lines[i]
            if line.rstrip().endswith("::") and not line.strip().startswith(("..", "::")):
                line = line.rstrip()[:-1]  # "example::" -> "example:"; "text ::" -> "text :"
            out.append(line)
            i += 1
            continue
        # A table ends at the first later rule that a blank line (or the end) follows.
        j = i + 1
        while j < len(lines) and not (RULE.match(lines[j]) and (j + 1 == len(lines) or not lines[j + 1].strip())):
            j += 1
        block = lines[i : j + 1]
        if out and out[-1].strip():
            out.append("")
        out += _table(block, match.group(1))
        i = j + 1
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    """Rewrites every docstring with :func:`convert` before it is parsed."""

    def on_instance(self, *, obj, **kwargs) -> None:
        docstring = obj.docstring
        if docstring is not None:
            docstring.value = convert(docstring.value)
