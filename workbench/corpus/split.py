"""Deterministic train/valid/test assignment by a seeded hash of the text.

A document's split depends only on its own text and the seed, never on its position or
on the rest of the corpus: adding files later does not move documents between splits,
and exact duplicates always land in the same split.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "valid", "test")


def split_index(text: str, seed: int, valid_fraction: float, test_fraction: float) -> int:
    """0 = train, 1 = valid, 2 = test."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little", signed=True)).digest()
    u = int.from_bytes(digest, "little") / 2.0**64
    if u < valid_fraction:
        return 1
    if u < valid_fraction + test_fraction:
        return 2
    return 0
