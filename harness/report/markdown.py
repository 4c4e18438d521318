"""Markdown escaping for the report: text from data (titles, category names) can never inject markup.

HTML is autoescaped by Jinja; Markdown cells pass through :func:`md_escape`.
"""

from __future__ import annotations

from tabulate import tabulate


def md_escape(text: object) -> str:
    """Escape Markdown/HTML control characters in a table cell or inline text."""
    s = str(text)
    for ch in "\\`*_{}[]()#+!|<>":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def md_table(table: tuple[list[str], list[list]]) -> str:
    """A (header, rows) table as GitHub Markdown, every cell escaped (cells can hold text from data)."""
    header, rows = table
    return tabulate([[md_escape(c) for c in r] for r in rows], headers=[md_escape(h) for h in header],
                    tablefmt="github", disable_numparse=True)
