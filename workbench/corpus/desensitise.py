"""Desensitising a Chinese corpus: every character (or jieba word) becomes an integer id.

This is what the organisers of GAIIC 2021 and the Tianchi news task did to their data
before publishing it: each distinct unit is replaced by an anonymous integer, the text
becomes space-separated ids (`623 328 538 ...`) and the labels stay as they were. We do
the same to our own corpora so that the desensitised-data tools (remap, word discovery)
can be measured against a corpus whose real text is known.

How ids are drawn: the distinct units of the whole input are sorted (by code point) and
shuffled by a permutation seeded with `seed`; unit i of the sorted list gets the id
`offset + perm[i]`. Ids are dense in [offset, offset + n_units), so `offset` leaves room
for special tokens below it (GAIIC's ids start near 0, some corpora reserve 0..9).
The same input and seed always give the same ids; a different seed gives another key.

THE KEY FILE IS SECRET. `key.tsv` (`id<TAB>unit`, one line per unit) undoes the
desensitisation. It is written with mode 0600 *beside* the output directory, never
inside it, so that copying or exporting the output cannot carry it along. It must never
be copied into exports, model cards, reports, manifests or logs. The seed is secret for
the same reason (with it and the character set the key can be rebuilt), so the stage's
manifest records neither the seed nor the key's content: only where the key is.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path

UNITS = ("char", "word")
KEY_MODE = 0o600


class UnitSplitter:
    """text → units: non-space characters, or jieba words without the whitespace ones.

    Picklable; jieba's tokenizer is built lazily (it is the slow part, ~1 s)."""

    def __init__(self, unit: str = "char"):
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        self.unit = unit
        self._jieba = None

    def __getstate__(self) -> dict:
        return {"unit": self.unit, "_jieba": None}

    def __call__(self, text: str) -> list[str]:
        if self.unit == "char":
            return [c for c in text if not c.isspace()]
        if self._jieba is None:
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)
            self._jieba = jieba.Tokenizer()
        return [w for w in self._jieba.lcut(text) if w.strip()]


def build_key(units: Iterable[str], seed: int, offset: int = 0) -> dict[str, int]:
    """unit → id: the sorted distinct units, shuffled by a permutation seeded with `seed`,
    numbered from `offset`. Deterministic for (set of units, seed, offset)."""
    distinct = sorted(set(units))
    ids = list(range(offset, offset + len(distinct)))
    random.Random(f"workbench-desensitise-{seed}").shuffle(ids)
    return dict(zip(distinct, ids))


def desensitise_text(text: str, key: dict[str, int], split: UnitSplitter) -> str:
    """Space-separated ids of the units of `text` (KeyError for a unit not in the key)."""
    return " ".join(str(key[u]) for u in split(text))


def write_key(path: str | Path, key: dict[str, int]) -> Path:
    """Write `id<TAB>unit` lines (sorted by id) to `path`, created with mode 0600.

    The file is opened with 0600 from the start (no moment where it is world-readable)
    and chmod-ed again in case it existed before with a wider mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("id\tunit\n")
            for unit, i in sorted(key.items(), key=lambda kv: kv[1]):
                f.write(f"{i}\t{unit}\n")
        os.chmod(tmp, KEY_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_key(path: str | Path) -> dict[str, int]:
    """unit → id from a key file written by `write_key`."""
    out: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        next(f, None)  # header
        for line in f:
            i, _, unit = line.rstrip("\n").partition("\t")
            out[unit] = int(i)
    return out


def desensitise_texts(texts: list[str], *, unit: str = "char", seed: int = 0,
                      offset: int = 0) -> tuple[list[str], dict[str, int]]:
    """In-memory helper (tests, benchmarks): (id texts, key)."""
    split = UnitSplitter(unit)
    units = [split(t) for t in texts]
    key = build_key((u for us in units for u in us), seed, offset)
    return [" ".join(str(key[u]) for u in us) for us in units], key


def iter_units(texts: Iterable[str], split: UnitSplitter) -> Iterator[str]:
    for t in texts:
        yield from split(t)
