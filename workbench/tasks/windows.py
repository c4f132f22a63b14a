"""Fitting texts into a model's length: sliding windows for tagging, truncation for classification.

Tagging. Labels live on characters, the model sees tokens. In BERT-Chinese every Chinese
character is one token, but a latin word or a number becomes word pieces ("2015" →
"2015", "iphone" → "iphone" or "[UNK]"), and whitespace / control characters make no
token at all. So a text is tokenized ONCE with the fast tokenizer's offsets, giving each
token its character range; windows are cut over tokens, and predictions go back to
characters through those ranges:

    text ──encode_chars──▶ CharEncoding (tokens + char ranges)
         ──tagging_windows──▶ Window per max_length - 2 tokens, `overlap` tokens shared
         ──model──▶ tags per window token
         ──stitch_tags──▶ one tag per character of the text

Rules (documented because metrics depend on them):
  - training labels: a token is inside an entity when its FIRST character is; an entity
    that no token starts in (only whitespace, or inside a word piece) cannot be learned
    and is counted in ``WindowStats.lost_entities``; entities whose edges fall inside a
    token are counted in ``misaligned_entities``. An entity cut by a window edge is
    clipped to the window (it starts with B- there).
  - stitching: each token takes its tag from the window where it is farthest from a CUT
    edge (a window edge that is also the text's start or end is not a cut: it hides no
    context); ties go to the earlier window. Token tags are decoded to entities (invalid
    sequences repaired as in ``tags.tags_to_spans``), each entity covers its tokens'
    characters from the first token's start to the last token's end, and the characters
    are re-tagged from those entities. So every character gets exactly one tag, a
    character no token covers (whitespace, dropped control characters) is O - unless it
    lies between two tokens of one entity, where it belongs to that entity.
  - overlap: at least 2 tokens, so that no token is taken from a window in which it sits
    right at a cut edge, where its training label was clipped (B- instead of I-, or
    BIOES's E- instead of I-); with overlap 0 or 1 an entity crossing a window boundary
    may come back split in two. A quarter of the window is the usual choice.

Classification: ``truncate_pair`` and ``encode_classification`` (head, or head + tail).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from workbench.tasks.tags import Span, spans_to_tags, tags_to_spans

IGNORE_INDEX = -100  # label of [CLS]/[SEP]/padding: ignored by the loss


@dataclass
class CharEncoding:
    """One text tokenized once, with the character range of every token."""

    text: str
    token_ids: list[int]  # (T,) without special tokens
    token_chars: list[tuple[int, int]]  # (T,) [start, end) character range of each token

    def __len__(self) -> int:
        return len(self.token_ids)


def encode_chars(tokenizer, texts: Sequence[str]) -> list[CharEncoding]:
    """Tokenize texts (batched) with offsets. Needs a fast (tokenizers-backed) tokenizer."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; character offsets need one")
    # verbose=False: texts longer than the model are expected here (that is what windows are for).
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"]):
        # Offsets are ordered and disjoint for BERT's pre-tokenizer; zero-width ones never occur.
        out.append(CharEncoding(text, list(ids), [(int(s), int(e)) for s, e in offsets]))
    return out


def window_ranges(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most `size` tokens, consecutive ones sharing `overlap`.

    Always at least one window (an empty text gives [(0, 0)]); the last one ends at n_tokens.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size; got size={size}, overlap={overlap}")
    ranges = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        ranges.append((start, end))
        if end >= n_tokens:
            return ranges
        start = end - overlap


@dataclass
class Window:
    """One model input: [CLS] + tokens[token_start:token_end] + [SEP]."""

    record: int  # index of the text in the list given to tagging_windows
    token_start: int
    token_end: int
    input_ids: list[int]  # (L,) L = token_end - token_start + 2
    labels: list[int] | None  # (L,) tag ids, IGNORE_INDEX at [CLS]/[SEP]; None without spans


@dataclass
class WindowStats:
    windows: int = 0
    texts_split: int = 0  # texts that needed more than one window
    lost_entities: int = 0  # entities no token starts in: not learnable
    misaligned_entities: int = 0  # entity edges inside a token: learnt approximately


def token_spans(enc: CharEncoding, spans: Sequence[Span], stats: WindowStats | None = None) -> list[Span]:
    """Character spans → token spans (a token is in an entity when its first character is)."""
    starts = [s for s, _ in enc.token_chars]
    ends = [e for _, e in enc.token_chars]
    out = []
    for s, e, t in spans:
        first, last = bisect.bisect_left(starts, s), bisect.bisect_left(starts, e)  # tokens starting in [s, e)
        if first == last:
            if stats:
                stats.lost_entities += 1
            continue
        if stats and (starts[first] != s or ends[last - 1] != e):
            stats.misaligned_entities += 1
        out.append((first, last, t))
    return out


def tagging_windows(
    encodings: Sequence[CharEncoding],
    spans: Sequence[Sequence[Span]] | None,
    tag2id: dict[str, int] | None,
    *,
    scheme: str,
    max_length: int,
    overlap: int,
    cls_id: int,
    sep_id: int,
) -> tuple[list[Window], WindowStats]:
    """Model inputs for tagging: every text cut into windows of `max_length` tokens
    (specials included) sharing `overlap` tokens; labels when `spans` are given."""
    stats = WindowStats()
    windows = []
    for k, enc in enumerate(encodings):
        ranges = window_ranges(len(enc), max_length - 2, overlap)
        stats.texts_split += len(ranges) > 1
        tok_spans = token_spans(enc, spans[k], stats) if spans is not None else None
        for a, b in ranges:
            labels = None
            if tok_spans is not None:
                clipped = [(max(s, a) - a, min(e, b) - a, t) for s, e, t in tok_spans if s < b and e > a]
                labels = [IGNORE_INDEX] + [tag2id[x] for x in spans_to_tags(clipped, b - a, scheme)] + [IGNORE_INDEX]
            windows.append(Window(k, a, b, [cls_id, *enc.token_ids[a:b], sep_id], labels))
    stats.windows = len(windows)
    return windows, stats


def stitch_tags(enc: CharEncoding, windows: Sequence[Window], window_tags: Sequence[Sequence[str]], scheme: str) -> list[str]:
    """One tag per character of `enc.text` from per-window token tags.

    `windows` are this text's windows (as made by ``tagging_windows``), `window_tags[i]`
    the predicted tags of window i's tokens WITHOUT [CLS]/[SEP] (token_end - token_start
    of them). See the module docstring for the rules.
    """
    n = len(enc)
    best_tag: list[str | None] = [None] * n
    best_score = [-1.0] * n
    for w, tags in zip(windows, window_tags):
        if len(tags) != w.token_end - w.token_start:
            raise ValueError(f"window [{w.token_start}, {w.token_end}) has {w.token_end - w.token_start} tokens, got {len(tags)} tags")
        for j, tag in enumerate(tags):
            pos = w.token_start + j
            left = pos - w.token_start if w.token_start > 0 else float("inf")  # context hidden on the left
            right = w.token_end - 1 - pos if w.token_end < n else float("inf")
            score = min(left, right)
            if score > best_score[pos]:  # strict: ties keep the earlier window
                best_tag[pos], best_score[pos] = tag, score
    missing = [i for i, t in enumerate(best_tag) if t is None]
    if missing:
        raise ValueError(f"tokens {missing[:5]} are in no window; pass all windows of the text")
    tok_spans, _ = tags_to_spans(best_tag, scheme)  # model output may be invalid: repaired
    # Tokens disjoint in token space can share a character: a folding tokenizer turns one
    # character into several tokens (… → three '.' tokens, each with offsets (k, k+1)), so two
    # entities on neighbouring tokens can both claim character k. A character carries one
    # tag: the earlier entity keeps it; a later one starts after it, or goes if nothing is left.
    char_spans, end = [], 0
    for s, e, t in tok_spans:
        a, b = max(enc.token_chars[s][0], end), enc.token_chars[e - 1][1]
        if a < b:
            char_spans.append((a, b, t))
            end = b
    return spans_to_tags(char_spans, len(enc.text), scheme)


# --------------------------------------------------------------------------- classification
def truncate_pair(a: list[int], b: list[int] | None, max_tokens: int, *, strategy: str = "head",
                  head: int | None = None) -> tuple[list[int], list[int] | None]:
    """Token ids cut to `max_tokens` in total (specials not counted).

    Single text: 'head' keeps the start; 'head_tail' keeps `head` tokens from the start
    and the rest from the end (Sun et al. 2019 found head 128 + tail 382 best for long
    reviews: the verdict is often at the end). Pairs: the longer text loses tokens from
    its end first ('longest_first', as transformers does).
    """
    if strategy not in ("head", "head_tail"):
        raise ValueError(f"strategy must be head or head_tail, not '{strategy}'")
    if b is not None:
        a, b = list(a), list(b)
        while len(a) + len(b) > max_tokens:
            (a if len(a) >= len(b) else b).pop()
        return a, b
    if len(a) <= max_tokens:
        return list(a), None
    if strategy == "head":
        return list(a[:max_tokens]), None
    keep_head = min(head if head is not None else max_tokens // 4, max_tokens)
    tail = max_tokens - keep_head
    return list(a[:keep_head]) + (list(a[-tail:]) if tail else []), None


def encode_classification(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *, max_length: int,
                          strategy: str = "head", head: int | None = None) -> tuple[dict[str, list[list[int]]], int]:
    """input_ids / token_type_ids / attention_mask for BERT ([CLS] a [SEP] (b [SEP])),
    and how many texts were truncated (report it: a large count means max_length is short)."""
    a_ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    b_ids = tokenizer(list(pairs), add_special_tokens=False)["input_ids"] if pairs is not None else [None] * len(a_ids)
    budget = max_length - (3 if pairs is not None else 2)
    out: dict[str, list[list[int]]] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
    truncated = 0
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for a, b in zip(a_ids, b_ids):
        ta, tb = truncate_pair(a, b, budget, strategy=strategy, head=head)
        truncated += len(ta) + len(tb or []) < len(a) + len(b or [])
        ids = [cls, *ta, sep] + ([*tb, sep] if tb is not None else [])
        out["input_ids"].append(ids)
        out["token_type_ids"].append([0] * (len(ta) + 2) + [1] * (len(ids) - len(ta) - 2))
        out["attention_mask"].append([1] * len(ids))
    return out, truncated
