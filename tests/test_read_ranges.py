"""prepare's worker processes read txt / jsonl files in byte ranges (readers.plan_ranges /
read_range). Reading a file in ranges, each shifted by the rows and lines of the ranges before
it, must give exactly what reading it whole gives: the same rows, line numbers, rejects and
stats, for every place a cut can fall; and the whole-file errors must read the same."""

from __future__ import annotations

import codecs
import dataclasses
import json
from pathlib import Path

import pytest

from workbench.config import ReadConfig
from workbench.corpus.readers import plan_ranges, read_file, read_range, sniff_encoding, splittable

GOOD = "今天天气很好，我们去公园散步吧。"
OTHER = "会议决定明年继续扩大对外开放的力度。"


def _nasty_txt() -> bytes:
    """Every line-level case the reader handles, with line endings of every kind."""
    return b"".join([
        codecs.BOM_UTF8, GOOD.encode(), b"\r\n",
        b"\r\n",  # blank (CRLF)
        OTHER.encode(), b"\r",  # lone CR ending
        b"   \n",  # whitespace only: blank
        b"bad \xff\xfe bytes " + GOOD.encode(), b"\n",  # undecodable
        ("长" * 60).encode(), b"\n",  # 180 bytes: over max_line_bytes=120
        b"\n\n\n",
        (OTHER * 2).encode(), b"\r\n",
        GOOD.encode(), b"\r",
        b"\r\n",
        "结尾没有换行".encode(),  # no final newline
    ])


def _nasty_jsonl() -> bytes:
    lines = [json.dumps({"text": GOOD, "id": 1}, ensure_ascii=False), "", '"a string"', "{broken",
             json.dumps({"content": "x", "id": 2}), json.dumps({"text": 5, "id": 3}),
             json.dumps({"text": "长" * 60, "id": 4}, ensure_ascii=False), "  ",
             json.dumps({"text": OTHER, "id": [1, 2]}, ensure_ascii=False)]
    return "\r\n".join(lines).encode() + b"\n" + b'{"text": "\xff"}\n'


def _rows_whole(path: Path, cfg: ReadConfig):
    stats, rows = read_file(path, cfg)
    rows = [dataclasses.astuple(r) for r in rows]
    return rows, (stats.rows, stats.blank_lines, stats.bytes)


def _rows_ranged(path: Path, cfg: ReadConfig, target: int):
    encoding, bom = sniff_encoding(path, cfg.encoding)
    spans = list(plan_ranges(path, target))
    data = path.read_bytes()
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "ranges are contiguous"
    assert all(data[end - 1 : end] == b"\n" for _, end in spans[:-1]), "every cut follows a newline"
    out, n_rows, n_lines, blank, nbytes = [], 0, 0, 0, 0
    for start, end in spans:
        stats, rows = read_range(path, cfg, encoding, bom, start, end)
        for r in rows:
            t = dataclasses.astuple(r)
            out.append((t[0], t[1] + n_rows, None if t[2] is None else t[2] + n_lines, *t[3:]))
        n_rows, n_lines, blank, nbytes = n_rows + stats.rows, n_lines + stats.lines, blank + stats.blank_lines, \
            nbytes + stats.bytes
    return out, (n_rows, blank, nbytes), len(spans)


@pytest.mark.parametrize("kind", ["txt", "txt_gb18030", "jsonl"])
def test_ranges_read_exactly_what_the_whole_file_gives(tmp_path, kind):
    if kind == "jsonl":
        path, data = tmp_path / "c.jsonl", _nasty_jsonl()
        cfg = ReadConfig(max_line_bytes=120, keep_fields=["id"])
    else:
        path = tmp_path / "c.txt"
        data = _nasty_txt()
        if kind == "txt_gb18030":  # multi-byte characters of another encoding, no BOM
            data = data[3:].decode("utf-8", errors="surrogateescape").encode("gb18030", errors="surrogateescape")
        cfg = ReadConfig(max_line_bytes=120)
    path.write_bytes(data)
    assert splittable(path, cfg)
    whole, whole_stats = _rows_whole(path, cfg)
    assert any(r[5] for r in whole), "the file has rejects"
    pieces = set()
    for target in range(1, len(data) + 2):  # a cut after every possible byte
        ranged, stats, n = _rows_ranged(path, cfg, target)
        assert ranged == whole, f"target {target}"
        assert stats == whole_stats, f"target {target}"
        pieces.add(n)
    assert max(pieces) >= 8 and 1 in pieces


def test_only_cr_endings_stay_one_range(tmp_path):
    path = tmp_path / "mac.txt"
    path.write_bytes("\r".join([GOOD, OTHER] * 50).encode())
    assert len(list(plan_ranges(path, 16))) == 1
    assert _rows_ranged(path, ReadConfig(), 16)[0] == _rows_whole(path, ReadConfig())[0]


def test_what_is_not_splittable(tmp_path):
    for name in ("a.csv", "a.tsv", "a.txt.gz", "a.parquet"):
        assert not splittable(tmp_path / name, ReadConfig())
    assert not splittable(tmp_path / "a.txt", ReadConfig(txt_documents="paragraph"))
    assert splittable(tmp_path / "a.jsonl", ReadConfig()) and splittable(tmp_path / "a.txt", ReadConfig())


# ---- the whole stage: workers reading tiny ranges vs one process reading whole files
def _prepare(cli, tmp_path: Path, name: str, inputs: list[Path], *overrides: str):
    out = tmp_path / name
    code, _, err = cli("prepare", f"input=[{','.join(map(str, inputs))}]", f"output={out}",
                       "split.valid_fraction=0", *overrides)
    assert "Traceback" not in err
    return code, err, out


def test_bad_input_reads_the_same_from_worker_ranges(cli, tmp_path):
    """Rejects (file, row, line, reason) and whole-file errors are the same when workers read
    the files in ranges of a few bytes as when this process reads them whole."""
    txt, jl = tmp_path / "a.txt", tmp_path / "b.jsonl"
    txt.write_bytes(_nasty_txt() + b"\n" + "\n".join([GOOD + str(i) for i in range(40)]).encode())
    jl.write_bytes(_nasty_jsonl())
    one = _prepare(cli, tmp_path, "one", [txt, jl], "workers=1", "read.max_line_bytes=120")
    two = _prepare(cli, tmp_path, "two", [txt, jl], "workers=2", "batch_bytes=7", "read.max_line_bytes=120")
    assert one[0] == two[0] == 0
    m1, m2 = (json.loads((o / "manifest.json").read_text()) for o in (one[2], two[2]))
    assert m2["execution"]["batch_bytes"] == "7" and m1["execution"]["batch_bytes"] is None
    assert m1["inputs"] == m2["inputs"] and m1["counts"] == m2["counts"]
    assert (one[2] / "rejects.jsonl").read_text() == (two[2] / "rejects.jsonl").read_text()
    assert {"undecodable", "line_too_long", "invalid_json", "missing_field"} <= set(m1["counts"]["rejected_by_reason"])

    errors = {}
    for name, content in (("array.json", json.dumps([{"text": GOOD}, {"text": OTHER}], indent=1)),
                          ("wrongkey.jsonl", "\n".join(json.dumps({"content": GOOD + str(i)}, ensure_ascii=False)
                                                       for i in range(20))),
                          ("blank.txt", "\n \n\n" * 10)):
        f = tmp_path / name
        f.write_text(content, encoding="utf-8")
        for workers, extra in (("1", []), ("2", ["batch_bytes=5"])):
            code, err, out = _prepare(cli, tmp_path, f"e{workers}", [txt, f], f"workers={workers}", *extra)
            assert code == 2 and "fix:" in err and not out.exists(), err
            errors.setdefault(name, set()).add(err.strip().splitlines()[-2])
    assert all(len(v) == 1 for v in errors.values()), errors
    assert "array.json, line 1: this is a JSON array" in next(iter(errors["array.json"]))
    assert "no object in the file has the key 'text'" in next(iter(errors["wrongkey.jsonl"]))
    assert "blank.txt: the file has no rows" in next(iter(errors["blank.txt"]))
