"""Token ↔ word alignment and packing into fixed-length blocks.

One document becomes arrays over its BERT tokens (no specials yet):
    ids     int32  token ids from the model's own fast tokenizer
    word    int32  index of the jieba word holding the token's first character
                   (non-decreasing; "iphone" "##15" of the word "iPhone15" share one)
    ent     int8   entity tag: 0 outside, 2k+1 first token of an entity of type k,
                   2k+2 a following token of the same entity (types: `entity_types`)
    sent    bool   the token ends a sentence (。！？!?；…), a preferred place to cut
Alignment uses the tokenizer's character offsets: a char→word table (np.repeat of the
word lengths) indexed by each token's start offset. Characters the tokenizer drops
(spaces) simply own no token; [UNK] tokens keep their offsets and align like others.

A block is what the collator gets (stored compactly, see ``FEATURES``):
    input_ids    [CLS] piece [SEP] (piece [SEP] ...)   or   [CLS] A [SEP] B [SEP]
    word_ids     -1 on specials, else word index within the block from 0, increasing
    entity_tags  0 on specials, else ``ent`` as above
    pair_split   index of B's first token for sentence pairs, else 0
Cuts fall on word starts, preferably after a sentence end in the second half of the
window, so a word is never split across blocks (only a single word longer than a block
is cut hard). With ``pack_documents`` several short documents share a block, each
followed by [SEP]; a document is only split when it does not fit in one block.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import chain

import numpy as np

SENTENCE_END = set("。！？!?；;…")


@dataclass
class Doc:
    ids: np.ndarray
    word: np.ndarray
    ent: np.ndarray
    sent: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def slice(self, a: int, b: int) -> "Doc":
        return Doc(self.ids[a:b], self.word[a:b], self.ent[a:b], self.sent[a:b])


@dataclass
class Encoded:
    """A batch of documents as flat arrays (Doc fields concatenated) + tokens per document."""

    ids: np.ndarray
    word: np.ndarray
    ent: np.ndarray
    sent: np.ndarray
    n_tok: np.ndarray

    @classmethod
    def from_docs(cls, docs: list[Doc]) -> "Encoded":
        if not docs:
            z = np.zeros(0, np.int64)
            return cls(z.astype(np.int32), z.astype(np.int32), z.astype(np.int8), z.astype(bool), z)
        return cls(*(np.concatenate([getattr(d, f) for d in docs]) for f in ("ids", "word", "ent", "sent")),
                   np.fromiter(map(len, docs), dtype=np.int64, count=len(docs)))

    def offsets(self) -> np.ndarray:
        return np.r_[0, np.cumsum(self.n_tok)[:-1]].astype(np.int64)

    def docs(self) -> list[Doc]:
        return [Doc(self.ids[a:a + n], self.word[a:a + n], self.ent[a:a + n], self.sent[a:a + n])
                for a, n in zip(self.offsets().tolist(), self.n_tok.tolist())]


def encode_docs(texts: list[str], tokenizer, segmenter, type_index: dict[str, int], fast=None) -> Encoded:
    """Tokenize, segment and align a batch of documents, vectorised over the whole batch.

    `fast`: a FastChineseEncoder for this tokenizer (same ids and offsets, ~19x faster on
    Chinese; see fast_tokenize.py), else the Rust backend encodes the batch. Token starts,
    word lengths and entity types are flattened into single arrays, so the alignment is a
    handful of numpy operations per batch rather than per document.
    """
    if fast is not None:
        ids, starts, n_tok = fast.encode(texts)
    else:
        enc = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        n_tok = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
        ids = np.fromiter(chain.from_iterable(e.ids for e in enc), dtype=np.int32, count=int(n_tok.sum()))
        starts = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in enc)), dtype=np.int64,
                             count=2 * int(n_tok.sum()))[::2]
    n_words, word_len, word_type = segmenter.cut_batch(texts, type_index)
    text_len = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    # jieba and rjieba return every character; alignment below relies on it.
    covered = np.bincount(np.repeat(np.arange(len(texts)), n_words), weights=word_len, minlength=len(texts))
    if not np.array_equal(covered, text_len):
        i = int(np.flatnonzero(covered != text_len)[0])
        raise RuntimeError(f"the segmenter dropped characters of {texts[i][:50]!r} (a bug in the backend)")
    # Global character → global word index; a document's chars start at its text offset.
    char2word = np.repeat(np.arange(len(word_len), dtype=np.int64), word_len)
    text_start = np.r_[0, np.cumsum(text_len)[:-1]]
    word_start = np.r_[0, np.cumsum(n_words)[:-1]]
    tok_doc = np.repeat(np.arange(len(texts)), n_tok)
    gword = char2word[text_start[tok_doc] + starts] if len(ids) else np.zeros(0, np.int64)
    new_word = np.ones(len(ids), dtype=bool)
    new_word[1:] = gword[1:] != gword[:-1]
    tok_type = word_type[gword] if len(ids) else np.zeros(0, np.int16)
    ent = np.where(tok_type >= 0, 2 * tok_type + 1 + (~new_word), 0).astype(np.int8)
    local_word = (gword - word_start[tok_doc]).astype(np.int32)
    sent = np.isin(ids, _sentence_end_ids(tokenizer))
    return Encoded(ids, local_word, ent, sent, n_tok.astype(np.int64))


def _sentence_end_ids(tokenizer) -> np.ndarray:
    ids = {tokenizer.convert_tokens_to_ids(t) for t in SENTENCE_END} - {tokenizer.unk_token_id, None}
    return np.array(sorted(ids), dtype=np.int32)


def _pieces(doc: Doc, cap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `cap` tokens, cut at word starts."""
    n = len(doc)
    if n <= cap:
        return [(0, n)] if n else []
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(doc.word[1:], doc.word[:-1], out=is_start[1:])
    word_starts = np.flatnonzero(is_start).tolist()
    after_sent = np.flatnonzero(doc.sent[:-1]) + 1  # the token after a sentence end (never n)
    after_sent = after_sent[is_start[after_sent]].tolist()  # ... when it starts a word
    out, s = [], 0
    while n - s > cap:  # both lists are sorted: each cut is two binary searches
        limit = s + cap
        hi = bisect_right(after_sent, limit)
        if hi > bisect_right(after_sent, s + cap // 2):
            cut = after_sent[hi - 1]  # the last sentence end in the second half of the window
        else:
            hi = bisect_right(word_starts, limit)
            cut = word_starts[hi - 1] if hi > bisect_right(word_starts, s) else limit  # one word longer than a block: hard cut
        out.append((s, cut))
        s = cut
    out.append((s, n))
    return out


def _cut_long_documents(enc: "Encoded", offsets: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """`_pieces` for every document of a batch at once: (first token, length) of each piece,
    in document order. The same greedy cuts, as binary searches over the batch's sorted
    word starts and sentence ends, one round per piece for all documents still too long
    (a Python loop per document cost ~15 us x tens of thousands of long documents)."""
    n_total = len(enc.ids)
    nonempty = enc.n_tok > 0
    doc_first = np.zeros(n_total, dtype=bool)
    doc_first[offsets[nonempty]] = True
    is_start = doc_first.copy()
    is_start[1:] |= enc.word[1:] != enc.word[:-1]
    word_starts = np.flatnonzero(is_start)  # every document's first token is one
    after_sent = np.zeros(n_total, dtype=bool)
    after_sent[1:] = enc.sent[:-1]
    sent_cuts = np.flatnonzero(after_sent & is_start & ~doc_first)  # the word after a sentence end
    firsts = [offsets[nonempty]]
    long = enc.n_tok > cap
    s, end = offsets[long].copy(), offsets[long] + enc.n_tok[long]
    while len(s):
        limit = s + cap
        i = np.searchsorted(sent_cuts, limit, side="right") - 1
        sent = sent_cuts[np.maximum(i, 0)] if len(sent_cuts) else limit
        use_sent = (i >= 0) & (sent > s + cap // 2)  # the last sentence end in the second half
        w = word_starts[np.searchsorted(word_starts, limit, side="right") - 1]
        s = np.where(use_sent, sent, np.where(w > s, w, limit))  # else the last word start, else hard
        firsts.append(s)
        more = end - s > cap
        s, end = s[more], end[more]
    first_tok = np.sort(np.concatenate(firsts))
    return first_tok, np.diff(np.r_[first_tok, n_total])


def _split_pair(doc: Doc) -> int:
    """Where B starts in a piece: the sentence end nearest the middle, else the word start."""
    n = len(doc)
    word_starts = np.flatnonzero(np.r_[True, doc.word[1:] != doc.word[:-1]])
    word_starts = word_starts[word_starts > 0]
    if len(word_starts) == 0:
        return 0
    after_sent = np.flatnonzero(doc.sent[:-1]) + 1
    after_sent = after_sent[np.isin(after_sent, word_starts)]
    cands = after_sent if len(after_sent) else word_starts
    return int(cands[np.argmin(np.abs(cands - n / 2))])


class BlockBuilder:
    """Turns documents into blocks; `pairs` is none, sop or nsp."""

    def __init__(self, max_len: int, cls_id: int, sep_id: int, pairs: str = "none", pack_documents: bool = True):
        if max_len < 8:
            raise ValueError("max_seq_length must be at least 8")
        self.max_len, self.cls, self.sep = max_len, cls_id, sep_id
        self.pairs, self.pack = pairs, pack_documents

    def _emit(self, parts: list[Doc], pair: bool = False, nsp: int | None = None) -> dict:
        ids, words, ents = [np.array([self.cls])], [np.array([-1])], [np.array([0])]
        next_word = 0
        pair_split = 0
        for i, p in enumerate(parts):
            w = p.word - p.word[0] if len(p) else p.word
            # renumber so word ids are consecutive within the block
            w = np.cumsum(np.r_[0, (w[1:] != w[:-1]).astype(np.int64)]) + next_word if len(p) else w
            next_word = int(w[-1]) + 1 if len(p) else next_word
            ids += [p.ids, np.array([self.sep])]
            words += [w, np.array([-1])]
            ents += [p.ent, np.array([0])]
            if pair and i == 0:
                pair_split = 1 + len(p) + 1
        block = {
            "input_ids": np.concatenate(ids),
            "word_ids": np.concatenate(words).astype(np.int16),
            "entity_tags": np.concatenate(ents).astype(np.int8),
            "pair_split": pair_split,
        }
        if self.pairs == "nsp":
            block["next_sentence_label"] = -100 if nsp is None else nsp
        return block

    def _build_packed(self, enc: "Encoded") -> list[dict]:
        flat = self.pack_flat(enc)
        if flat is None:
            return []
        ids, word, ent, starts = flat
        bounds = starts[1:-1]
        return [{"input_ids": i, "word_ids": w, "entity_tags": e, "pair_split": 0}
                for i, w, e in zip(np.split(ids, bounds), np.split(word, bounds), np.split(ent, bounds))]

    def pack_flat(self, enc: "Encoded") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """pairs=none: pieces packed greedily into blocks, assembled for the whole batch at once.

        Returns the blocks concatenated (ids int64, word ids int16, entity tags int8) and the
        block start offsets (n_blocks + 1 values, the last = total length): exactly the
        values + offsets of an Arrow list column. None when the batch has no tokens.

        Output layout per block: [CLS] piece [SEP] piece [SEP] ...; every index below is
        computed with numpy over all pieces of the batch (a Python loop only assigns
        pieces to blocks, which is arithmetic on their lengths).
        """
        cap = self.max_len - 2
        offsets = enc.offsets()
        if (enc.n_tok > cap).any():  # long documents: cut at word starts
            first_tok, length = _cut_long_documents(enc, offsets, cap)
        else:
            keep = enc.n_tok > 0
            first_tok, length = offsets[keep], enc.n_tok[keep]
        if not len(length):
            return None
        # The pieces partition the flat arrays in order, so they are the source as they are.
        n_pieces = len(length)
        block_of = np.empty(n_pieces, dtype=np.int64)
        b, used = 0, 1  # [CLS]
        for k, n in enumerate(length.tolist()):
            if k and (not self.pack or used + n + 1 > self.max_len):
                b, used = b + 1, 1
            block_of[k] = b
            used += n + 1
        # Where each piece starts in the flat output: every earlier piece took n + 1 slots
        # ([SEP]) and every block so far one more ([CLS]).
        out_start = np.r_[0, np.cumsum(length + 1)[:-1]] + block_of + 1
        total = int(length.sum() + n_pieces + block_of[-1] + 1)
        tok_piece = np.repeat(np.arange(n_pieces), length)
        pos = np.arange(int(length.sum())) + np.repeat(out_start - first_tok, length)  # flat index → output
        ids = np.full(total, self.sep, dtype=np.int64)
        word = np.full(total, -1, dtype=np.int64)
        ent = np.zeros(total, dtype=np.int8)
        src_word = enc.word.astype(np.int64)
        src_ent = enc.ent.copy()
        # A piece cut inside an entity (only on hard cuts) must start it anew (odd tag).
        src_ent[first_tok] = np.where((src_ent[first_tok] > 0) & (src_ent[first_tok] % 2 == 0),
                                      src_ent[first_tok] - 1, src_ent[first_tok])
        ids[pos] = enc.ids
        ent[pos] = src_ent
        # Word ids consecutive within a block: a new word at every word change or piece start.
        flag = np.ones(len(src_word), dtype=np.int64)
        flag[1:] = src_word[1:] != src_word[:-1]
        flag[first_tok] = 1
        cw = np.cumsum(flag)
        block_tok = block_of[tok_piece]
        first_in_block = np.r_[0, np.flatnonzero(np.diff(block_tok)) + 1]
        word[pos] = cw - cw[first_in_block][block_tok]
        cls_pos = out_start[np.r_[0, np.flatnonzero(np.diff(block_of)) + 1]] - 1
        ids[cls_pos] = self.cls
        return ids, word.astype(np.int16), ent, np.r_[cls_pos, total]

    def build(self, docs: "Encoded | list[Doc]", rng: np.random.Generator | None = None) -> list[dict]:
        enc = docs if isinstance(docs, Encoded) else Encoded.from_docs(docs)
        if self.pairs == "none":
            return self._build_packed(enc)
        docs = enc.docs()
        blocks: list[dict] = []
        # Sentence pairs: [CLS] A [SEP] B [SEP] from consecutive text of one document.
        rng = rng or np.random.default_rng(0)
        cap = self.max_len - 3
        pieces = [doc.slice(a, b) for doc in docs for a, b in _pieces(doc, cap)]
        owners = [i for i, doc in enumerate(docs) for _ in _pieces(doc, cap)]
        for k, piece in enumerate(pieces):
            cut = _split_pair(piece)
            if cut == 0:
                blocks.append(self._emit([piece]))
                continue
            a, b = piece.slice(0, cut), piece.slice(cut, len(piece))
            label = 0
            if self.pairs == "nsp" and rng.random() < 0.5:
                others = [j for j, o in enumerate(owners) if o != owners[k]]
                if others:
                    other = pieces[others[int(rng.integers(len(others)))]]
                    b, label = other.slice(0, min(len(other), cap - len(a))), 1
            blocks.append(self._emit([a, b], pair=True, nsp=label))
        return blocks


def entity_ids_from_tags(tags: np.ndarray) -> np.ndarray:
    """entity_tags (0 / 2k+1 / 2k+2) → entity ids (-1 outside; one id per entity), any shape;
    ids are unique along the last axis."""
    tags = np.asarray(tags)
    starts = (tags % 2 == 1)
    ids = np.cumsum(starts, axis=-1) - 1
    return np.where(tags > 0, ids, -1).astype(np.int32)


def render_block(block: dict, tokenizer, entity_types: list[str], max_tokens: int = 80) -> str:
    """A block as text: words separated by '|', entities as [text]TYPE, specials kept.

    e.g. [CLS] 江泽民|主席|在|[北京]LOC|... — for eyeballing what masking will see."""
    ids = list(block["input_ids"])[:max_tokens]
    words = list(block["word_ids"])[:max_tokens]
    tags = list(block["entity_tags"])[:max_tokens]
    out, prev_word, open_type = [], None, None
    for tid, w, t in zip(ids, words, tags):
        token = tokenizer.convert_ids_to_tokens(int(tid))
        token = token[2:] if token.startswith("##") else token
        if open_type is not None and (t == 0 or t % 2 == 1):
            out.append(f"]{open_type}")
            open_type = None
        if w == -1:
            out.append(f" {token} ")
            prev_word = None
            continue
        if prev_word is not None and w != prev_word:
            out.append("|")
        if t % 2 == 1:
            out.append("[")
            open_type = entity_types[(t - 1) // 2]
        out.append(token)
        prev_word = w
    if open_type is not None:
        out.append(f"]{open_type}")
    return "".join(out).strip() + (" …" if len(block["input_ids"]) > max_tokens else "")
