"""Exact and near-duplicate detection in two passes with flat memory.

Pass 1 (streaming, ``FingerprintWriter``): for each document append to three flat binary
files in a work directory
  - an exact key: 64-bit blake2b of the text, lower-cased, whitespace removed;
  - a MinHash signature (datasketch, ``num_perm`` uint32) of its character shingles;
  - LSH band keys: one uint64 per band, a random linear hash of the band's rows.
Pass 2 (``find_duplicates``) memory-maps those files and, band by band, sorts the keys
(numpy) to find documents that share a bucket; each candidate pair is verified on the
full signatures (estimated Jaccard >= threshold) and merged with union-find. The kept
document of every group is its earliest one in input order.

Why not datasketch's ``MinHashLSH``: it keeps every band key in Python dicts (~1 KiB per
document), so memory grows with the corpus; sorting fixed-width keys from memory-mapped
files costs ~8 bytes per document per band of transient memory instead, and is
vectorised. datasketch still computes the signatures.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import MinHash

from workbench.config import DedupConfig

_WS = re.compile(r"\s+")
KEEP, EXACT, NEAR = 0, 1, 2


def exact_key(text: str) -> int:
    norm = _WS.sub("", text).lower()
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


def shingles(text: str, k: int) -> list[bytes]:
    norm = _WS.sub("", text).lower()
    if len(norm) <= k:
        return [norm.encode("utf-8")]
    return list({norm[i : i + k].encode("utf-8") for i in range(len(norm) - k + 1)})


class FingerprintWriter:
    """Appends per-document fingerprints to flat files in `workdir` (pass 1)."""

    def __init__(self, workdir: Path, cfg: DedupConfig):
        self.cfg = cfg
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self._exact = open(workdir / "exact.u64", "wb")
        self._near = cfg.near
        if self._near:
            proto = MinHash(num_perm=cfg.num_perm, seed=1)
            self._perms, self._scheme = proto.permutations, proto.scheme
            rng = np.random.default_rng(12345)  # fixed: keys must not depend on the run's seed
            rows = cfg.num_perm // cfg.bands
            self._mult = rng.integers(1, 2**63, size=rows, dtype=np.uint64) | np.uint64(1)
            self._sig = open(workdir / "sig.u32", "wb")
            self._bands = open(workdir / "bands.u64", "wb")

    def add(self, text: str) -> None:
        self._exact.write(np.uint64(exact_key(text)).tobytes())
        if self._near:
            m = MinHash(num_perm=self.cfg.num_perm, permutations=self._perms, scheme=self._scheme)
            m.update_batch(shingles(text, self.cfg.shingle_chars))
            sig = m.hashvalues.astype(np.uint32)
            self._sig.write(sig.tobytes())
            # uint64 arithmetic wraps mod 2**64: a cheap universal hash of each band.
            keys = (sig.reshape(self.cfg.bands, -1).astype(np.uint64) * self._mult).sum(axis=1, dtype=np.uint64)
            self._bands.write(keys.tobytes())
        self.n += 1

    def close(self) -> None:
        for f in (self._exact, getattr(self, "_sig", None), getattr(self, "_bands", None)):
            if f is not None:
                f.close()


@dataclass
class Duplicates:
    kind: np.ndarray  # int8 per document: KEEP, EXACT or NEAR
    of: np.ndarray  # int64 per document: index of the kept document it duplicates, -1 if kept
    similarity: np.ndarray  # float32: estimated Jaccard to `of` (1.0 for exact)


def _load(path: Path, dtype, n: int, width: int = 1) -> np.ndarray:
    if n == 0:
        return np.zeros((0, width) if width > 1 else 0, dtype=dtype)
    arr = np.memmap(path, dtype=dtype, mode="r")
    return arr.reshape(n, width) if width > 1 else arr


def _first_of_group(keys: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For documents `idx` with `keys`: pairs (first document with the same key, document),
    for every document that is not the first of its key. Stable sort → first = earliest."""
    order = np.argsort(keys, kind="stable")
    sk, si = keys[order], idx[order]
    new_group = np.ones(len(sk), dtype=bool)
    new_group[1:] = sk[1:] != sk[:-1]
    group_first = si[np.maximum.accumulate(np.where(new_group, np.arange(len(sk)), 0))]
    dup = ~new_group
    return group_first[dup], si[dup]


def _root(parent: dict[int, int], x: int) -> int:
    while parent.get(x, x) != x:
        parent[x] = parent.get(parent[x], parent[x])  # path halving
        x = parent[x]
    return x


def find_duplicates(workdir: Path, n: int, cfg: DedupConfig) -> Duplicates:
    kind = np.zeros(n, dtype=np.int8)
    of = np.full(n, -1, dtype=np.int64)
    sim = np.zeros(n, dtype=np.float32)
    if n == 0:
        return Duplicates(kind, of, sim)
    if cfg.exact:
        first, dup = _first_of_group(_load(workdir / "exact.u64", np.uint64, n), np.arange(n))
        kind[dup], of[dup], sim[dup] = EXACT, first, 1.0
    if not cfg.near:
        return Duplicates(kind, of, sim)

    sig = _load(workdir / "sig.u32", np.uint32, n, cfg.num_perm)
    bands = _load(workdir / "bands.u64", np.uint64, n, cfg.bands)
    alive = np.flatnonzero(kind == KEEP)
    pairs = []
    for b in range(cfg.bands):
        a, d = _first_of_group(np.ascontiguousarray(bands[alive, b]), alive)
        if len(a):
            pairs.append(np.stack([a, d], axis=1))
    if not pairs:
        return Duplicates(kind, of, sim)
    pairs = np.unique(np.concatenate(pairs), axis=0)
    # Verify on the full signatures, in slices to bound memory.
    est = np.zeros(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), 65536):
        p = pairs[s : s + 65536]
        est[s : s + 65536] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    keep = est >= cfg.threshold
    parent: dict[int, int] = {}
    for a, d in pairs[keep].tolist():
        ra, rd = _root(parent, a), _root(parent, d)
        if ra != rd:
            parent[max(ra, rd)] = min(ra, rd)  # the earliest document stays the root
    members = np.fromiter(parent.keys(), dtype=np.int64, count=len(parent))
    roots = np.array([_root(parent, int(m)) for m in members], dtype=np.int64)
    moved = members[roots != members]
    roots = roots[roots != members]
    kind[moved], of[moved] = NEAR, roots
    if len(moved):
        sim[moved] = (sig[moved] == sig[roots]).mean(axis=1)
    return Duplicates(kind, of, sim)
