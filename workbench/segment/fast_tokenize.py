"""Exact, faster encoding of Chinese text for BERT-Chinese WordPiece tokenizers.

Why: in the segment stage the Rust tokenizer was the largest cost (about 1 Mchar/s with
offsets on this machine), because BERT's pre-tokenizer turns every Chinese character into
its own "word" object. But for those characters the answer never depends on context: BERT's
normaliser isolates each CJK character and its pre-tokenizer isolates each punctuation
character, so each is exactly one vocabulary lookup. Only the runs between them (latin
words, digits, emoji, ...) need WordPiece.

How: each character is classified, the first time it is seen, by the tokenizer itself:
  1 = always exactly one token on its own (CJK, punctuation): its id comes from the table;
  2 = whitespace: a boundary that makes no token;
  0 = anything else: consecutive class-0 characters form a run, and each distinct run is
      encoded by the real tokenizer (cached), offsets shifted to the run's position.
A run is bounded by characters that are pre-token boundaries for BERT, so encoding it
alone gives the same tokens as encoding it in context. The table entries come from the
tokenizer's own output for each single character (a character that does not encode to
exactly one token on its own is class 0), so normalisation details (lower-casing, accent
stripping, NFD of compatibility ideographs) stay the tokenizer's. Tests compare both
paths on real corpora and on random Unicode strings.

Only tokenizers with BERT's normaliser (optionally after prepare's one-character folding
rules, see workbench/vocab/normalize.py) + pre-tokenizer + WordPiece, and no
multi-character added tokens, qualify (`supported`); others use the plain Rust path.
"""

from __future__ import annotations

import numpy as np

from workbench.vocab.normalize import split_char_map
from workbench.vocab.tokenizer import tokenizer_spec

_BMP = 1 << 16


def supported(tokenizer) -> bool:
    try:
        spec = tokenizer_spec(tokenizer)
    except Exception:
        return False
    # prepare's character folding may sit in front (workbench.vocab.normalize): each rule
    # maps one character, context-free, so the per-character probe below sees its effect.
    norm = split_char_map(spec.get("normalizer") or {})[1]
    pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    # Added tokens are matched before normalisation. Single characters (extend-vocab's emoji)
    # behave like isolated characters, which the probe sees; longer ones (domain words) can
    # span several characters, which the per-character table cannot express.
    words = [a for a in spec.get("added_tokens") or [] if not a.get("special") and len(a.get("content", "")) > 1]
    return (norm.get("type") == "BertNormalizer" and norm.get("handle_chinese_chars", False)
            and pre.get("type") == "BertPreTokenizer" and model.get("type") == "WordPiece" and not words)


class FastChineseEncoder:
    """encode(texts) → (ids int32, char starts int64, tokens per text int64), flattened."""

    def __init__(self, tokenizer):
        self.backend = tokenizer.backend_tokenizer
        self.a_ids = self.backend.encode("a", add_special_tokens=False).ids
        self.cls = np.zeros(_BMP, dtype=np.uint8)
        self.ids = np.zeros(_BMP, dtype=np.int32)
        self.probed = np.zeros(_BMP, dtype=bool)
        self.probed[0xD800:0xE000] = True  # surrogates never occur in str
        self._runs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _probe(self, codepoints: np.ndarray) -> None:
        """Classify BMP characters not seen before, with the tokenizer itself: a character
        the pre-tokenizer always isolates gives a single token between two a's ("a<c>a")
        and the same token alone; whitespace gives none. Anything else stays class 0."""
        chars = [chr(c) for c in codepoints.tolist()]
        probes = self.backend.encode_batch([f"a{c}a" for c in chars], add_special_tokens=False)
        alone = self.backend.encode_batch(chars, add_special_tokens=False)
        for c, probe, single in zip(chars, probes, alone):
            cp = ord(c)
            if len(probe.ids) == 3 and probe.offsets[1] == (1, 2) and len(single.ids) == 1 \
                    and probe.ids[1] == single.ids[0] and [probe.ids[0], probe.ids[2]] == self.a_ids * 2:
                self.cls[cp], self.ids[cp] = 1, single.ids[0]
            elif c.isspace() and probe.ids == self.a_ids * 2 and len(single.ids) == 0:
                self.cls[cp] = 2
        self.probed[codepoints] = True

    def _run_tokens(self, runs: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        missing = list({r for r in runs if r not in self._runs})
        if missing:
            for r, e in zip(missing, self.backend.encode_batch(missing, add_special_tokens=False)):
                self._runs[r] = (np.asarray(e.ids, dtype=np.int32),
                                 np.asarray([o[0] for o in e.offsets], dtype=np.int64))
            if len(self._runs) > 500_000:  # bound the cache on huge, diverse corpora
                self._runs = {r: self._runs[r] for r in set(runs)}
        return [self._runs[r] for r in runs]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        joined = "".join(texts)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        doc_start = np.r_[0, np.cumsum(lengths)[:-1]]
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        bmp_cp = cp[cp < _BMP]
        new = np.unique(bmp_cp[~self.probed[bmp_cp]])
        if len(new):
            self._probe(new)
        cls = np.where(cp < _BMP, self.cls[np.minimum(cp, _BMP - 1)], 0)
        # Runs of class-0 characters, never crossing a document boundary.
        in_run = cls == 0
        first = np.zeros(len(cp) + 1, dtype=bool)  # position starts a document
        first[doc_start] = True
        prev_in = np.r_[False, in_run[:-1]] & ~first[:-1]
        next_in = np.r_[in_run[1:], False] & ~first[1:]
        run_starts = np.flatnonzero(in_run & ~prev_in)
        run_ends = np.flatnonzero(in_run & ~next_in) + 1
        runs = [joined[a:b] for a, b in zip(run_starts.tolist(), run_ends.tolist())]
        encoded = self._run_tokens(runs)
        single = np.flatnonzero(cls == 1)
        parts_pos = [single] + [s + rel for s, (_, rel) in zip(run_starts.tolist(), encoded)]
        parts_ids = [self.ids[cp[single]]] + [ids for ids, _ in encoded]
        pos = np.concatenate(parts_pos) if parts_pos else np.zeros(0, np.int64)
        ids = np.concatenate(parts_ids).astype(np.int32) if parts_ids else np.zeros(0, np.int32)
        order = np.argsort(pos, kind="stable")
        pos, ids = pos[order], ids[order]
        doc = np.searchsorted(doc_start, pos, side="right") - 1
        per_doc = np.bincount(doc, minlength=len(texts)).astype(np.int64)
        return ids, pos - doc_start[doc], per_doc
