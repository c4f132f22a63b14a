"""Bad input: each case gives a clear error (file + line/row + fix) or a counted reject with a
reason. Never a bare traceback, never a silently lost row."""

from __future__ import annotations

import json
from pathlib import Path

GOOD = "今天天气很好，我们去公园散步吧。"
OTHER = "会议决定明年继续扩大对外开放的力度。"
THIRD = "这家酒店的服务态度非常好，下次还来。"


def _prepare(cli, tmp_path: Path, inputs: list[Path], *overrides: str):
    out = tmp_path / "out"
    code, stdout, err = cli("prepare", f"input=[{','.join(map(str, inputs))}]", f"output={out}",
                            "split.valid_fraction=0", *overrides)
    assert "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8")) if code == 0 else None
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").open(encoding="utf-8")] if code == 0 else []
    if manifest:
        c = manifest["counts"]
        assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"]
        assert c["rejected"] == len(rejects)
    return code, err, manifest, rejects


def _error(cli, tmp_path, inputs, *overrides) -> str:
    code, err, manifest, _ = _prepare(cli, tmp_path, inputs, *overrides)
    assert code == 2, "expected a clean error exit"
    assert not (tmp_path / "out").exists(), "a failed run must not leave an output directory"
    assert "fix:" in err or "config problem" in err
    return err


def test_empty_file(cli, tmp_path):
    f = tmp_path / "empty.txt"
    f.write_bytes(b"")
    err = _error(cli, tmp_path, [f])
    assert "empty.txt: the file is empty" in err and "allow_empty_files" in err


def test_empty_file_allowed_when_configured(cli, tmp_path):
    empty, good = tmp_path / "empty.txt", tmp_path / "good.txt"
    empty.write_bytes(b"")
    good.write_text(GOOD + "\n", encoding="utf-8")
    code, _, m, _ = _prepare(cli, tmp_path, [empty, good], "read.allow_empty_files=true")
    assert code == 0 and m["counts"]["kept"] == 1 and m["inputs"][0]["rows"] == 0


def test_binary_garbage(cli, tmp_path):
    f = tmp_path / "garbage.txt"
    f.write_bytes(bytes(range(256)) * 40)
    err = _error(cli, tmp_path, [f])
    assert "garbage.txt, line 1: binary data: NUL byte at offset 0" in err


def test_gbk_file_is_detected(cli, tmp_path):
    f = tmp_path / "gbk.txt"
    lines = ["这是一段用GBK编码保存的中文文本。", "第二行：简体中文，还有全角标点！"]
    f.write_bytes("\r\n".join(lines).encode("gbk"))
    code, _, m, _ = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["inputs"][0]["encoding"] == "gb18030" and m["counts"]["kept"] == 2
    import datasets

    texts = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))["train"]["text"]
    assert sorted(texts) == sorted(lines)


def test_utf8_bom(cli, tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbf" + "text,label\n".encode() + f"{GOOD},1\n".encode())
    code, _, m, _ = _prepare(cli, tmp_path, [f], "read.keep_fields=[label]")
    assert code == 0 and m["counts"]["kept"] == 1  # `text` found although the header began with a BOM
    import datasets

    row = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))["train"][0]
    assert row["text"] == GOOD and row["label"] == "1"


def test_mixed_line_endings(cli, tmp_path):
    f = tmp_path / "mixed.txt"
    docs = [f"第{i}篇文档的内容在这里。" for i in range(1, 6)]
    f.write_bytes("\n".join(docs[:2]).encode() + b"\r\n" + docs[2].encode() + b"\r" + docs[3].encode()
                  + b"\r\n\r\n" + docs[4].encode())
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["counts"]["in"] == 5 and m["counts"]["kept"] == 5
    assert m["inputs"][0]["blank_lines"] == 1


def test_one_megabyte_single_line(cli, tmp_path):
    f = tmp_path / "long.txt"
    f.write_text(GOOD * 70_000 + "\n" + GOOD + "\n", encoding="utf-8")  # ~3 MB first line
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["counts"]["kept"] == 1
    assert [(r["row"], r["reason"]) for r in rejects] == [(1, "too_long")]
    assert "clean.max_chars=200000" in rejects[0]["detail"] and len(rejects[0]["excerpt"]) < 100


def test_line_beyond_max_line_bytes_is_rejected_without_loading(cli, tmp_path):
    f = tmp_path / "huge.txt"
    f.write_text(GOOD + "\n" + "长" * 600_000 + "\n" + OTHER + "\n", encoding="utf-8")
    code, _, m, rejects = _prepare(cli, tmp_path, [f], "read.max_line_bytes=100000")
    assert code == 0 and m["counts"]["in"] == 3 and m["counts"]["kept"] == 2
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "line_too_long")]


def test_csv_with_broken_quoting(cli, tmp_path):
    f = tmp_path / "broken.csv"
    f.write_text(
        "id,text\n"
        f"1,{GOOD}\n"
        f'2,"他说"你好"然后走了"\n'          # quote inside a quoted field, not doubled
        f"3,{OTHER}\n"
        f'4,"没有结束的引号\n'
        f"5,{THIRD}\n",
        encoding="utf-8",
    )
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0
    assert m["counts"]["kept"] == 2  # rows 1 and 3
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons[3] == "csv_parse_error"
    assert reasons[5] == "csv_parse_error"  # unterminated quote: runs to the end of the file
    assert all("quoting=none" in r["detail"] for r in rejects)


def test_csv_without_the_configured_column(cli, tmp_path):
    f = tmp_path / "cols.csv"
    f.write_text(f"label,content\n1,{GOOD}\n", encoding="utf-8")
    err = _error(cli, tmp_path, [f])
    assert "cols.csv, line 1: no column 'text' in the header ['label', 'content']" in err
    assert "set prepare.read.text_field to one of" in err


def test_csv_field_count_mismatch_is_rejected(cli, tmp_path):
    f = tmp_path / "count.tsv"
    f.write_text(f"label\ttext\n1\t{GOOD}\n0\t{GOOD}多\t多余的列\n", encoding="utf-8")
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["counts"]["kept"] == 1
    assert rejects[0]["reason"] == "csv_field_count" and rejects[0]["line"] == 3


def test_jsonl_with_non_object_and_invalid_lines(cli, tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        json.dumps({"text": GOOD}, ensure_ascii=False) + "\n"
        + '"just a string"\n'
        + "{not json\n"
        + json.dumps({"content": "没有text字段"}, ensure_ascii=False) + "\n"
        + json.dumps({"text": 42}) + "\n",
        encoding="utf-8",
    )
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["counts"]["in"] == 5 and m["counts"]["kept"] == 1
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "jsonl_not_object"), (3, "invalid_json"), (4, "missing_field"), (5, "text_not_string")]


def test_json_array_file_is_a_clear_error(cli, tmp_path):
    f = tmp_path / "export.json"
    f.write_text(json.dumps([{"text": GOOD}, {"text": OTHER}], ensure_ascii=False, indent=1), encoding="utf-8")
    err = _error(cli, tmp_path, [f])
    assert "export.json, line 1: this is a JSON array, not JSON Lines" in err and "jq -c" in err


def test_jsonl_where_no_row_has_the_field(cli, tmp_path):
    f = tmp_path / "wrongkey.jsonl"
    f.write_text(json.dumps({"content": GOOD}, ensure_ascii=False) + "\n", encoding="utf-8")
    err = _error(cli, tmp_path, [f])
    assert "no object in the file has the key 'text'" in err and "['content']" in err


def test_undecodable_bytes_are_rejected_not_crashing(cli, tmp_path):
    f = tmp_path / "bad_bytes.txt"
    f.write_bytes((GOOD + "\n").encode() * 3 + b"\xff\xfe\xfa broken line\n" + ("最后" + GOOD + "\n").encode())
    code, _, m, rejects = _prepare(cli, tmp_path, [f])
    assert code == 0 and m["counts"]["in"] == 5
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "undecodable")]
    assert "not valid utf-8" in rejects[0]["detail"]


def test_utf16_is_a_clear_error(cli, tmp_path):
    f = tmp_path / "u16.txt"
    f.write_bytes(GOOD.encode("utf-16"))
    assert "iconv -f UTF-16 -t UTF-8" in _error(cli, tmp_path, [f])


def test_unknown_config_key(cli, tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(GOOD, encoding="utf-8")
    code, _, err = cli("prepare", f"input={f}", "clean.mentionz=false")
    assert code == 2 and "prepare.clean.mentionz: unknown key (did you mean 'mentions'?)" in err


def test_missing_input_path(cli, tmp_path):
    err = _error(cli, tmp_path, [tmp_path / "does_not_exist.jsonl"])
    assert "does_not_exist.jsonl: no such file or folder" in err


def test_unknown_extension(cli, tmp_path):
    f = tmp_path / "corpus.dat"
    f.write_text(GOOD, encoding="utf-8")
    err = _error(cli, tmp_path, [f])
    assert "cannot tell the format" in err and "read.format" in err


def test_stage_output_is_not_a_corpus(cli, tmp_path):
    d = tmp_path / "prepared"
    d.mkdir()
    (d / "manifest.json").write_text("{}", encoding="utf-8")
    assert "workbench stage output" in _error(cli, tmp_path, [d])


def test_multi_character_delimiter_reads_gaiic_style_rows(cli, tmp_path):
    """GAIIC's desensitised reports: `id|,|ids|,|labels`, no header; the labels cell may be empty."""
    import datasets

    f = tmp_path / "reports.csv"
    f.write_text("0|,|623 328 538 382|,|2\n1|,|48 328 \"538 382 809|,|\n2|,|623 656 293 851|,|15 3\n",
                 encoding="utf-8")
    code, _, err = cli("prepare", f"input={f}", f"output={tmp_path / 'out'}", "read.delimiter=|,|",
                       "read.header=false", "read.text_field=1", "read.keep_fields=[2]", "clean.min_chars=1",
                       "dedup.near=false", "split.valid_fraction=0")
    assert code == 0, err
    rows = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))["train"]
    assert rows["text"] == ["623 328 538 382", '48 328 "538 382 809', "623 656 293 851"]
    assert rows["2"] == ["2", "", "15 3"]
    code, _, err = cli("prepare", f"input={f}", f"output={tmp_path / 'o2'}", "read.delimiter=|,|", "read.quoting=csv",
                       "read.header=false", "read.text_field=1")
    assert code == 2 and "read.quoting=none" in err
