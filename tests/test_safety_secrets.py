"""Secrets of `desensitise` and what `remap` counts (issue 11 item 2), on the real code paths.

- the key seed appears in no recorded file, log or message, however it was given, and no
  number recorded rebuilds the key;
- every text field of a row (sentence pairs) is desensitised, or the stage refuses to copy
  a text-like field in clear; numeric labels pass, letter labels must be declared public;
- `remap` on a pair id corpus counts only the text columns, never the label column;
- a re-run never leaves an output without the key that decodes it;
- key_file never overwrites an input or a file that is not this output's own key.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from workbench.config import load_stage_config
from workbench.corpus.desensitise import build_key, read_key
from workbench.corpus.id_corpus import read_id_corpus
from workbench.errors import InputError, StageInputError  # OutputRefusedError is a StageInputError

SEED = "424242"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _cfg(*overrides):
    return load_stage_config("desensitise", None, [str(o) for o in overrides])


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def _decoder(key_file: Path):
    back = {i: u for u, i in read_key(key_file).items()}
    return lambda ids: "".join(back[i] for i in ids)


@pytest.fixture
def reviews_tsv(tmp_path, review_lines):
    src = tmp_path / "src"
    src.mkdir()
    p = src / "reviews.tsv"
    p.write_text("label\ttext\n" + "".join(f"{i % 3}\t{t}\n" for i, t in enumerate(review_lines[:60])),
                 encoding="utf-8")
    return p


@pytest.fixture
def pairs(tmp_path, review_lines):
    """A sentence-pair corpus: text_a, text_b (both real Chinese) and a numeric label."""
    src = tmp_path / "pairs"
    src.mkdir()
    rows = [(review_lines[2 * i], review_lines[2 * i + 1], str(3 + 2 * (i % 3))) for i in range(60)]
    tsv = src / "pairs.tsv"
    tsv.write_text("text_a\ttext_b\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows), encoding="utf-8")
    jsonl = src / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"text_a": a, "text_b": b, "label": int(y)}, ensure_ascii=False) + "\n"
                             for a, b, y in rows), encoding="utf-8")
    return {"tsv": tsv, "jsonl": jsonl, "rows": rows}


# --------------------------------------------------------------------------- (1) the seed
def test_seed_is_recorded_nowhere_and_nothing_recorded_rebuilds_the_key(tmp_path, reviews_tsv, monkeypatch,
                                                                         capsys, caplog):
    """key_seed given as key=value, as a dotted override and in a YAML --config file: the
    CLI run (sys.argv is what the manifest's command is built from) leaves the seed in no
    output file, no file beside the key, no log line and no printed line."""
    from workbench.cli import main

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "src" / "secret.yaml"
    config.write_text(f"desensitise:\n  key_seed: {SEED}\n  offset: 10\n", encoding="utf-8")
    ways = {
        "plain": [f"key_seed={SEED}", "offset=10"],
        "dotted": [f"desensitise.key_seed={SEED}", "offset=10"],
        "yaml": ["--config", str(config)],
    }
    for way, args in ways.items():
        work = tmp_path / f"work-{way}"
        out = work / "out"
        argv = ["workbench", "desensitise", *args, f"input={reviews_tsv}", f"output={out}",
                "read.keep_fields=[label]"]
        monkeypatch.setattr(sys, "argv", argv)
        caplog.clear()
        assert main(argv[1:]) == 0, capsys.readouterr().err
        printed = capsys.readouterr()
        key_file = work / "out.key.tsv"
        assert key_file.is_file() and stat.S_IMODE(key_file.stat().st_mode) == 0o600
        recorded = [p for p in _files(work) if p != key_file]
        assert any(p.name == "manifest.json" for p in recorded)
        for p in recorded:
            assert SEED.encode() not in p.read_bytes(), f"{way}: the seed is in {p}"
        for text in (printed.out, printed.err, caplog.text):
            assert SEED not in text, way
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["config"]["key_seed"] == "<secret>"
        assert "<secret>" in manifest["command"] or way == "yaml"

        # The seed does rebuild the key (so it IS the secret) ...
        key = read_key(key_file)
        assert build_key(set(key), int(SEED), 10) == key
        # ... and no number recorded anywhere (manifest, ids, counts) does.
        numbers = {int(n) for p in recorded for n in re.findall(rb"\d+", p.read_bytes()) if len(n) < 19}
        assert all(build_key(set(key), n, 10) != key for n in numbers), way
        # The manifest records the key's hash (ownership), not its content.
        assert manifest["key_file"]["sha256"] == __import__("hashlib").sha256(key_file.read_bytes()).hexdigest()
        assert "\t" not in (out / "manifest.json").read_text(encoding="utf-8")

    # `key_seed =N` / ` key_seed=N` also set the seed (overrides strip the key): either the
    # redaction covers them or the stage refuses to start; the seed is recorded nowhere.
    for i, spelled in enumerate([f"key_seed ={SEED}", f" key_seed={SEED}", f"desensitise.key_seed = {SEED}"]):
        work = tmp_path / f"work-spaced-{i}"
        argv = ["workbench", "desensitise", spelled, f"input={reviews_tsv}", f"output={work / 'out'}"]
        monkeypatch.setattr(sys, "argv", argv)
        caplog.clear()
        code = main(argv[1:])
        printed = capsys.readouterr()
        assert code in (0, 2) and SEED not in printed.out + printed.err + caplog.text
        for p in _files(work) if work.exists() else []:
            assert p.name == "out.key.tsv" or SEED.encode() not in p.read_bytes(), p


def test_a_mistyped_seed_is_not_echoed_in_the_error(tmp_path, reviews_tsv, cli):
    code, out, err = cli("desensitise", f"input={reviews_tsv}", f"output={tmp_path / 'o'}", "key_seed=42424x2")
    assert code == 2 and "key_seed" in err
    assert "42424" not in out + err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.key.tsv").exists()


# --------------------------------------------------------------------------- (2) pairs
def test_pair_corpus_every_text_field_is_desensitised_or_refused(tmp_path, pairs):
    from workbench.stages import desensitise

    # text_b merely kept: refused, naming the file, the row, the field and the fix; nothing written
    out = tmp_path / "refused"
    for fmt in ("tsv", "jsonl"):
        with pytest.raises(InputError) as e:
            desensitise.run(_cfg(f"input={pairs[fmt]}", f"output={out}", "read.text_field=text_a",
                                 "read.keep_fields=[text_b,label]"))
        msg = str(e.value)
        assert str(pairs[fmt]) in msg and "row 1" in msg and "'text_b'" in msg and "CJK" in msg
        assert "text_fields=[text_b]" in msg and "public_fields=[text_b]" in msg
        assert not CJK.search(msg)  # the message does not quote the secret text
        assert not out.exists() and not (tmp_path / "refused.key.tsv").exists()

    # text_fields=[text_b]: both texts become ids with ONE key; the numeric label passes unchanged
    for fmt in ("tsv", "jsonl"):
        out = tmp_path / f"ok-{fmt}"
        m = desensitise.run(_cfg(f"input={pairs[fmt]}", f"output={out}", "read.text_field=text_a",
                                 "text_fields=[text_b]", "read.keep_fields=[label]", "offset=10"))
        assert m["text_fields"] == ["text_a", "text_b"] and m["clear_fields"] == ["label"]
        for p in _files(out):
            assert not CJK.search(p.read_text(encoding="utf-8")), p
        decode = _decoder(tmp_path / f"ok-{fmt}.key.tsv")
        if fmt == "tsv":
            docs = list(read_id_corpus(out / "pairs.tsv", text_column=["text_a", "text_b"]))
            got = [(decode(d.texts[0]), decode(d.texts[1]), d.fields["label"]) for d in docs]
            assert (out / "pairs.tsv").read_text(encoding="utf-8").startswith("text_a\ttext_b\tlabel\n")
        else:
            objs = [json.loads(x) for x in (out / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
            got = [(decode(map(int, o["text_a"].split())), decode(map(int, o["text_b"].split())), str(o["label"]))
                   for o in objs]
            assert all(isinstance(o["label"], int) for o in objs)
        assert got == [("".join(a.split()), "".join(b.split()), y) for a, b, y in pairs["rows"]]

    # a label with letters (Chinese category names) must be declared public to be kept in clear
    named = tmp_path / "pairs" / "named.tsv"
    named.write_text("text_a\tlabel\n" + "".join(f"{a}\t{'正面' if y == '3' else '负面'}\n"
                                                 for a, _, y in pairs["rows"]), encoding="utf-8")
    with pytest.raises(InputError, match=r"named.tsv, line 2: row 1: the kept field 'label' holds CJK"):
        desensitise.run(_cfg(f"input={named}", f"output={tmp_path / 'named'}", "read.text_field=text_a",
                             "read.keep_fields=[label]"))
    m = desensitise.run(_cfg(f"input={named}", f"output={tmp_path / 'named'}", "read.text_field=text_a",
                             "public_fields=[label]"))
    assert m["public_fields"] == ["label"]
    assert [d.fields["label"] for d in read_id_corpus(tmp_path / "named" / "named.tsv", text_column="text_a")][:2] \
        == ["正面" if y == "3" else "负面" for _, _, y in pairs["rows"][:2]]


# --------------------------------------------------------------------------- (3) remap
def test_remap_counts_only_the_text_columns_of_a_pair_corpus(tmp_path, pairs):
    from workbench.stages import desensitise, remap

    des = tmp_path / "des"
    for fmt in ("tsv", "jsonl"):
        desensitise.run(_cfg(f"input={pairs[fmt]}", f"output={des}-{fmt}", "read.text_field=text_a",
                             "text_fields=[text_b]", "read.keep_fields=[label]", "offset=10", "key_seed=5"))
    key = read_key(tmp_path / "des-tsv.key.tsv")
    labels = {int(y) for _, _, y in pairs["rows"]}
    assert labels.isdisjoint(key.values())  # labels 3, 5, 7 are no ids (ids start at 10)
    n_tokens = sum(len("".join((a + b).split())) for a, b, _ in pairs["rows"])

    def remap_cfg(*o):
        return load_stage_config("remap", None, ["strategy=scratch", "discovery.enabled=true",
                                                 "discovery.min_count=2", *map(str, o)])

    for fmt in ("tsv", "jsonl"):
        out = tmp_path / f"map-{fmt}"
        remap.run(remap_cfg(f"input={des}-{fmt}/pairs.{fmt}", f"output={out}", "text_column=text_a",
                            "text_columns=[text_b]"))
        mapped = {int(i) for i in json.loads((out / "map.json").read_text(encoding="utf-8"))["ids"]}
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        assert mapped == set(key.values()) and not mapped & labels
        assert stats["distinct_ids"] == len(key) and stats["tokens"] == n_tokens
        assert stats["corpus"]["id_columns"] == ["text_a", "text_b"]

    # the desensitise manifest says which columns hold ids: counting the label, or leaving text_b out, is refused
    fix = r"\n  fix: set text_column=text_a text_columns=\[text_b\]"
    with pytest.raises(InputError, match=r"\['label'\] hold no ids.*" + fix):
        remap.run(remap_cfg(f"input={des}-tsv/pairs.tsv", f"output={tmp_path / 'bad'}", "text_column=text_a",
                            "text_columns=[text_b,label]"))
    with pytest.raises(InputError, match=r"id column\(s\) \['text_b'\] would not be counted"):
        remap.run(remap_cfg(f"input={des}-tsv/pairs.tsv", f"output={tmp_path / 'bad'}", "text_column=text_a"))
    # the same table without its header, read as one id document per line: refused, not counted
    headerless = tmp_path / "ids.txt"
    headerless.write_text("".join((des.parent / "des-tsv" / "pairs.tsv").read_text(encoding="utf-8")
                                  .splitlines(keepends=True)[1:]), encoding="utf-8")
    with pytest.raises(InputError, match=r"ids.txt, line 1: the line has 3 tab-separated columns"):
        remap.run(remap_cfg(f"input={headerless}", f"output={tmp_path / 'bad'}", "format=lines"))
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- (4) re-runs
def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in _files(directory)}


def _decodes(key_file: Path, out: Path, texts: list[str]) -> bool:
    back = {i: u for u, i in read_key(key_file).items()}
    try:
        got = ["".join(back[i] for i in d.ids) for d in read_id_corpus(out / "reviews.tsv")]
    except KeyError:
        return False
    return got == ["".join(t.split()) for t in texts]


def test_a_rerun_that_fails_at_the_output_rename_keeps_the_old_key(tmp_path, reviews_tsv, review_lines,
                                                                    monkeypatch):
    from workbench.stages import desensitise

    out, key_file = tmp_path / "w" / "out", tmp_path / "w" / "out.key.tsv"
    args = [f"input={reviews_tsv}", f"output={out}", "read.keep_fields=[label]", "offset=10"]
    desensitise.run(_cfg(*args, "key_seed=1"))
    old_out, old_key = _snapshot(out), key_file.read_bytes()
    assert _decodes(key_file, out, review_lines[:60])

    # The re-run fails where the finished new output would be swapped in (an atomic exchange
    # where the system has one, else the old output is renamed aside first).
    import workbench.manifest as manifest

    real_rename = Path.rename

    def failing_rename(self, target):
        if Path(self).resolve() == out.resolve():
            raise OSError("injected: rename failed")
        return real_rename(self, target)

    def failing_exchange(a, b):
        raise OSError("injected: exchange failed")

    monkeypatch.setattr(Path, "rename", failing_rename)
    monkeypatch.setattr(manifest, "exchange_paths", failing_exchange)
    with pytest.raises(OSError, match="injected"):
        desensitise.run(_cfg(*args, "key_seed=2"))
    monkeypatch.undo()
    assert _snapshot(out) == old_out and key_file.read_bytes() == old_key
    assert _decodes(key_file, out, review_lines[:60])
    assert not [p for p in key_file.parent.iterdir() if p.name.startswith(".out.key.tsv.new-")]

    # A successful re-run: the new key decodes the new output.
    m = desensitise.run(_cfg(*args, "key_seed=2"))
    assert key_file.read_bytes() != old_key and _snapshot(out) != old_out
    assert _decodes(key_file, out, review_lines[:60]) and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert m["key_file"]["replaces_sha256"] is not None


def test_a_crash_after_the_output_went_in_is_finished_by_the_next_run(tmp_path, reviews_tsv, review_lines,
                                                                       monkeypatch):
    from workbench.stages import desensitise

    out, key_file = tmp_path / "w" / "out", tmp_path / "w" / "out.key.tsv"
    args = [f"input={reviews_tsv}", f"output={out}", "read.keep_fields=[label]", "offset=10"]
    desensitise.run(_cfg(*args, "key_seed=1"))
    old_key = key_file.read_bytes()

    def crash(tmp, path):
        raise KeyboardInterrupt  # the process stops between the output rename and the key rename

    monkeypatch.setattr(desensitise, "install_key", crash)
    with pytest.raises(KeyboardInterrupt):
        desensitise.run(_cfg(*args, "key_seed=2"))
    monkeypatch.undo()
    # the new output is in; the old key is still there, the new one waits beside it (0600)
    assert key_file.read_bytes() == old_key and not _decodes(key_file, out, review_lines[:60])
    (pending,) = [p for p in key_file.parent.iterdir() if p.name.startswith(".out.key.tsv.new-")]
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert _decodes(pending, out, review_lines[:60])

    # the next run (here one that then fails on a bad input) first puts that key in place
    bad = tmp_path / "src" / "bad.jsonl"
    bad.write_text('{"label": 1}\n', encoding="utf-8")
    with pytest.raises(InputError):
        desensitise.run(_cfg(f"input=[{reviews_tsv},{bad}]", f"output={out}", "read.keep_fields=[label]",
                             "offset=10", "key_seed=3"))
    assert _decodes(key_file, out, review_lines[:60]) and not pending.exists()

    # and a successful re-run leaves the new output with its new key
    desensitise.run(_cfg(*args, "key_seed=3"))
    assert _decodes(key_file, out, review_lines[:60])
    assert build_key(set(read_key(key_file)), 3, 10) == read_key(key_file)


# --------------------------------------------------------------------------- (5) key_file
def test_key_file_never_overwrites_an_input_or_a_file_that_is_not_its_own(tmp_path, reviews_tsv, cli):
    from workbench.stages import desensitise

    corpus = reviews_tsv.read_bytes()
    base = [f"input={reviews_tsv}", "read.keep_fields=[label]"]
    with pytest.raises(StageInputError, match=r"key_file .*reviews.tsv is also an input") as e:
        desensitise.run(_cfg(*base, f"output={tmp_path / 'o'}", f"key_file={reviews_tsv}"))
    assert "fix:" in str(e.value)
    assert reviews_tsv.read_bytes() == corpus and not (tmp_path / "o").exists()
    # the same through the CLI: exit status 2, the corpus unchanged
    code, _, err = cli("desensitise", *base, f"output={tmp_path / 'o'}", f"key_file={reviews_tsv}")
    assert code == 2 and "is also an input" in err and reviews_tsv.read_bytes() == corpus
    # inside an input folder: the key would become part of the corpus
    with pytest.raises(StageInputError, match="lies inside the input"):
        desensitise.run(_cfg(f"input={reviews_tsv.parent}", "read.keep_fields=[label]", f"output={tmp_path / 'o'}",
                             f"key_file={reviews_tsv.parent / 'k.tsv'}"))
    assert not (reviews_tsv.parent / "k.tsv").exists()

    # an unrelated existing file is not replaced
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(StageInputError, match=r"notes.txt already exists and is not the key") as e:
        desensitise.run(_cfg(*base, f"output={tmp_path / 'o'}", f"key_file={notes}"))
    assert str(tmp_path / "o") in str(e.value) and "fix:" in str(e.value)
    assert notes.read_text(encoding="utf-8") == "my notes\n" and not (tmp_path / "o").exists()

    # another output's key is not replaced either; an output's own key is
    desensitise.run(_cfg(*base, f"output={tmp_path / 'a'}", "key_seed=1"))
    key_a = (tmp_path / "a.key.tsv").read_bytes()
    with pytest.raises(StageInputError, match="is not the key of the desensitise output"):
        desensitise.run(_cfg(*base, f"output={tmp_path / 'b'}", f"key_file={tmp_path / 'a.key.tsv'}"))
    assert (tmp_path / "a.key.tsv").read_bytes() == key_a and not (tmp_path / "b").exists()
    desensitise.run(_cfg(*base, f"output={tmp_path / 'a'}", "key_seed=2"))
    assert (tmp_path / "a.key.tsv").read_bytes() != key_a
    assert sorted(p.name for p in tmp_path.iterdir() if "key" in p.name and not p.name.endswith(".lock")) \
        == ["a.key.tsv"]
    assert os.stat(tmp_path / "a.key.tsv").st_mode & 0o077 == 0
