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
import uuid
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
            from workbench.segment.jieba_cache import use_private_cache

            self._jieba = use_private_cache(jieba.Tokenizer())  # dictionary cache not in /tmp
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


def key_temp_prefix(path: str | Path) -> str:
    """Name prefix of the temporary key files beside `path` (`.<name>.new-<pid>-<hex>`)."""
    return f".{Path(path).name}.new-"


def write_key_temp(path: str | Path, key: dict[str, int]) -> Path:
    """Write `id<TAB>unit` lines (sorted by id) to a new temporary file beside `path`,
    created with mode 0600 (never a moment where it is readable by others), and return it.

    The stage renames it over `path` (``install_key``) only once the output it decodes is
    in place, so the old key keeps decoding the old output until then."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{key_temp_prefix(path)}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("id\tunit\n")
            for unit, i in sorted(key.items(), key=lambda kv: kv[1]):
                f.write(f"{i}\t{unit}\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, KEY_MODE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def install_key(tmp: str | Path, path: str | Path) -> Path:
    """Rename a key written by ``write_key_temp`` over `path` (one atomic rename)."""
    os.replace(tmp, path)
    return Path(path)


def write_key(path: str | Path, key: dict[str, int]) -> Path:
    """Write `id<TAB>unit` lines (sorted by id) to `path` with mode 0600, atomically."""
    return install_key(write_key_temp(path, key), path)


def letters_in(value: object) -> str | None:
    """What kind of letters `value` (a csv cell or a JSON value) holds: "CJK characters",
    "letters" (Latin, kana, ...) or None when it holds none (ids, numbers, signs, labels
    such as `2` or `1,3`). JSON numbers, booleans and null hold none; lists and objects are
    searched (keys included). Used to refuse copying a text-like field in clear."""
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, dict):
        found = [letters_in(k) or letters_in(v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        found = [letters_in(v) for v in value]
    else:
        text = str(value)
        if not any(c.isalpha() for c in text):
            return None
        return "CJK characters" if any(_is_cjk(c) for c in text) else "letters"
    return "CJK characters" if "CJK characters" in found else next((f for f in found if f), None)


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return (0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3134F
            or 0x3040 <= cp <= 0x30FF or 0xAC00 <= cp <= 0xD7AF)


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
