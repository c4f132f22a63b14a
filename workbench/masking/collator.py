"""Dynamic MLM masking for Chinese BERT: token, whole-word, entity/n-gram and span masking.

Why this exists
    transformers 5 removed ``DataCollatorForWholeWordMask``; its replacement,
    ``DataCollatorForLanguageModeling(whole_word_mask=True)``, finds words by gaps in the
    character offsets. Chinese has no spaces, so a whole clause becomes one "word". Here the
    word boundaries come from jieba, computed ONCE by the ``segment`` stage and stored next
    to the token ids; this collator only reads them and never re-segments text.

Input: one example = one packed block (a row of a ``datasets`` dataset; values may be
python lists, numpy arrays or CPU tensors)
    input_ids   [n] ints     [CLS] A [SEP] or [CLS] A [SEP] B [SEP]; no padding stored
    word_ids    [n] ints     -1 on special tokens, else the jieba word the token belongs to;
                             consecutive tokens with the same id form one whole word
    entity_ids  [n] ints     -1 outside entities; the tokens of one entity share an id
                             (entities are whole words, possibly several consecutive ones)
    or entity_tags [n] ints  what the segment stage stores instead: 0 outside, 2k+1 on an
                             entity's first token, 2k+2 inside (decoded to entity_ids here)
    pair_split  int          index of the first token of B in a sentence pair, else 0
                             (optional key: missing means 0)
    next_sentence_label int  optional; passed through when every example has it
  Only the keys the strategy needs are read (token: input_ids; whole_word, span: +word_ids;
  entity_ngram: +entity_ids). Words and entities are RUNS of equal consecutive ids, so the
  absolute values do not matter (they need not start at 0 or increase); two adjacent
  words must not share an id, and specials must be -1 in both.

Output: a dict of torch tensors, B = len(examples), L = longest block rounded up to
``pad_to_multiple_of``
    input_ids       [B, L] int64  masked ids, padded with [PAD]
    attention_mask  [B, L] int64  1 on real tokens, 0 on padding
    token_type_ids  [B, L] int64  0 for [CLS] A [SEP] (and padding), 1 for B [SEP]
    labels          [B, L] int64  the ORIGINAL id where a token is labelled, else -100
    sentence_order_label [B] int64  only with cfg.sop: 0 = original order (A, B),
                             1 = swapped (B, A) — ALBERT's convention — and -100 (ignored by
                             the loss) for blocks that are not sentence pairs
    next_sentence_label  [B] int64  when the examples carry it, unchanged

What gets labelled
    Special tokens — ids in ``special_ids`` ([CLS], [SEP], [PAD], [MASK] and [UNK]: the
    tokenizer's ``all_special_ids``; a label of [UNK] teaches nothing) and tokens whose
    word id is -1 — are never labelled. Each sequence has a BUDGET of round(mask_prob x its
    maskable tokens) labels (half rounds up; at least 1 when it has any). A strategy cuts
    the sequence into UNITS, and units are labelled whole, in random order, until the
    budget is reached:
      token         one unit per token (BERT)
      whole_word    one unit per jieba word (Chinese BERT-wwm)
      entity_ngram  one unit per entity; the other words are cut into n-grams of 1..max_ngram
                    consecutive non-entity words (ERNIE)
      span          spans of 1..max_span consecutive whole words, entities ignored (SpanBERT)
      mixture       every sequence draws one of the above by ``cfg.mixture`` weight
    Units come from the word/entity ids only, so an [UNK] inside a word does not split it:
    the word is still labelled whole, minus the [UNK]. n-gram and span lengths follow a
    geometric(ngram_p) distribution truncated to 1..max and renormalised (SpanBERT's:
    P(l) ∝ p(1-p)^(l-1); mean 1.85 words for p=0.2, max 3; mean 3.8 words for max 10); a
    run of words that ends (at a special token, or an entity for n-grams) cuts its last
    n-gram/span short.
    The budget rule: units are taken while they fit; the one that would overshoot is taken
    with probability (budget - labels so far) / its size, so the EXPECTED number of labels
    per sequence is exactly the budget (a deterministic "closest wins" rule is biased when
    units have 2+ tokens); after it, none. The first unit drawn is always taken, so a
    sequence gets at least one label (unless that unit is nothing but [UNK]s and the next
    one loses its coin: vanishingly rare). Units weigh their maskable tokens only.
    Of the labelled tokens, replace_mask become [MASK], replace_random a random id from
    ``random_ids`` (never special, [unusedN] or [UNK]) and the rest stay unchanged, drawn
    independently per token.

How it is vectorised (numpy over the whole padded batch; no Python loop over tokens, and
the only per-sequence Python is reading the examples)
    1. Pad: python lists are packed with ``struct`` (one cached Struct per length, padding
       bytes appended) and viewed as one [B, L] array — ~10 ns per value, twice as fast as
       ``np.fromiter``/``np.array``, which matters because converting python ints is the
       biggest single cost. Arrays are concatenated and scattered. Only the keys the
       strategy needs are read.
    2. Unit starts: boolean [B, L] arrays from shifted comparisons (a word starts where its
       id changes). n-grams/spans: draw a length for EVERY word (16 random bits into an
       inverse-CDF table); within each run of words the running sums of those lengths are
       the offsets where the next group starts, kept while inside the run — so a run of w
       words never needs more than its own w draws, and no loop follows the groups.
    3. Selection: units are numbered by a cumulative sum of the starts; a unit's weight is
       the difference of the cumulative maskable count at consecutive starts. ONE sort of
       int64 keys [row | random bits | unit index] shuffles units inside rows while rows
       keep their place; a cumulative sum of the shuffled weights minus each row's offset is
       the number of labels before each unit, which decides take / coin / stop. Back to
       tokens with one gather ``chosen[unit_of_token]``.
    4. 80/10/10 on the flat indices of the labelled tokens; attention_mask and
       token_type_ids are rows gathered from a cached [L+1, L] step matrix;
       ``torch.from_numpy`` once per output, no torch op per example.

Sentence-order prediction (cfg.sop)
    Pair blocks swap A and B with p=0.5: [CLS] A [SEP] B [SEP] -> [CLS] B [SEP] A [SEP]
    (a rotation of positions 1..n-1); word and entity ids move with their tokens and
    token_type_ids follow the new order. HF ``AlbertForPreTraining`` takes
    ``sentence_order_label``; for ``BertForPreTraining`` rename it to
    ``next_sentence_label`` (its -100s are ignored by the loss there too). Caveat: a batch
    with NO pair block has only -100 SOP labels and HF's mean cross-entropy over zero
    targets is NaN; with sop on, make sure the data holds sentence pairs.

Randomness, seeding and DataLoader workers
    The collator owns a numpy Generator and never touches global RNGs. Masks differ on
    every call. The Generator is (re)created lazily in each process: with ``seed=None``
    from fresh OS entropy; with a seed, in the main process from ``seed`` (same seed, same
    calls -> same masks), in a DataLoader worker from (seed, ``torch.initial_seed()``). The
    DataLoader gives each worker ``base_seed + worker_id`` with ``base_seed`` drawn from the
    main process's torch RNG for every epoch, so workers differ from each other and from
    epoch to epoch, and a run is reproducible once torch is seeded (HF Trainer does). In any
    other child process (e.g. ``datasets.map(num_proc=...)``) the pid is mixed in so forked
    copies never repeat each other's masks (not reproducible). Pickling drops the Generator.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from workbench.config import MaskingConfig
from workbench.segment.blocks import entity_ids_from_tags
from workbench.errors import ConfigError

STRATEGIES = ("token", "whole_word", "entity_ngram", "span")
# Keys each strategy reads (input_ids always). On python-list inputs, turning python ints
# into numpy is the biggest single cost (~10-20 ns per value), so read no more than needed.
_KEYS_NEEDED = {
    "token": (),
    "whole_word": ("word_ids",),
    "entity_ngram": ("word_ids", "entity_ids"),
    "span": ("word_ids",),
}
IGNORE_INDEX = -100
_UNUSED = re.compile(r"\[unused\d+\]")


def replacement_ids(tokenizer: Any) -> np.ndarray:
    """Ids a labelled token may be replaced by: the vocabulary minus special tokens,
    ``[unusedN]`` and [UNK]. int64, sorted."""
    excluded = set(tokenizer.all_special_ids)
    if tokenizer.unk_token_id is not None:
        excluded.add(tokenizer.unk_token_id)
    ids = [i for tok, i in tokenizer.get_vocab().items() if i not in excluded and not _UNUSED.fullmatch(tok)]
    return np.array(sorted(ids), dtype=np.int64)


def truncated_geometric_cdf(p: float, max_len: int) -> np.ndarray:
    """CDF over lengths 1..max_len of P(l) ∝ p (1-p)^(l-1) (renormalised). [max_len] float64."""
    probs = p * (1.0 - p) ** np.arange(max_len)
    cdf = np.cumsum(probs / probs.sum())
    cdf[-1] = 1.0
    return cdf


_LENGTH_BITS = 16


def length_table(p: float, max_len: int) -> np.ndarray:
    """Inverse-CDF table: 16 random bits index it to a length in 1..max_len drawn from the
    truncated geometric (each probability exact to 2**-16). [2**16] int16 (small, so the
    random lookups stay in cache)."""
    cdf = truncated_geometric_cdf(p, max_len)
    cells = (np.arange(2**_LENGTH_BITS) + 0.5) / 2**_LENGTH_BITS
    return (np.searchsorted(cdf, cells, side="right") + 1).astype(np.int16)


class MaskingCollator:
    """Pads a list of blocks into a batch and draws new MLM labels (see the module doc).

    ``tokenizer`` supplies ``mask_token_id``, ``pad_token_id``, ``all_special_ids`` and the
    vocabulary for ``random_ids``; any of them may be given explicitly instead (all four are
    required without a tokenizer). ``seed`` makes the masks reproducible; ``pad_to_multiple_of``
    rounds the padded length up (8 suits tensor cores; None pads to the longest block).
    """

    def __init__(
        self,
        cfg: MaskingConfig,
        tokenizer: Any = None,
        *,
        mask_token_id: int | None = None,
        pad_token_id: int | None = None,
        special_ids: Sequence[int] | None = None,
        random_ids: Sequence[int] | np.ndarray | None = None,
        seed: int | None = None,
        pad_to_multiple_of: int | None = 8,
    ) -> None:
        problems = cfg.problems()
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            problems.append("pad_to_multiple_of: must be >= 1 or None")
        if problems:
            raise ConfigError(problems)
        if tokenizer is not None:
            mask_token_id = tokenizer.mask_token_id if mask_token_id is None else mask_token_id
            pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
            special_ids = list(tokenizer.all_special_ids) if special_ids is None else special_ids
            random_ids = replacement_ids(tokenizer) if random_ids is None else random_ids
        missing = [name for name, v in (("mask_token_id", mask_token_id), ("pad_token_id", pad_token_id),
                                        ("special_ids", special_ids), ("random_ids", random_ids)) if v is None]
        if missing:
            raise ValueError(f"MaskingCollator: {', '.join(missing)} missing; pass a tokenizer or give them explicitly")
        self.cfg = cfg
        self.mask_token_id = int(mask_token_id)
        self.pad_token_id = int(pad_token_id)
        self.special_ids = np.unique(np.array([*special_ids, self.mask_token_id, self.pad_token_id], dtype=np.int64))
        self.random_ids = np.asarray(random_ids, dtype=np.int64)
        if self.random_ids.size == 0 and cfg.replace_random > 0:
            raise ValueError("MaskingCollator: random_ids is empty but replace_random > 0")
        if np.isin(self.random_ids, self.special_ids).any():
            raise ValueError("MaskingCollator: random_ids contains special token ids")
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of

        # maskable = table[id]: False on special ids. It spans the vocabulary so a plain
        # gather works; ids past its end read the last entry, a True sentinel.
        size = max(int(self.special_ids.max()), int(self.random_ids.max(initial=0)),
                   len(tokenizer) if tokenizer is not None else 0) + 2
        self._maskable_table = np.ones(size, dtype=bool)
        self._maskable_table[self.special_ids] = False

        if cfg.strategy == "mixture":
            items = [(k, w) for k, w in cfg.mixture.items() if w > 0]
            self.strategies = tuple(k for k, _ in items)
            weights = np.array([w for _, w in items], dtype=np.float64)
            self.weights = weights / weights.sum()
        else:
            self.strategies = (cfg.strategy,)
            self.weights = np.ones(1)
        self.keys = tuple(sorted({k for s in self.strategies for k in _KEYS_NEEDED[s]}))
        self._ngram_lengths = length_table(cfg.ngram_p, cfg.max_ngram)
        self._span_lengths = length_table(cfg.ngram_p, cfg.max_span)
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    # ------------------------------------------------------------------ randomness
    def _generator(self) -> np.random.Generator:
        """This process's Generator, created on first use in each process (see module doc)."""
        pid = os.getpid()
        if self._rng is None or self._rng_pid != pid:
            if self.seed is None:
                self._rng = np.random.default_rng()
            elif torch.utils.data.get_worker_info() is not None:
                self._rng = np.random.default_rng([self.seed, torch.initial_seed()])
            elif self._rng_pid is not None or _is_child_process():
                self._rng = np.random.default_rng([self.seed, pid])
            else:
                self._rng = np.random.default_rng(self.seed)
            self._rng_pid = pid
        return self._rng

    def reseed(self, *key: int) -> None:
        """Draw the next masks from a stream fixed by `key` in this process, e.g.
        (seed, stream, rank, batch number): the pretrain stage reseeds every batch so that a
        resumed run masks each batch exactly as the uninterrupted run did."""
        self._rng = np.random.default_rng(list(key))
        self._rng_pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rng"] = state["_rng_pid"] = None
        return state

    # ------------------------------------------------------------------ the batch
    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("MaskingCollator: empty list of examples")
        rng = self._generator()
        cfg = self.cfg
        B = len(examples)
        # Per-sequence bookkeeping in plain Python: for 32 numbers it beats numpy calls.
        lens = [len(e["input_ids"]) for e in examples]
        L = max(lens)
        if self.pad_to_multiple_of:
            L = -(-L // self.pad_to_multiple_of) * self.pad_to_multiple_of
        splits = [int(e.get("pair_split", 0)) for e in examples]
        for i, (p, n) in enumerate(zip(splits, lens)):
            if p and not 2 <= p < n:
                raise ValueError(f"MaskingCollator: example {i} has pair_split={p} outside 2..{n - 1}")
        ids = _pad(examples, "input_ids", lens, L, self.pad_token_id, np.int64)           # [B, L]
        word = _pad(examples, "word_ids", lens, L, -1, np.int32) if "word_ids" in self.keys else None
        ent = None
        if "entity_ids" in self.keys:
            if "entity_ids" in examples[0] or "entity_tags" not in examples[0]:
                ent = _pad(examples, "entity_ids", lens, L, -1, np.int32)
            else:  # the segment stage stores compact tags (0 / 2k+1 start / 2k+2 inside)
                ent = entity_ids_from_tags(_pad(examples, "entity_tags", lens, L, 0, np.int32))

        sop_label = None
        if cfg.sop:
            is_pair = np.array(splits) > 0
            swapped = is_pair & (rng.random(B) < 0.5)
            if swapped.any():
                ids, word, ent, splits = _swap_segments(swapped, lens, splits, ids, word, ent)
            sop_label = torch.from_numpy(np.where(is_pair, swapped.astype(np.int64), IGNORE_INDEX))

        # Maskable: not a special id and, where word ids are read, inside a word. Units
        # come from the word/entity ids alone, so an [UNK] inside a word (never labelled)
        # does not cut the word in two.
        maskable = _lookup(self._maskable_table, ids)                 # [B, L] bool
        if word is not None:
            maskable &= word >= 0
        starts = self._unit_starts(maskable, word, ent, rng)
        flat = _select_units(starts, maskable, cfg.mask_prob, rng)     # [K] labelled, flat index

        # Labels hold the original ids; inputs get [MASK] / a random id / stay, per token.
        original = ids.ravel()[flat]
        labels = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
        labels.ravel()[flat] = original
        u = rng.random(flat.size)
        random_ids = self.random_ids[(rng.random(flat.size) * self.random_ids.size).astype(np.intp)]
        masked_ids = ids.copy()
        masked_ids.ravel()[flat] = np.where(u < cfg.replace_mask, self.mask_token_id,
                                            np.where(u < cfg.replace_mask + cfg.replace_random, random_ids, original))

        # attention_mask / token_type_ids rows are steps: row n of `steps` is n ones then zeros.
        steps = _steps(L)
        attention_mask = steps[lens]
        if any(splits):  # 1 from the first token of B to the end: ones(n) - ones(split)
            token_type_ids = torch.from_numpy(attention_mask - steps[[p or n for p, n in zip(splits, lens)]])
        else:
            token_type_ids = torch.zeros((B, L), dtype=torch.long)
        out = {
            "input_ids": torch.from_numpy(masked_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "token_type_ids": token_type_ids,
            "labels": torch.from_numpy(labels),
        }
        if sop_label is not None:
            out["sentence_order_label"] = sop_label
        nsp = [e.get("next_sentence_label") for e in examples]
        if any(x is not None for x in nsp):
            if any(x is None for x in nsp):
                raise ValueError("MaskingCollator: next_sentence_label is present in some examples of the batch but not all")
            out["next_sentence_label"] = torch.tensor([int(x) for x in nsp], dtype=torch.long)
        return out

    # ------------------------------------------------------------------ units
    def _unit_starts(self, maskable: np.ndarray, word: np.ndarray | None, ent: np.ndarray | None,
                     rng: np.random.Generator) -> np.ndarray:
        """[B, L] bool: True on the first token of every unit (see the module doc)."""
        if len(self.strategies) == 1:
            return self._starts_for(self.strategies[0], maskable, word, ent, rng)
        B = maskable.shape[0]
        choice = rng.choice(len(self.strategies), size=B, p=self.weights)
        starts = np.zeros_like(maskable)
        for k, name in enumerate(self.strategies):
            rows = np.flatnonzero(choice == k)
            if rows.size:
                starts[rows] = self._starts_for(
                    name, maskable[rows], None if word is None else word[rows],
                    None if ent is None else ent[rows], rng)
        return starts

    def _starts_for(self, name: str, maskable: np.ndarray, word: np.ndarray | None, ent: np.ndarray | None,
                    rng: np.random.Generator) -> np.ndarray:
        if name == "token":
            return maskable.copy()
        if name == "whole_word":
            return _id_starts(word)
        in_word = word >= 0
        if name == "span":  # runs of words end at special tokens
            return _group_words(_id_starts(word), _run_starts(in_word), self._span_lengths, rng)
        # entity_ngram: entities whole; the other words grouped into n-grams inside runs of
        # non-entity words (a run ends at an entity or a special token).
        outside = in_word & (ent < 0)
        ngrams = _group_words(_run_starts(outside, word), _run_starts(outside), self._ngram_lengths, rng)
        return _id_starts(ent) | ngrams


def _is_child_process() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None


@functools.lru_cache(maxsize=16)
def _steps(L: int) -> np.ndarray:
    """[L+1, L] int64, row n = n ones then zeros (read-only: rows are gathered, not written)."""
    steps = (np.arange(L + 1)[:, None] > np.arange(L)).astype(np.int64)
    steps.flags.writeable = False
    return steps


def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """table[ids]; ids past the end read the table's last entry."""
    try:
        return table[ids]
    except IndexError:
        return np.take(table, ids, mode="clip")


_PACKERS: dict[tuple[int, str], struct.Struct] = {}
_FILLS: dict[tuple[int, str, int], bytes] = {}


def _packer(n: int, code: str) -> struct.Struct:
    packer = _PACKERS.get((n, code))
    if packer is None:
        packer = _PACKERS[(n, code)] = struct.Struct(f"={n}{code}")
    return packer


def _fill_bytes(fill: int, code: str, n: int) -> bytes:
    """`fill` packed n times (the padding of a row), cached."""
    key = (fill, code, n)
    out = _FILLS.get(key)
    if out is None:
        out = _FILLS[key] = _packer(n, code).pack(*([fill] * n))
    return out


def _pad(examples: Sequence[Mapping[str, Any]], key: str, lens: list[int], L: int,
         fill: int, dtype: type) -> np.ndarray:
    """examples[i][key] stacked into [B, L], padded with `fill`. May be read-only.

    Python lists go through ``struct.pack`` with a Struct of the length input_ids has (so a
    length mismatch is an error for free), each row followed by its padding bytes: ~10 ns
    per value, about twice as fast as ``np.fromiter``/``np.array`` on lists of python ints.
    Arrays (numpy-formatted datasets) are concatenated and scattered.
    """
    values = [e[key] for e in examples]
    B = len(values)
    if type(values[0]) is list:
        code = "q" if dtype == np.int64 else "i"
        parts = []
        try:
            for n, v in zip(lens, values):
                parts.append(_packer(n, code).pack(*v))
                if n < L:
                    parts.append(_fill_bytes(fill, code, L - n))
            return np.frombuffer(b"".join(parts), dtype=dtype).reshape(B, L)
        except struct.error:
            pass  # a length mismatch, or values that are not ints: checked below
    arrays = [np.asarray(v).reshape(-1) for v in values]
    for i, (n, a) in enumerate(zip(lens, arrays)):
        if a.size != n:
            raise ValueError(f"MaskingCollator: example {i} has {a.size} {key} but {n} input_ids")
    flat = np.concatenate(arrays).astype(dtype, copy=False)
    if flat.size == B * L:  # every block fills the padded length: nothing to pad
        return flat.reshape(B, L)
    out = np.full((B, L), fill, dtype=dtype)
    out[np.arange(L) < np.array(lens)[:, None]] = flat
    return out


def _swap_segments(swapped: np.ndarray, lens: list[int], splits: list[int], *arrays: np.ndarray | None):
    """[CLS] A [SEP] B [SEP] -> [CLS] B [SEP] A [SEP] in the rows where `swapped`.

    Positions 1..n-1 rotate left by p-1 (p = split: first token of B), so new position j
    reads old position 1 + (j - 1 + p - 1) mod (n - 1); [CLS] and padding stay. The new B
    (old A + its [SEP]) starts at n - p + 1. Returns new copies; the inputs are untouched.
    """
    rows = np.flatnonzero(swapped)
    lengths, split = np.array(lens), np.array(splits)
    n, p = lengths[rows, None], split[rows, None]
    L = arrays[0].shape[1]
    j = np.arange(L)[None, :]
    inside = (j >= 1) & (j < n)
    src = np.where(inside, 1 + (j - 1 + p - 1) % np.maximum(n - 1, 1), j)
    result = []
    for a in arrays:
        if a is not None:
            a = a.copy()
            a[rows] = np.take_along_axis(a[rows], src, axis=1)
        result.append(a)
    new_split = split.copy()
    new_split[rows] = lengths[rows] - split[rows] + 1
    return (*result, new_split.tolist())


def _id_starts(ids: np.ndarray) -> np.ndarray:
    """[B, L] bool: True where a run of equal ids >= 0 begins (-1 = outside any run)."""
    starts = np.empty(ids.shape, dtype=bool)
    starts[:, 0] = True
    np.not_equal(ids[:, 1:], ids[:, :-1], out=starts[:, 1:])
    starts &= ids >= 0
    return starts


def _run_starts(member: np.ndarray, key: np.ndarray | None = None) -> np.ndarray:
    """[B, L] bool: True where a run of `member` tokens (with equal `key`, if given) begins."""
    starts = member.copy()
    if key is None:
        starts[:, 1:] &= ~member[:, :-1]
    else:
        starts[:, 1:] &= ~member[:, :-1] | (key[:, 1:] != key[:, :-1])
    return starts


def _group_words(word_starts: np.ndarray, run_starts: np.ndarray, length_table: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Cut every run of consecutive words into groups of 1..max words.

    `run_starts` must be a subset of `word_starts`. Every word gets a length drawn from
    `length_table` (see ``length_table``); in a run of w words, the cumulative sums of the
    lengths of its first words are the offsets (in words, from the run's first word) where
    the next group starts — those below w are kept. That is exactly i.i.d. lengths per run,
    the last one cut at the end of the run. Returns [B, L] bool: True on the first token of
    every group.
    """
    pos = word_starts.ravel().nonzero()[0]            # [W] flat token index of each word
    W = pos.size
    if W == 0:
        return word_starts.copy()
    is_run = run_starts.ravel()[pos]                  # [W] word begins a run
    first = is_run.nonzero()[0]                       # [R] index (in words) of each run's first word
    run_end = np.empty(first.size, dtype=np.int64)    # [R] index of the word after the run
    run_end[:-1] = first[1:]
    run_end[-1] = W
    run_of = np.add.accumulate(is_run.view(np.int8), dtype=np.int32) - 1     # [W] run of each word
    lens = length_table[(rng.bit_generator.random_raw(W) >> np.uint64(64 - _LENGTH_BITS)).view(np.int64)]
    ends = np.cumsum(lens, dtype=np.int64)            # [W] running total of lengths
    # Word k of run r starts its run's next group at first[r] + (lengths of words
    # first[r]..k) = ends[k] - shift[r]; kept while it is still inside the run.
    shift = ends[first] - lens[first] - first         # [R]
    next_start = ends - shift[run_of]
    inside = next_start < run_end[run_of]
    out = np.zeros(word_starts.size, dtype=bool)
    out[pos[first]] = True
    out[pos[next_start[inside]]] = True
    return out.reshape(word_starts.shape)


def _select_units(starts: np.ndarray, maskable: np.ndarray, mask_prob: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Flat indices (into [B, L]) of the labelled tokens: the maskable tokens of whole units
    chosen in random order per row until the row's budget, round(mask_prob x maskable).

    A unit owns the tokens from its start up to the next start; only its maskable ones
    count (its weight) and get labels. Every maskable token must have a start at or before
    it in its own row (the strategies start a unit at every word after a special token).
    """
    B, L = maskable.shape
    first = starts.ravel().nonzero()[0]               # [U] flat index of each unit's first token
    U = first.size
    if U == 0:
        return first
    mask_flat = maskable.ravel()
    count = np.zeros(B * L + 1, dtype=np.int32)       # [B*L+1] maskable tokens before position i
    np.add.accumulate(mask_flat.view(np.int8), dtype=np.int32, out=count[1:])
    before = count[first]                             # [U] maskable tokens before each unit
    weight = np.empty(U, dtype=np.int32)              # [U] maskable tokens in each unit
    np.subtract(before[1:], before[:-1], out=weight[:-1])
    weight[-1] = count[-1] - before[-1]
    base = count[:-1:L]                               # [B] maskable tokens in earlier rows
    n = count[L::L] - base                            # [B] maskable tokens per row
    budget = np.maximum((mask_prob * n + 0.5).astype(np.int32), 1)    # round half up, >= 1
    row = first // L                                  # [U] ascending

    # Random order inside rows, rows kept in place, with ONE sort of int64 keys
    # row | random bits | unit index (a plain sort is ~3x faster than an argsort; the
    # index in the low bits gives the order back).
    index_bits = max(U - 1, 1).bit_length()
    random_bits = 62 - max(B - 1, 1).bit_length() - index_bits
    key = (rng.bit_generator.random_raw(U) >> np.uint64(64 - random_bits)).view(np.int64)
    key <<= index_bits
    key |= row << (random_bits + index_bits)
    key |= np.arange(U)
    key.sort()
    order = key & ((1 << index_bits) - 1)

    weight_sorted = weight[order]
    # Budget left in the row before each unit, if every earlier unit of the row was taken.
    room = (budget + base)[row] - np.cumsum(weight_sorted, dtype=np.int32) + weight_sorted
    # Take a unit if it fits (room >= weight: the coin always wins), the one that would
    # overshoot with probability room / weight, and the first of every row always (coin 0;
    # rows keep their place, so a row's first unit sits where it did before the sort).
    coin = rng.random(U + 1)
    coin[np.searchsorted(first, np.arange(0, B * L, L))] = 0.0
    take = coin[:U] * weight_sorted < room
    chosen = np.zeros(U, dtype=bool)
    chosen[order[take]] = True
    # Back to tokens: each token's unit is the number of starts up to it, minus one (-1
    # before the first start: a [CLS], not maskable).
    unit_of = np.add.accumulate(starts.ravel().view(np.int8), dtype=np.int32) - 1
    return (chosen[unit_of] & mask_flat).nonzero()[0]
