"""Tag schemes for character tagging (NER): BIO, BIOES and BMES, and entity spans.

Datasets write the same entities in different tag schemes:
  BIO    B-PER I-PER O          (MSRA NER as published; I- continues an entity)
  BIOES  B-PER I-PER E-PER S-LOC (also written BILOU: L- = E-, U- = S-)
  BMES   B-PER M-PER E-PER S-LOC (Chinese word-segmentation style: M- = middle)
Everything inside the workbench works on one internal form, entity *spans*
``(start, end_exclusive, type)`` over characters, so a model can be trained in BIO or
BIOES whatever the file used, and metrics compare entities, not tag spellings.

``tags_to_spans`` is lenient on purpose: it always returns spans and lists every
problem it repaired (an I-X that continues nothing, an entity a BIOES file never closes).
Readers turn those problems into errors unless the user opted into repair; stitching
model predictions uses the repaired spans directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Span = tuple[int, int, str]  # (start, end_exclusive, entity type), character offsets

# Spelling in the file → role: Begin, Inside, End, Single, Outside.
_ROLE = {"B": "B", "I": "I", "M": "I", "E": "E", "L": "E", "S": "S", "U": "S"}
# Which spellings each scheme may use.
_SCHEME_PREFIXES = {"bio": set("BI"), "bioes": set("BIESLU"), "bmes": set("BMES")}
SCHEMES = ("bio", "bioes", "bmes")
OUTPUT_SCHEMES = ("bio", "bioes")  # what models are trained on (seqeval knows both)


def parse_tag(tag: str) -> tuple[str, str | None]:
    """'B-PER' → ('B', 'PER'); 'O' → ('O', None). Accepts '-' or '_' after the prefix.

    The prefix is returned as spelled (M, L, U kept) so scheme detection can see it.
    Raises ValueError for anything else ('PER', 'X-PER', 'B-').
    """
    if tag == "O":
        return "O", None
    if len(tag) >= 3 and tag[0] in _ROLE and tag[1] in "-_":
        return tag[0], tag[2:]
    raise ValueError(f"tag '{tag}' is not 'O' or a B-/I-/E-/S-/M-/L-/U- prefix followed by an entity type")


def scheme_of_prefixes(first_seen: dict[str, int]) -> str:
    """The scheme implied by the prefixes a file uses (prefix → where first seen).

    I- means BIO or BIOES, M- means BMES; E-/S- (or L-/U-) alone mean BIOES, which reads
    the same as BMES when no entity is longer than two characters. Only B- (or nothing)
    reads as BIO. Raises ValueError naming both places when I- and M- are mixed.
    """
    seen = set(first_seen)
    if seen & {"I"} and seen & {"M"}:
        raise ValueError(f"mixed BIO/BIOES and BMES tags: I- first at {first_seen['I']}, M- first at {first_seen['M']}")
    if "M" in seen:
        return "bmes"
    if seen & set("ESLU"):
        return "bioes"
    return "bio"


def detect_scheme(tags: Iterable[str]) -> str:
    """'bio', 'bioes' or 'bmes' for a flat list of tags (see ``scheme_of_prefixes``)."""
    first: dict[str, int] = {}
    for i, tag in enumerate(tags):
        prefix, _ = parse_tag(tag)
        first.setdefault(prefix, i)
    first.pop("O", None)
    return scheme_of_prefixes({p: f"tag {i}" for p, i in first.items()})


@dataclass(frozen=True)
class TagProblem:
    """One invalid spot in a tag sequence, and what ``tags_to_spans`` did about it."""

    index: int  # position of the offending tag
    tag: str
    problem: str
    repair: str


def tags_to_spans(tags: Sequence[str], scheme: str = "bio") -> tuple[list[Span], list[TagProblem]]:
    """Entity spans of a tag sequence, and the problems repaired on the way.

    Repairs (each one listed, never silent):
      - I-X / M-X that does not continue an X entity (first tag, after O, after an entity
        of another type, after E-/S-) starts a new X entity, as if it were B-X;
      - E-X that does not continue an X entity is a one-character entity, as if S-X;
      - in BIOES/BMES, an entity not closed by E-X (followed by O, B-, S- or the end) is
        closed at its last tag: B-X alone reads as S-X, B-X I-X as B-X E-X.
    In BIO an entity simply ends where the next tag is not its I-X.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme '{scheme}'; expected one of {SCHEMES}")
    allowed = _SCHEME_PREFIXES[scheme]
    must_close = scheme != "bio"
    spans: list[Span] = []
    problems: list[TagProblem] = []
    start: int | None = None  # start of the open entity
    kind: str | None = None  # its type

    def close_open(end: int, why: str) -> None:
        nonlocal start
        if start is None:
            return
        if must_close:
            last = end - 1
            problems.append(TagProblem(last, tags[last], f"{kind} entity is not closed by E-{kind} ({why})",
                                       f"closed at {tags[last]}"))
        spans.append((start, end, kind))
        start = None

    for i, tag in enumerate(tags):
        spelled, typ = parse_tag(tag)
        if spelled != "O" and spelled not in allowed:
            raise ValueError(f"tag '{tag}' (position {i}) is not a {scheme.upper()} tag")
        role = _ROLE.get(spelled, "O")
        if role in ("O", "B", "S"):
            close_open(i, f"next tag is {tag}")
            if role == "B":
                start, kind = i, typ
            elif role == "S":
                spans.append((i, i + 1, typ))
            continue
        # role I or E: must continue an open entity of the same type.
        if start is None or kind != typ:
            before = tags[i - 1] if i else "the sentence start; was the sentence cut inside an entity?"
            close_open(i, f"next tag is {tag}")  # an entity of another type stops here
            as_if = "B" if role == "I" else "S"
            problems.append(TagProblem(i, tag, f"{tag} does not continue an entity of type {typ} (it follows {before})",
                                       f"read as {as_if}{tag[1:]}"))
            if role == "E":
                spans.append((i, i + 1, typ))
                continue
            start, kind = i, typ
            continue
        if role == "E":
            spans.append((start, i + 1, kind))
            start = None
    close_open(len(tags), "the sentence ends")
    return spans, problems


def check_spans(spans: Iterable[Span], length: int) -> list[Span]:
    """Spans sorted by start; ValueError if one is empty, out of range or overlaps another."""
    out = sorted(spans)
    prev_end = 0
    for s, e, t in out:
        if not (0 <= s < e <= length):
            raise ValueError(f"span ({s}, {e}, {t}) is empty or outside 0..{length}")
        if s < prev_end:
            raise ValueError(f"span ({s}, {e}, {t}) overlaps the span before it; flat tags cannot nest entities")
        prev_end = e
    return out


def spans_to_tags(spans: Iterable[Span], length: int, scheme: str = "bio") -> list[str]:
    """The tag sequence (BIO or BIOES) of `length` positions for non-overlapping spans."""
    if scheme not in OUTPUT_SCHEMES:
        raise ValueError(f"can only write tags as {OUTPUT_SCHEMES}, not '{scheme}'")
    tags = ["O"] * length
    for s, e, t in check_spans(spans, length):
        if scheme == "bioes" and e - s == 1:
            tags[s] = f"S-{t}"
            continue
        tags[s] = f"B-{t}"
        for i in range(s + 1, e):
            tags[i] = f"I-{t}"
        if scheme == "bioes":
            tags[e - 1] = f"E-{t}"
    return tags


def tag_list(types: Iterable[str], scheme: str = "bio") -> list[str]:
    """All tags of a model: 'O' first, then per type (in the given order) B-, I- (, E-, S-)."""
    if scheme not in OUTPUT_SCHEMES:
        raise ValueError(f"can only write tags as {OUTPUT_SCHEMES}, not '{scheme}'")
    prefixes = "BI" if scheme == "bio" else "BIES"
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def scheme_of_tag_list(tags: Sequence[str]) -> str:
    """'bio' or 'bioes' for a model's tag list (E-/S- present → BIOES)."""
    return "bioes" if any(parse_tag(t)[0] in "ES" for t in tags) else "bio"
