"""Exact and near-duplicate detection in two passes with flat memory.

Pass 1 (streaming, in batches, ``Fingerprinter`` → ``FingerprintWriter``): for each
document append to three flat binary files in a work directory
  - an exact key: 64-bit blake2b of the text, lower-cased, whitespace removed;
  - a MinHash signature (``num_perm`` values, their low 16 bits kept: b-bit MinHash) of its
    character shingles;
  - LSH band keys: one uint64 per band, a random linear hash of the band's rows.
Signatures come from rensa (Rust MinHash, ``dedup.minhash=rensa``; ``auto`` picks it for long texts): the
shingles of a whole batch are hashed at once with numpy (a polynomial hash of the code
points of every k-character window, then a splitmix64 finaliser) and handed to rensa as one
flat buffer, so no Python object is made per shingle. ``dedup.minhash=datasketch`` is the
previous implementation (one datasketch MinHash per document, sha1 per shingle), kept as the
reference that benchmarks/bench_prepare.py compares the duplicate pairs with.
``dedup.minhash=numpy`` hashes the same shingle hashes with 128 multiply-shift functions in
numpy (one vectorised pass per function, the minimum per document by ``minimum.reduceat``).
It does ~7x rensa's arithmetic but needs no Python object per signature value, which is what
rensa's only export (``to_rows``, a list of lists) costs: on short texts such as Weibo posts
(~15 shingles each) that conversion is ~95% of rensa's time and numpy is the faster, on long
documents rensa is (benchmarks/bench_dedup.py measures both). The default, ``auto``, picks
one per run from the inputs' mean record length (``prepare.resolve_minhash``).
Pass 2 (``find_duplicates``) memory-maps those files and, band by band, sorts the keys
(numpy) to find documents that share a bucket; each candidate pair is verified on the
full signatures (estimated Jaccard >= threshold) and merged with union-find. The kept
document of every group is its earliest one in input order.

Why not datasketch's ``MinHashLSH``: it keeps every band key in Python dicts (~1 KiB per
document), so memory grows with the corpus; sorting fixed-width keys from memory-mapped
files costs ~8 bytes per document per band of transient memory instead, and is
vectorised.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from workbench.config import DedupConfig

_WS = re.compile(r"\s+")
KEEP, EXACT, NEAR = 0, 1, 2


def exact_key(text: str) -> int:
    norm = _WS.sub("", text).lower()
    return int.from_bytes(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).digest(), "little")


def shingles(text: str, k: int) -> list[bytes]:
    return _shingles_of_norm(_WS.sub("", text).lower(), k)


_U64 = np.uint64
_SPLITMIX = (_U64(30), _U64(0xBF58476D1CE4E5B9), _U64(27), _U64(0x94D049BB133111EB), _U64(31))


def _splitmix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place on uint64 (arithmetic wraps mod 2**64)."""
    a, m1, b, m2, c = _SPLITMIX
    h ^= h >> a
    h *= m1
    h ^= h >> b
    h *= m2
    h ^= h >> c
    return h


class Fingerprinter:
    """Exact keys, MinHash signatures and LSH band keys of a batch of texts (pure: the same
    texts give the same arrays in any process, any batch size)."""

    def __init__(self, cfg: DedupConfig):
        if cfg.near and cfg.minhash == "auto":
            raise ValueError("dedup.minhash=auto must be resolved by the stage first (prepare: resolve_minhash)")
        self.cfg = cfg
        rng = np.random.default_rng(12345)  # fixed: keys must not depend on the run's seed
        self._mult = rng.integers(1, 2**63, size=cfg.num_perm // max(cfg.bands, 1), dtype=np.uint64) | _U64(1)
        self._coef = rng.integers(1, 2**63, size=cfg.shingle_chars + 1, dtype=np.uint64) | _U64(1)
        # multiply-shift hash functions of the numpy path: odd 64-bit multipliers, top 32 bits
        self._perm = np.random.default_rng(67890).integers(1, 2**63, size=cfg.num_perm, dtype=np.uint64) | _U64(1)
        if cfg.near and cfg.minhash == "datasketch":
            from datasketch import MinHash

            proto = MinHash(num_perm=cfg.num_perm, seed=1)
            self._ds = (MinHash, proto.permutations, proto.scheme)

    def batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        norm = [_WS.sub("", t).lower() for t in texts]
        exact = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little")
                             for t in norm), dtype=np.uint64, count=len(norm))
        if not self.cfg.near:
            return exact, None, None
        if not norm:
            return exact, np.zeros((0, self.cfg.num_perm), np.uint32), np.zeros((0, self.cfg.bands), np.uint64)
        if self.cfg.minhash == "datasketch":
            sig = self._datasketch(norm)
        elif self.cfg.minhash == "numpy":
            sig = self._numpy(norm)
        else:
            sig = self._rensa(norm)
        # uint64 arithmetic wraps mod 2**64: a cheap universal hash of each band. Column by
        # column (8x faster than one .sum over a short last axis).
        rows = sig.reshape(len(norm), self.cfg.bands, -1)
        keys = np.zeros((len(norm), self.cfg.bands), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(rows.shape[2]):
                keys += rows[:, :, j].astype(np.uint64) * self._mult[j]
        return exact, sig, keys

    def _datasketch(self, norm: list[str]) -> np.ndarray:
        MinHash, perms, scheme = self._ds
        out = np.empty((len(norm), self.cfg.num_perm), dtype=np.uint32)
        for i, t in enumerate(norm):
            m = MinHash(num_perm=self.cfg.num_perm, permutations=perms, scheme=scheme)
            m.update_batch(_shingles_of_norm(t, self.cfg.shingle_chars))
            out[i] = m.hashvalues.astype(np.uint32)
        return out

    def shingle_hashes(self, norm: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """uint64 hashes of every k-character window of each normalised text, flat, with row
        offsets (a text of k characters or fewer is one token: itself)."""
        k = self.cfg.shingle_chars
        lens = np.fromiter((len(t) for t in norm), dtype=np.int64, count=len(norm))
        codes = np.frombuffer("".join(norm).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
        starts = np.zeros(len(norm), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        long = lens > k
        counts = np.where(long, lens - k + 1, 1)
        offsets = np.zeros(len(norm) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        tokens = np.empty(int(offsets[-1]), dtype=np.uint64)
        with np.errstate(over="ignore"):
            if long.any():
                windows = max(len(codes) - k + 1, 0)
                h = np.zeros(windows, dtype=np.uint64)
                for j in range(k):
                    h += codes[j:j + windows] * self._coef[j]
                owner = np.repeat(long, counts)
                pos = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
                tokens[owner] = _splitmix(h)[pos[owner]]
            short = np.flatnonzero(~long)
            if len(short):  # a text of k characters or fewer: one token, the hash of all of it
                padded = np.append(codes, _U64(0))
                col = np.arange(k)
                idx = np.where(col < lens[short, None], starts[short, None] + col, len(codes))
                h = (padded[idx] * self._coef[:k]).sum(axis=1, dtype=np.uint64)
                h += (lens[short].astype(np.uint64) + _U64(1)) * self._coef[k]  # never equal to a window
                tokens[offsets[short]] = _splitmix(h)
        return tokens, offsets.astype(np.uint64)

    def _rensa(self, norm: list[str]) -> np.ndarray:
        import rensa

        if not norm:
            return np.zeros((0, self.cfg.num_perm), dtype=np.uint32)
        tokens, offsets = self.shingle_hashes(norm)
        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(tokens, offsets, self.cfg.num_perm, 1)
        return np.array(matrix.to_rows(), dtype=np.uint32)


    def _numpy(self, norm: list[str]) -> np.ndarray:
        """MinHash by multiply-shift: h_p(x) = (a_p * x mod 2**64) >> 32 over the shingle
        hashes (already mixed by splitmix64), minimum per document; (docs, num_perm) uint32."""
        tokens, offsets = self.shingle_hashes(norm)
        starts = offsets[:-1].astype(np.int64)  # every document has >= 1 token
        out = np.empty((self.cfg.num_perm, len(norm)), dtype=np.uint32)
        h = np.empty_like(tokens)
        shift = _U64(32)
        with np.errstate(over="ignore"):
            for p, a in enumerate(self._perm):
                np.multiply(tokens, a, out=h)
                np.right_shift(h, shift, out=h)
                out[p] = np.minimum.reduceat(h, starts)
        return np.ascontiguousarray(out.T)


def _shingles_of_norm(norm: str, k: int) -> list[bytes]:
    if len(norm) <= k:
        return [norm.encode("utf-8")]
    return list({norm[i : i + k].encode("utf-8") for i in range(len(norm) - k + 1)})


class FingerprintWriter:
    """Appends per-document fingerprints (from ``Fingerprinter.batch``) to flat files in
    `workdir` (pass 1)."""

    def __init__(self, workdir: Path, cfg: DedupConfig):
        self.cfg = cfg
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self._exact = open(workdir / "exact.u64", "wb")
        self._near = cfg.near
        if self._near:
            self._sig = open(workdir / "sig.u16", "wb")
            self._bands = open(workdir / "bands.u64", "wb")

    def write(self, exact: np.ndarray, sig: np.ndarray | None, bands: np.ndarray | None) -> None:
        self._exact.write(np.ascontiguousarray(exact, dtype=np.uint64).tobytes())
        if self._near:
            # b-bit MinHash (Li & Koenig 2010) with b = 16: the low 16 bits of each value are
            # kept for verification. Two different values then agree by chance with p = 2**-16,
            # so an estimate of J reads J + (1 - J) / 65536 (+0.000004 at J = 0.75); the file
            # written and re-read is half the size (235 → 117 MB for 458k Weibo posts).
            self._sig.write(np.ascontiguousarray(sig, dtype=np.uint32).astype(np.uint16).tobytes())
            self._bands.write(np.ascontiguousarray(bands, dtype=np.uint64).tobytes())
        self.n += len(exact)

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
    for every document that is not the first of its key. The first is the earliest document
    (smallest index) of its group, found by a minimum per group; so the sort need not be
    stable, and numpy's introsort is ~4x faster on uint64 keys than its stable sort."""
    if len(keys) == 0:
        return idx[:0], idx[:0]
    order = np.argsort(keys)
    sk, si = keys[order], idx[order]
    new_group = np.ones(len(sk), dtype=bool)
    new_group[1:] = sk[1:] != sk[:-1]
    first = np.minimum.reduceat(si, np.flatnonzero(new_group))
    group_first = first[np.cumsum(new_group) - 1]
    dup = si != group_first
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

    sig = _load(workdir / "sig.u16", np.uint16, n, cfg.num_perm)
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
