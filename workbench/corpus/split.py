"""Deterministic train/valid/test assignment by a seeded hash of the text.

A document's split depends only on its own text and the seed, never on its position or
on the rest of the corpus: adding files later does not move documents between splits,
and exact duplicates always land in the same split.
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "valid", "test")


def split_index(text: str, seed: int, valid_fraction: float, test_fraction: float, purpose: str = "prepare") -> int:
    """0 = train, 1 = valid, 2 = test.

    `purpose` separates hash streams: two splits made with the same seed but different
    purposes are independent. Without it, a corpus whose train file was itself cut by this
    hash (the demo's reviews: train = hash >= 0.2) gets an almost empty valid split
    (hash < 0.02) when prepare splits it again with the same seed."""
    key = seed.to_bytes(8, "little", signed=True) + purpose.encode("utf-8")[:56]
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=key).digest()
    u = int.from_bytes(digest, "little") / 2.0**64  # in [0, 1]: digests near 2**64 round to 1.0
    # Fractions adding up to 1 hold every document out (a set to evaluate on, train empty),
    # including the rare u == 1.0 (and a sum like 0.7 + 0.2 + ... rounding just below 1).
    if u < valid_fraction or valid_fraction >= 1.0 - 1e-9:
        return 1
    if u < valid_fraction + test_fraction or valid_fraction + test_fraction >= 1.0 - 1e-9:
        return 2
    return 0


def split_indices(texts: list[str], seed: int, valid_fraction: float, test_fraction: float,
                  purpose: str = "prepare") -> list[int]:
    """``split_index`` of every text, the same values, for a batch: the keyed hash state is
    made once and copied per text (a keyed blake2b init costs a compression of the key
    block), and the thresholds are compared in numpy."""
    key = seed.to_bytes(8, "little", signed=True) + purpose.encode("utf-8")[:56]
    base = hashlib.blake2b(digest_size=8, key=key)

    def digest(text: str) -> bytes:
        h = base.copy()
        h.update(text.encode("utf-8"))
        return h.digest()

    u = np.frombuffer(b"".join(map(digest, texts)), dtype="<u8").astype(np.float64) / 2.0**64
    out = np.zeros(len(texts), dtype=np.int64)
    if valid_fraction >= 1.0 - 1e-9:
        out[:] = 1
        return out.tolist()
    out[u < valid_fraction] = 1
    all_held_out = valid_fraction + test_fraction >= 1.0 - 1e-9
    out[(u >= valid_fraction) & ((u < valid_fraction + test_fraction) | all_held_out)] = 2
    return out.tolist()
