"""Domain tokens for a pretrained BERT vocabulary: find them, place them, initialise their rows.

Google's bert-base-chinese knows ~21k tokens; a domain corpus (Weibo, product reviews,
medicine) is full of things it maps to [UNK] (emoji, rare characters, symbols) or cuts into
many pieces (brand and model names). Three kinds of candidates, each counted on the corpus:

  unk_chars  characters the tokenizer turns into [UNK]            → WordPiece vocab rows
  latin      latin/digit words split into >= 2 pieces              → WordPiece vocab rows
  lexicon    multi-character entries of user word lists            → vocab rows + added tokens

Placement: BERT's normaliser isolates every CJK character before WordPiece runs, so a
multi-character Chinese word in vocab.txt alone would never be produced; such words are
also registered as *added tokens* (matched on the raw text before normalisation), which
`tokenizers` maps onto the row that already holds them, so no id is created twice.
Rows come from Google's [unused1..99] slots first (no resize: weight shapes and every other
id stay as they were) and, if asked, from rows appended at the end (resize).

Initialisation: a new row is the mean of the embedding rows of the pieces the *old*
tokenizer made of the same text (pieces that were [UNK] left out), and its MLM output bias
the mean of theirs; a token that was nothing but [UNK] (an emoji) starts from the [UNK] row,
which is what the model saw there before. BERT ties its output embedding to the input one,
so one write covers both.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from workbench.vocab.normalize import base_normalizer_spec, install_char_map, installed_char_map

_UNUSED = re.compile(r"^\[unused(\d+)\]$")
_LATIN = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*")
SOURCES = ("unk_chars", "latin", "lexicon")


@dataclass
class NewToken:
    text: str          # as it will stand in vocab.txt (normalised like the tokenizer does)
    source: str        # one of SOURCES
    count: int         # occurrences in the counted corpus
    pieces: list[int]  # ids the old tokenizer gave this text
    row: int = -1      # its id in the extended vocabulary
    placement: str = ""  # "unused" (renamed [unusedN] row) or "appended"
    added_token: bool = False  # also registered as an added token (multi-character CJK words)


@dataclass
class Candidates:
    """Counts per source, before thresholds."""

    counts: dict[str, Counter] = field(default_factory=lambda: {s: Counter() for s in SOURCES})

    def update(self, source: str, items) -> None:
        self.counts[source].update(items)


def count_candidates(texts, tok, sources, segmenter=None, lexicon_words: set[str] | None = None,
                     cands: Candidates | None = None) -> Candidates:
    """Count raw candidates in one batch of texts (call repeatedly; pass `cands` to accumulate).

    unk_chars counts every character (filtered later, once per distinct character); latin
    counts ASCII alphanumeric runs with a letter; lexicon counts the lexicon entries among the
    words the segmenter (with the lexicons added) cuts."""
    cands = cands or Candidates()
    if "unk_chars" in sources:
        c = cands.counts["unk_chars"]
        for t in texts:
            c.update(t)  # Counter counts a string's characters in C
    if "latin" in sources:
        c = cands.counts["latin"]
        for t in texts:
            c.update(_LATIN.findall(t))
    if "lexicon" in sources and segmenter is not None and lexicon_words:
        c = cands.counts["lexicon"]
        for words in (segmenter.cut(t) for t in texts):
            c.update(w for w in words if w in lexicon_words)
    return cands


def candidate_tokens(cands: Candidates, tok, min_count: int, min_latin_chars: int) -> tuple[list[NewToken], dict]:
    """Candidates the tokenizer does not already cover as one token, counted >= min_count,
    most frequent first. Returns (tokens, per-source stats)."""
    vocab = tok.get_vocab()
    unk = tok.unk_token_id
    normalizer = tok.backend_tokenizer.normalizer
    norm = normalizer.normalize_str if normalizer is not None else (lambda s: s)
    stats: dict[str, dict] = {}
    merged: dict[str, NewToken] = {}
    for source in SOURCES:
        counter = cands.counts[source]
        if source == "unk_chars":
            items = [(ch, n) for ch, n in counter.items() if not ch.isspace()]
        elif source == "latin":
            # The tokenizer lower-cases (uncased vocab): count "iPhone" and "iphone" as one.
            folded: Counter = Counter()
            for w, n in counter.items():
                if len(w) >= min_latin_chars:
                    folded[norm(w)] += n
            items = list(folded.items())
        else:
            items = [(w, n) for w, n in counter.items() if len(w) >= 2]
        frequent = [(t, n) for t, n in items if n >= min_count]
        encoded = tok.backend_tokenizer.encode_batch([t for t, _ in frequent], add_special_tokens=False) \
            if frequent else []
        kept = 0
        for (text, n), enc in zip(frequent, encoded):
            ids = list(enc.ids)
            if source == "unk_chars":
                if ids != [unk]:
                    continue
                text = norm(text).strip()  # BertNormalizer pads CJK characters with spaces
                if not text:
                    continue
            elif len(ids) < 2 and unk not in ids:
                continue  # already a single vocabulary token
            if text in vocab or text in merged:
                continue
            merged[text] = NewToken(text=text, source=source, count=int(n), pieces=ids)
            kept += 1
        stats[source] = {"distinct": len(items), "frequent": len(frequent), "candidates": kept}
    order = {s: i for i, s in enumerate(SOURCES)}
    tokens = sorted(merged.values(), key=lambda t: (-t.count, order[t.source], t.text))
    return tokens, stats


def unused_slots(tok) -> list[int]:
    """Ids of the [unusedN] rows, by N."""
    found = [(int(m.group(1)), i) for t, i in tok.get_vocab().items() if (m := _UNUSED.match(t))]
    return [i for _, i in sorted(found)]


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002fa1f"


def needs_added_token(t: NewToken) -> bool:
    """Whether WordPiece alone would not produce the token where it occurs.

    A multi-character CJK word: the normaliser isolates its characters first. A single
    non-CJK character (emoji, symbol): the pre-tokenizer keeps it inside the surrounding
    word ("好😊😊" → "😊😊", "iphone😊"), and WordPiece turns a word with an unknown
    continuation ("##😊") into [UNK]. As an added token it is matched on its own, anywhere.
    A single CJK character and a latin word need nothing: BERT's own rules isolate them."""
    if t.source == "lexicon":
        return True
    if len(t.text) == 1:
        return not _is_cjk(t.text)
    return any(_is_cjk(ch) for ch in t.text)


def place(tokens: list[NewToken], tok, placement: str, max_new: int, keep_unused: int) -> tuple[list[NewToken], int]:
    """Assign rows. Returns (placed tokens, number left out for lack of room)."""
    slots = unused_slots(tok)[keep_unused:] if placement in ("unused", "unused_then_resize") else []
    size = len(tok)
    placed = []
    for t in tokens[:max_new]:
        if slots:
            t.row, t.placement = slots.pop(0), "unused"
        elif placement in ("resize", "unused_then_resize"):
            t.row, t.placement = size, "appended"
            size += 1
        else:
            break
        t.added_token = needs_added_token(t)
        placed.append(t)
    return placed, len(tokens) - len(placed)


def extended_tokenizer(tok, placed: list[NewToken]):
    """A tokenizer of the same class and normalisation as `tok`, with the new tokens in their
    rows; multi-character CJK words also registered as (non-special) added tokens."""
    from tokenizers import AddedToken

    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in items] != list(range(len(items))):
        raise ValueError("the tokenizer's ids are not contiguous 0..n-1; cannot extend it")
    rows = [t for t, _ in items]
    for t in sorted(placed, key=lambda t: t.row):
        if t.placement == "unused":
            rows[t.row] = t.text
        else:
            assert t.row == len(rows), (t.row, len(rows))
            rows.append(t.text)
    from transformers import BertTokenizer

    norm = base_normalizer_spec(tok)
    new = BertTokenizer(
        vocab={t: i for i, t in enumerate(rows)},
        do_lower_case=bool(norm.get("lowercase", True)),
        tokenize_chinese_chars=bool(norm.get("handle_chinese_chars", True)),
        strip_accents=norm.get("strip_accents"),
        model_max_length=tok.model_max_length,
    )
    old_added = [a for a in tok.added_tokens_decoder.values() if not a.special]
    words = [AddedToken(t.text, normalized=False, single_word=False) for t in placed if t.added_token]
    if old_added or words:
        new.add_tokens(old_added + words)
    if len(new) != len(rows):
        raise ValueError(f"extended tokenizer has {len(new)} tokens, expected {len(rows)}")
    return install_char_map(new, installed_char_map(tok)), rows  # keep prepare's character folding


def init_rows(model, placed: list[NewToken], unk_id: int) -> None:
    """Resize if rows were appended, then set each new row (input embedding, tied output
    embedding, MLM output bias) to the mean over the old tokenizer's pieces of its text."""
    import torch

    new_size = max([model.get_input_embeddings().weight.shape[0]] + [t.row + 1 for t in placed])
    with torch.no_grad():
        old_emb = model.get_input_embeddings().weight.detach().clone()
        out = model.get_output_embeddings()
        old_bias = out.bias.detach().clone() if out is not None and getattr(out, "bias", None) is not None else None
        if new_size > old_emb.shape[0]:
            model.resize_token_embeddings(new_size, mean_resizing=False)
        emb = model.get_input_embeddings().weight
        out = model.get_output_embeddings()
        bias = out.bias if out is not None and getattr(out, "bias", None) is not None else None
        tied = out is None or out.weight.data_ptr() == emb.data_ptr()
        for t in placed:
            src = [i for i in t.pieces if i != unk_id] or [unk_id]
            emb[t.row] = old_emb[src].mean(0)
            if not tied:
                out.weight[t.row] = old_emb[src].mean(0)
            if bias is not None and old_bias is not None:
                bias[t.row] = old_bias[src].mean()
    model.config.vocab_size = new_size


def tokenization_stats(texts: list[str], tok) -> dict[str, float]:
    """Tokens per character and [UNK] share over `texts` (no special tokens)."""
    enc = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    n_tok = sum(len(e.ids) for e in enc)
    n_unk = sum(int(np.sum(np.asarray(e.ids) == tok.unk_token_id)) for e in enc)
    n_chars = sum(map(len, texts))
    return {"chars": n_chars, "tokens": n_tok, "tokens_per_char": n_tok / max(n_chars, 1),
            "unk_tokens": n_unk, "unk_rate": n_unk / max(n_tok, 1)}
