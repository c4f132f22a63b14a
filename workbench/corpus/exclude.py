"""Decontamination: find corpus documents that contain text of an evaluation set.

Pretraining on the sentences a task is scored on inflates the score it is meant to measure
(public review corpora, for one, often contain the test sentences of sentiment benchmarks).
Every text of the `exclude.files` is cleaned the way the corpus is cleaned; a document is
contaminated when it contains a run of `ngram` characters of one of those texts (the usual
n-gram overlap test), or, for texts shorter than `ngram`, when it IS that text. Memory: one
set of n-grams for the evaluation files (tens of MB for 100k texts); time: one set lookup per
character of the corpus.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterator

from workbench.errors import InputError


def _texts(path: Path, fields: list[str]) -> Iterator[tuple[int, str]]:
    """(line, text) of every text in an evaluation file, by its format."""
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8-sig", newline="") as f:
        if suffix in (".tsv", ".csv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",", quoting=csv.QUOTE_NONE
                                    if suffix == ".tsv" else csv.QUOTE_MINIMAL)
            present = [c for c in fields if c in (reader.fieldnames or [])]
            if not present:
                raise InputError(str(path), f"none of the text columns {fields} is in the header {reader.fieldnames}",
                                 "set prepare.exclude.text_fields to the file's text column(s)")
            for i, row in enumerate(reader, start=2):
                for c in present:
                    if row.get(c):
                        yield i, row[c]
            return
        lines = f.read().splitlines()
    if suffix == ".jsonl":
        for i, line in enumerate(lines, start=1):
            if line.strip():
                obj = json.loads(line)
                for c in fields:
                    if isinstance(obj.get(c), str):
                        yield i, obj[c]
        return
    # CoNLL (one character and its tag a line, blank line between sentences) or one text a line.
    nonblank = [ln for ln in lines[:200] if ln.strip()]
    conll = nonblank and sum(len(ln.split()) == 2 and len(ln.split()[0]) == 1 for ln in nonblank) > 0.9 * len(nonblank)
    if not conll:
        for i, line in enumerate(lines, start=1):
            if line.strip():
                yield i, line
        return
    chars: list[str] = []
    start = 1
    for i, line in enumerate(lines + [""], start=1):
        if line.strip():
            if not chars:
                start = i
            chars.append(line.split()[0])
        elif chars:
            yield start, "".join(chars)
            chars = []


class Contamination:
    """Built once from the evaluation files; `match(text)` → "file:line" of the first
    evaluation text the (cleaned) document overlaps, or None."""

    def __init__(self, files: list[str], fields: list[str], ngram: int, clean: Callable[[str], str]):
        self.n = ngram
        self.grams: dict[str, str] = {}
        self.whole: dict[str, str] = {}
        self.texts = 0
        for name in files:
            path = Path(name)
            if not path.is_file():
                raise InputError(name, "the evaluation file to exclude does not exist",
                                 "fix the path in prepare.exclude.files")
            for line, raw in _texts(path, fields):
                text = clean(raw)
                if not text:
                    continue
                self.texts += 1
                where = f"{name}:{line}"
                if len(text) < ngram:
                    self.whole.setdefault(text, where)
                else:
                    for i in range(len(text) - ngram + 1):
                        self.grams.setdefault(text[i:i + ngram], where)

    def match(self, text: str) -> str | None:
        hit = self.whole.get(text)
        if hit is not None or not self.grams:
            return hit
        n, grams = self.n, self.grams
        for i in range(len(text) - n + 1):
            hit = grams.get(text[i:i + n])
            if hit is not None:
                return hit
        return None
