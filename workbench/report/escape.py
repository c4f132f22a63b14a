"""Escaping user strings (labels, file names, model names) for Markdown and HTML reports.

Labels come from the user's files: `a|b` would split a Markdown table cell, a newline would
end the table, and `<img src=x onerror=...>` would run in whoever renders the card as HTML
(GitHub, a model hub, an internal wiki). Every user string that goes into a model card or a
report goes through one of these.
"""

from __future__ import annotations

import html

# Characters that start Markdown constructs inside a line (emphasis, code, links, headings).
_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_{}[]()#+!|~"})


def md_text(value: object) -> str:
    """A user string as inline Markdown text: HTML-escaped, Markdown punctuation escaped,
    control characters and line breaks shown as escapes, so it stays on one line."""
    s = str(value)
    s = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii") for ch in s)
    return html.escape(s, quote=True).translate(_MD_SPECIAL)


def md_cell(value: object) -> str:
    """A user string inside a Markdown table cell (same as md_text: `|` is escaped there)."""
    return md_text(value)


def md_code(value: object) -> str:
    """A user string as an inline code span (file names, model ids): one line, and no
    backtick run inside can close the span; `|` is escaped so a table cell stays whole."""
    s = "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                for ch in str(value))
    longest = run = 0
    for ch in s:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s.replace('|', chr(92) + '|')}{pad}{fence}"


def md_fence(text: str) -> str:
    """A fenced code block around `text` whose fence no backtick run inside can close."""
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"
