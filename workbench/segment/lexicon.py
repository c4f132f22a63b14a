"""User lexicons for jieba: jieba userdict files and `word<TAB>freq` lists (e.g. THUOCL).

jieba userdict lines are ``word [freq] [pos]`` separated by spaces; frequency lists are
``word<TAB>freq``. Files may start with a BOM and use \\r, \\n or \\r\\n line ends
(THUOCL's place-name list uses bare \\r). A broken line (a frequency that is not a number,
whitespace inside a tab-separated word) stops the stage with the file, the bad line
numbers and the fix, unless the lexicon says `on_error: skip`; then the skipped lines are
counted in the manifest (real THUOCL lists have a few, e.g. `柴塔村\t3?`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import InputError

_LINES = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class LexiconEntry:
    word: str
    freq: int | None
    pos: str | None


def read_lexicon(path: str | Path, fmt: str = "auto", on_error: str = "error") -> tuple[list[LexiconEntry], list[int]]:
    """(entries, numbers of the broken lines skipped). on_error="skip" skips broken lines
    (the caller reports them); "error" raises InputError listing them."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "lexicon file not found", "fix the path in segment.lexicons")
    text = path.read_bytes().decode("utf-8-sig", errors="strict") if path.stat().st_size else ""
    lines = _LINES.split(text)
    if fmt == "auto":
        sample = [ln for ln in lines[:50] if ln.strip()]
        fmt = "freq" if sample and sum("\t" in ln for ln in sample) > len(sample) / 2 else "jieba"
    entries, bad = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split("\t") if fmt == "freq" else line.split()
        parts = [p.strip() for p in parts]
        word = parts[0]
        freq = pos = None
        if fmt == "freq":
            if len(parts) > 2 or (len(parts) == 2 and parts[1] and not parts[1].isdigit()) or " " in word:
                bad.append(no)
                continue
            freq = int(parts[1]) if len(parts) == 2 and parts[1] else None
        else:
            if len(parts) > 3 or (len(parts) >= 2 and not parts[1].isdigit() and len(parts) == 3):
                bad.append(no)
                continue
            if len(parts) >= 2 and parts[1].isdigit():
                freq = int(parts[1])
                pos = parts[2] if len(parts) == 3 else None
            elif len(parts) == 2:
                pos = parts[1]  # `word pos` is allowed by jieba
        entries.append(LexiconEntry(word, freq, pos))
    if bad and on_error == "error":
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        example = "word<TAB>freq" if fmt == "freq" else "word [freq] [pos]"
        raise InputError(path, f"{len(bad)} broken lexicon line(s) ({fmt} format): lines {shown}",
                         f"each line must be `{example}`; fix those lines, or set on_error: skip for this lexicon "
                         "(skipped lines are counted in the manifest)",
                         line=bad[0])
    if not entries:
        raise InputError(path, "the lexicon has no entries", "remove it from segment.lexicons or fill it")
    return entries, bad
