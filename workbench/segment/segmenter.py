"""jieba word segmentation with user lexicons, and dictionary-based entity lookup.

Entities come from dictionaries, not from per-sentence POS tagging: a jieba word is an
entity when jieba's own dict.txt tags it with one of `entity_pos` (nr → PER, ns → LOC,
nt → ORG, nz → MISC by default) or a lexicon with an `entity_type` lists it. That is one
dict lookup per word; ``jieba.posseg`` per sentence costs ~8x the cutting itself. With
``posseg: true`` (the default) jieba's HMM POS tagger cuts and tags each sentence instead,
whatever the backend: slower, but it finds names the dictionary lacks, and it is the most
accurate entity source measured (benchmarks/results/entity_sources.md: untyped span F1 0.599
against MSRA gold vs 0.557 for the dictionary lookup, 0.348 for THUOCL, 0.443 for a small
tagger). rjieba's own tagger differs from jieba's (e.g. 李华去 as one name), so it is not used.

Backends with the same dictionary: ``jieba`` (reference) and ``rjieba`` (jieba-rs, Rust).
Both get the same user lexicon words through ``add_word``. The backend object is built
lazily in each process: ``datasets.map(num_proc=N)`` pickles the segmenter to its workers,
and the Rust object cannot be pickled.
"""

from __future__ import annotations

import os
import re
from itertools import chain, compress, repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from workbench.segment.lexicon import read_lexicon


def jieba_dict_path() -> Path:
    import jieba

    return Path(os.path.dirname(jieba.__file__)) / "dict.txt"


class Segmenter:
    def __init__(self, backend: str, lexicons: list[Any], entity_pos: dict[str, str], posseg: bool = False):
        """`lexicons`: LexiconConfig models (path, format, entity_type, on_error)."""
        self.backend = backend
        self.posseg = posseg
        self.entity_pos = dict(entity_pos)
        self.lexicon_words: list[tuple[str, int | None, str | None]] = []
        self.lexicon_stats: list[dict[str, Any]] = []
        lexicon_entities: dict[str, str] = {}
        for lex in lexicons:
            entries, bad = read_lexicon(lex.path, lex.format, lex.on_error)
            self.lexicon_stats.append({"path": str(lex.path), "entries": len(entries), "skipped_lines": bad,
                                       "entity_type": lex.entity_type})
            for e in entries:
                self.lexicon_words.append((e.word, e.freq, e.pos))
                if lex.entity_type:
                    lexicon_entities[e.word] = lex.entity_type
        # word → entity type, from jieba's dictionary POS tags, then the lexicons (they win).
        self.entities: dict[str, str] = {}
        if self.entity_pos:
            with open(jieba_dict_path(), encoding="utf-8") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[2] in self.entity_pos and len(parts[0]) > 1:
                        self.entities[parts[0]] = self.entity_pos[parts[2]]
        for word, _, pos in self.lexicon_words:
            if pos in self.entity_pos and len(word) > 1:
                self.entities[word] = self.entity_pos[pos]
        self.entities.update(lexicon_entities)
        self.entity_types = sorted(set(self.entities.values()) | set(self.entity_pos.values()))
        self._impl = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_impl"] = None  # rebuilt in the worker
        state.pop("_type_ids", None)
        state.pop("_type_ids_key", None)
        state.pop("_type_ids_min_len", None)
        return state

    def _build(self):
        if self.backend == "rjieba" and not self.posseg:
            import rjieba

            impl = rjieba.Jieba()
            for word, freq, pos in self.lexicon_words:
                impl.add_word(word, freq, pos)
        else:
            from workbench.segment.jieba_cache import new_jieba_tokenizer

            impl = new_jieba_tokenizer()  # its dictionary cache in a private dir, not /tmp
            for word, freq, pos in self.lexicon_words:
                impl.add_word(word, freq, pos)
            if self.posseg:
                import jieba.posseg

                impl = jieba.posseg.POSTokenizer(impl)
        self._impl = impl
        return impl

    def cut(self, text: str) -> list[str]:
        impl = self._impl or self._build()
        if self.posseg:
            return [p.word for p in impl.lcut(text)]
        if self.backend == "jieba":
            return impl.lcut(text)
        return self._like_jieba(text, impl.cut(text))[0]

    def _like_jieba(self, text: str, words: list[str], word_len: np.ndarray | None = None) -> tuple[list[str], np.ndarray | None]:
        """rjieba's words made to match jieba's where jieba-rs differs: a run such as
        4220-4230, inside-out or 10.4.5 that is not a dictionary word. jieba sends such a run
        (single-character DAG nodes) to its HMM cutter, which splits it with
        ``[a-zA-Z0-9]+(?:\\.\\d+)?%?`` (jieba.finalseg.re_skip) into 4220 | - | 4230; jieba-rs keeps
        it whole. With this, rjieba cuts
        99.98% of the bench documents and 100% of the CLUE sample like jieba (99.10% and
        92.96% without); the rest are ties between equally probable routes.

        Only words containing one of ``+#&._%-`` can be affected: they are found from the
        positions of those characters (a regex over the text), not by a pass over every word.
        `word_len` (the words' lengths) is computed here when not given, and only if needed."""
        if not _JOINERS.search(text):
            return words, word_len
        if word_len is None:
            word_len = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        ends = np.cumsum(word_len)
        pos = np.fromiter((m.start() for m in _JOINERS.finditer(text)), dtype=np.int64)
        impl = self._impl or self._build()
        parts_w, parts_l, prev = [], [], 0
        for i in np.unique(np.searchsorted(ends, pos, side="right")).tolist():
            w = words[i]
            if len(w) < 2 or not w.isascii() or impl.has_word(w):
                continue
            pieces = [x for x in _FINALSEG_SKIP.split(w) if x]
            if len(pieces) < 2:
                continue
            parts_w += [words[prev:i], pieces]
            parts_l += [word_len[prev:i], np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))]
            prev = i + 1
        if not prev:
            return words, word_len
        parts_w.append(words[prev:])
        parts_l.append(word_len[prev:])
        return list(chain.from_iterable(parts_w)), np.concatenate(parts_l)

    def cut_batch(self, texts: list[str], type_index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A batch's words as flat arrays: words per text (int64), each word's length in
        characters (int64) and entity type id (int16, -1: none).

        The hot path of the segment stage. The backend cuts the whole batch in one call, the
        texts joined by NUL (see `cut_joined`), and entity types are one dictionary lookup per
        word that can be an entity (the word → type-id table is built once per type_index)."""
        if self.posseg:
            pairs = [self.cut_with_entities(t) for t in texts]
            flat = [w for ws, _ in pairs for w in ws]
            ids = [type_index[t] if t else -1 for _, ts in pairs for t in ts]
            return (np.fromiter((len(ws) for ws, _ in pairs), dtype=np.int64, count=len(pairs)),
                    np.fromiter(map(len, flat), dtype=np.int64, count=len(flat)), np.asarray(ids, dtype=np.int16))
        impl = self._impl or self._build()
        if self.backend == "jieba":
            n_words, flat, word_len = cut_joined(impl.lcut, texts)
        else:
            n_words, flat, word_len = cut_joined(impl.cut, texts, refine=self._like_jieba)
        key = tuple(sorted(type_index.items()))
        if getattr(self, "_type_ids_key", None) != key:
            self._type_ids = {w: type_index[t] for w, t in self.entities.items() if t in type_index}
            self._type_ids_min_len = min(map(len, self._type_ids), default=0)
            self._type_ids_key = key
        ids = np.full(len(flat), -1, dtype=np.int16)
        # Only words as long as the shortest entity are looked up (entities are multi-character
        # unless a lexicon says otherwise: about half the words are skipped), with
        # map(dict.get) so no Python frame runs per word.
        if self._type_ids:
            cand = np.flatnonzero(word_len >= self._type_ids_min_len)
            if len(cand):
                words = itemgetter(*cand.tolist())(flat) if len(cand) > 1 else (flat[int(cand[0])],)
                ids[cand] = np.fromiter(map(self._type_ids.get, words, repeat(-1, len(cand))),
                                        dtype=np.int16, count=len(cand))
        return n_words, word_len, ids

    def cut_with_entities(self, text: str) -> tuple[list[str], list[str | None]]:
        """Words, and each word's entity type or None."""
        if self.posseg:
            impl = self._impl or self._build()
            pairs = impl.lcut(text)
            words = [p.word for p in pairs]
            types = [self.entity_pos.get(p.flag) if len(p.word) > 1 else None for p in pairs]
            return words, [self.entities.get(w, t) for w, t in zip(words, types)]
        words = self.cut(text)
        get = self.entities.get
        return words, [get(w) for w in words]


SEPARATOR = "\x00"
# The non-alphanumeric characters of jieba's word-run class, and jieba.finalseg's re_skip.
_JOINERS = re.compile(r"[+#&._%\-]")
_FINALSEG_SKIP = re.compile(r"([a-zA-Z0-9]+(?:\.\d+)?%?)")


def cut_joined(cut, texts: list[str], refine=None) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Cut a batch of texts with one call of `cut` (a jieba-style ``str → list[str]``):
    returns words per text, the words of all texts in order, and their lengths.

    The texts are joined by NUL. jieba and jieba-rs only ever make words of runs of CJK,
    latin letters, digits and ``+#&._%-``; any other character is a word on its own, so a
    NUL is a block boundary that changes nothing on either side: the words are exactly
    those of cutting each text alone (tested against per-text cutting on real corpora).
    One call saves the per-call overhead of ~20k small calls (about 10% of rjieba's time)
    and yields the flat word list the stage needs anyway. Where the separators do not come
    back as their own words (a backend that behaves differently), the texts are cut one
    by one instead.
    """
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    joined = SEPARATOR.join(texts)
    flat = cut(joined) if texts else []
    word_len = np.fromiter(map(len, flat), dtype=np.int64, count=len(flat))
    if refine is not None:  # (text, words[, lengths]) → (words, lengths), e.g. Segmenter._like_jieba
        flat, word_len = refine(joined, flat, word_len)
    if len(texts) > 1:
        ends = np.cumsum(word_len)
        sep_end = np.cumsum(text_len + 1)[:-1]  # where each separator ends, in characters
        sep = np.searchsorted(ends, sep_end)
        if not (len(ends) and sep[-1] < len(ends) and np.array_equal(ends[sep], sep_end)
                and (word_len[sep] == 1).all()):
            words = [cut(t) for t in texts]
            if refine is not None:
                words = [refine(t, w)[0] for t, w in zip(texts, words)]
            flat = list(chain.from_iterable(words))
            return (np.fromiter(map(len, words), dtype=np.int64, count=len(words)), flat,
                    np.fromiter(map(len, flat), dtype=np.int64, count=len(flat)))
        keep = np.ones(len(flat), dtype=bool)
        keep[sep] = False
        n_words = np.diff(np.r_[-1, sep, len(flat)]) - 1
        flat = list(compress(flat, keep.tolist()))
        return n_words.astype(np.int64), flat, word_len[keep]
    return np.array([len(flat)] * len(texts), dtype=np.int64), flat, word_len
