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

from dataclasses import dataclass

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


def encode_docs(texts: list[str], tokenizer, segmenter, type_index: dict[str, int]) -> list[Doc]:
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False)
    end_ids = {tokenizer.convert_tokens_to_ids(t) for t in SENTENCE_END} - {tokenizer.unk_token_id}
    end_ids = np.array(sorted(end_ids), dtype=np.int64)
    docs = []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        words, types = segmenter.cut_with_entities(text)
        if sum(map(len, words)) != len(text):  # a backend that drops characters: fall back to chars
            words, types = list(text), [None] * len(text)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        char2word = np.repeat(np.arange(len(words), dtype=np.int32), lengths)
        ids = np.asarray(ids, dtype=np.int32)
        starts = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)[:, 0]
        word = char2word[np.minimum(starts, max(len(text) - 1, 0))] if len(ids) else np.zeros(0, np.int32)
        wtype = np.fromiter((type_index[t] if t else -1 for t in types), dtype=np.int16, count=len(types))
        tok_type = wtype[word] if len(ids) else np.zeros(0, np.int16)
        new_word = np.ones(len(ids), dtype=bool)
        new_word[1:] = word[1:] != word[:-1]
        ent = np.where(tok_type >= 0, 2 * tok_type + 1 + (~new_word), 0).astype(np.int8)
        docs.append(Doc(ids, word, ent, np.isin(ids, end_ids)))
    return docs


def _pieces(doc: Doc, cap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `cap` tokens, cut at word starts."""
    n = len(doc)
    if n <= cap:
        return [(0, n)] if n else []
    word_starts = np.flatnonzero(np.r_[True, doc.word[1:] != doc.word[:-1]])
    after_sent = np.flatnonzero(doc.sent) + 1
    out, s = [], 0
    while n - s > cap:
        limit = s + cap
        sent = after_sent[(after_sent > s + cap // 2) & (after_sent <= limit) & np.isin(after_sent, word_starts)]
        if len(sent):
            cut = int(sent[-1])
        else:
            ws = word_starts[(word_starts > s) & (word_starts <= limit)]
            cut = int(ws[-1]) if len(ws) else limit  # one word longer than a block: hard cut
        out.append((s, cut))
        s = cut
    out.append((s, n))
    return out


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

    def build(self, docs: list[Doc], rng: np.random.Generator | None = None) -> list[dict]:
        blocks: list[dict] = []
        if self.pairs == "none":
            cap = self.max_len - 2
            current: list[Doc] = []
            used = 1  # [CLS]
            for doc in docs:
                for a, b in _pieces(doc, cap):
                    piece = doc.slice(a, b)
                    if current and (not self.pack or used + len(piece) + 1 > self.max_len):
                        blocks.append(self._emit(current))
                        current, used = [], 1
                    current.append(piece)
                    used += len(piece) + 1
            if current:
                blocks.append(self._emit(current))
            return blocks
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
