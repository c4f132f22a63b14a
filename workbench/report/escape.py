"""Escaping user strings (labels, file names, model names) for Markdown and HTML reports.

Labels come from the user's files: `a|b` would split a Markdown table cell, a newline would
end the table, and `<img src=x onerror=...>` would run in whoever renders the card as HTML
(GitHub, a model hub, an internal wiki). Every user string that goes into a model card or a
report goes through one of these.
"""

from __future__ import annotations

import html
import re

# Characters that start Markdown constructs inside a line (emphasis, code, links, headings).
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+!|~"})


def _one_line(value: object) -> str:
    """Control characters and line breaks shown as escapes (`a\\nb`), so the string stays on one line."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(value))


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def md_text(value: object) -> str:
    """A user string as inline Markdown text: HTML-escaped, Markdown punctuation escaped,
    control characters and line breaks shown as escapes, so it stays on one line."""
    return html.escape(_one_line(value), quote=True).translate(_MD_SPECIAL)


def md_cell(value: object) -> str:
    """A user string inside a Markdown table cell (same as md_text: `|` is escaped there)."""
    return md_text(value)


def md_code(value: object) -> str:
    """A user string as an inline code span (file names, model ids): one line, and no
    backtick run inside can close the span; `|` is escaped so a table cell stays whole."""
    s = _one_line(value)
    fence = "`" * (_longest_backtick_run(s) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def md_fence(text: str) -> str:
    """A fenced code block around `text` whose fence no backtick run inside can close."""
    fence = "`" * max(3, _longest_backtick_run(text) + 1)
    return f"{fence}\n{text}\n{fence}"
