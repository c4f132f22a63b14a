"""The prepare stage end to end on real text: formats, accounting, reproducibility, atomicity."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from workbench.config import load_stage_config
from workbench.errors import InputError, StageInputError
from workbench.manifest import require_stage_output
from workbench.stages.prepare import run as prepare

WEIBO = [
    "回复@小王:这家店真的不错，下次还来！//@小李:同意，环境很好[哈哈]",
    "#周末去哪儿# 推荐大家去西湖走走 https://t.cn/A6abcd 风景很美",
    "@张三 @李四 明天下午三点开会，别迟到了哦😂",
]


def _run(tmp_path: Path, name: str, *overrides: str) -> dict:
    cfg = load_stage_config("prepare", None, [f"output={tmp_path / name}", *overrides])
    return prepare(cfg)


def _texts(out: Path) -> list[str]:
    dd = datasets.load_from_disk(str(out / "dataset"))
    return sorted(t for split in dd.values() for t in split["text"])


def test_real_reviews_accounting_and_reproducibility(tmp_path, review_lines):
    lines = review_lines + WEIBO + review_lines[:20]  # 20 exact repeats of real reviews
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    m1 = _run(tmp_path, "a", f"input={corpus}", "split.valid_fraction=0.1")
    m2 = _run(tmp_path, "b", f"input={corpus}", "split.valid_fraction=0.1")

    c = m1["counts"]
    assert c["in"] == len(lines) == m1["inputs"][0]["rows"]
    assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"]
    assert c["duplicates_exact"] >= 20
    assert sum(c["splits"].values()) == c["kept"] and c["splits"]["valid"] > 0
    assert c["cleaning_edits"]["mentions"] >= 3 and c["cleaning_edits"]["urls"] >= 1

    # Reproducible: same output hashes; the manifest records the input hash.
    assert m1["outputs"] == m2["outputs"] and "dataset/train/data-00000-of-00001.arrow" in m1["outputs"]
    assert m1["inputs"][0]["sha256"] and m1["stage"] == "prepare" and m1["config"]["seed"] == 0

    # Every row is accounted for exactly once, by (file, row).
    out = tmp_path / "a"
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").open(encoding="utf-8")]
    dups = [json.loads(x) for x in (out / "duplicates.jsonl").open(encoding="utf-8")]
    dd = datasets.load_from_disk(str(out / "dataset"))
    kept_rows = [r for split in dd.values() for r in split["row"]]
    seen = sorted(kept_rows + [r["row"] for r in rejects] + [d["row"] for d in dups])
    assert seen == list(range(1, c["in"] + 1))
    assert all(r["reason"] and r["detail"] for r in rejects)
    assert all(d["duplicate_of"]["row"] < d["row"] for d in dups)

    # Kept text is the cleaned input line it claims to come from.
    row = dd["train"][0]
    assert row["source"] == str(corpus)
    source_line = lines[row["row"] - 1]
    assert row["text"].replace(" ", "")[:10] in source_line.replace(" ", "")

    kept = set(_texts(out))
    assert {"这家店真的不错，下次还来！ 同意，环境很好", "周末去哪儿 推荐大家去西湖走走 风景很美",
            "明天下午三点开会，别迟到了哦😂"} <= kept


def test_every_format_gives_the_same_documents(tmp_path, review_lines):
    docs = list(dict.fromkeys(t for t in review_lines if len(t) > 20))[:60]
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("\n".join(docs), encoding="utf-8")
    (d / "b.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")  # paragraph mode
    (d / "c.jsonl").write_text("\n".join(json.dumps({"content": t, "y": i}, ensure_ascii=False)
                                         for i, t in enumerate(docs)), encoding="utf-8")
    pd.DataFrame({"y": range(len(docs)), "content": docs}).to_csv(d / "d.csv", index=False)
    pd.DataFrame({"content": docs}).to_parquet(d / "e.parquet")
    with gzip.open(d / "f.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(f"{i}\t{t}" for i, t in enumerate(docs)))

    expected = None
    for name, overrides in {
        "a.txt": [], "b.txt": ["read.txt_documents=paragraph"], "c.jsonl": ["read.keep_fields=[y]"],
        "d.csv": ["read.keep_fields=[y]"], "e.parquet": [], "f.tsv.gz": ["read.header=false", "read.text_field=1"],
    }.items():
        text_field = [] if name.endswith(".txt") or "read.text_field=1" in overrides else ["read.text_field=content"]
        m = _run(tmp_path, f"out-{name}", f"input={d / name}", "dedup.near=false", *text_field, *overrides)
        assert m["counts"]["in"] == len(docs), name
        texts = _texts(tmp_path / f"out-{name}")
        expected = expected or texts
        assert texts == expected, name
    jsonl = datasets.load_from_disk(str(tmp_path / "out-c.jsonl" / "dataset"))["train"]
    assert set(jsonl.column_names) == {"text", "source", "row", "y"} and isinstance(jsonl[0]["y"], str)


def test_folders_and_globs(tmp_path, review_lines):
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "1.txt").write_text(review_lines[0], encoding="utf-8")
    (tmp_path / "c" / "sub" / "2.txt").write_text(review_lines[5], encoding="utf-8")
    (tmp_path / "c" / ".hidden.txt").write_text("ignored", encoding="utf-8")
    assert _run(tmp_path, "o1", f"input={tmp_path / 'c'}")["counts"]["in"] == 2
    assert _run(tmp_path, "o2", f"input={tmp_path / 'c' / '**' / '*.txt'}")["counts"]["in"] == 2
    with pytest.raises(InputError, match="the glob matches no file"):
        _run(tmp_path, "o3", f"input={tmp_path / 'c' / '*.jsonl'}")


def test_failed_rerun_keeps_previous_output(tmp_path, review_lines):
    good = tmp_path / "good.txt"
    good.write_text("\n".join(review_lines[:50]), encoding="utf-8")
    first = _run(tmp_path, "out", f"input={good}")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(InputError):
        _run(tmp_path, "out", f"input=[{good},{bad}]")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["outputs"] == first["outputs"]
    # (the output's lock file `.out.lock` stays: removing it would race with the next run)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out") and not p.name.endswith(".lock")]
    assert leftovers == [], "temp directories must be cleaned up"


def test_next_stage_refuses_wrong_inputs(tmp_path, review_lines):
    with pytest.raises(StageInputError, match="does not exist"):
        require_stage_output(tmp_path / "nope", "prepare", needed_by="segment")
    (tmp_path / "half").mkdir()
    with pytest.raises(StageInputError, match="has no manifest.json.*interrupted run"):
        require_stage_output(tmp_path / "half", "prepare", needed_by="segment")
    good = tmp_path / "good.txt"
    good.write_text("\n".join(review_lines[:20]), encoding="utf-8")
    _run(tmp_path, "prepared", f"input={good}")
    assert require_stage_output(tmp_path / "prepared", "prepare", needed_by="segment")["stage"] == "prepare"
    with pytest.raises(StageInputError, match="is a `prepare` output but `pretrain` reads `segment` output"):
        require_stage_output(tmp_path / "prepared", "segment", needed_by="pretrain")
    m = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    m["manifest_version"] = 99
    (tmp_path / "prepared" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StageInputError, match="newer zh-workbench"):
        require_stage_output(tmp_path / "prepared", "prepare", needed_by="segment")


def test_report_summarises_a_run(tmp_path, review_lines, cli):
    good = tmp_path / "good.txt"
    good.write_text("\n".join(review_lines[:30]), encoding="utf-8")
    _run(tmp_path, "run/prepared", f"input={good}")
    code, out, _ = cli("report", f"run={tmp_path / 'run'}")
    assert code == 0 and "| prepare |" in out and "rejects.jsonl" in out
    assert (tmp_path / "run" / "report.md").exists()
    code, _, err = cli("report", f"run={tmp_path / 'empty'}")
    assert code == 2 and "no stage output" in err


def _everything(out: Path) -> dict:
    """What prepare wrote, less timings and the execution settings."""
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    dd = datasets.load_from_disk(str(out / "dataset"))
    cfg = {k: v for k, v in m["config"].items()
           if k not in ("workers", "engine", "scheduler", "batch_rows", "batch_bytes", "read_in_workers", "output")}
    return {"rows": {s: d.to_list() for s, d in dd.items()}, "counts": m["counts"], "inputs": m["inputs"],
            "config": cfg, "files": {k: v for k, v in m["files"].items() if not k.endswith("state.json")},
            "rejects": (out / "rejects.jsonl").read_text(encoding="utf-8"),
            "duplicates": (out / "duplicates.jsonl").read_text(encoding="utf-8")}


def test_workers_do_not_change_the_output(tmp_path, review_lines):
    """workers=1 (in process) and workers=2 (a process pool; the workers read the txt and
    jsonl files themselves in byte ranges, the csv comes from the main process), with batches
    and ranges small enough that many are in flight, write the same rows in the same order,
    the same rejects, duplicate records, counts and file hashes; every input row is
    accounted for across batches."""
    edited = [t[:-2] + "真的" for t in review_lines[:40] if len(t) > 40]  # near duplicates
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n".join(review_lines + WEIBO + review_lines[:30] + edited + ["短", ""]) + "\n",
                      encoding="utf-8")
    jl = tmp_path / "b.jsonl"
    jl.write_text("".join(json.dumps({"text": t, "id": i}, ensure_ascii=False) + "\n"
                          for i, t in enumerate(review_lines[::7] + ["", "x"])) + "{broken\n", encoding="utf-8")
    cs = tmp_path / "c.csv"
    cs.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(review_lines[::5])), encoding="utf-8")
    evalset = tmp_path / "eval.tsv"
    evalset.write_text("label\ttext_a\n1\t" + review_lines[5] + "\n", encoding="utf-8")
    common = [f"input=[{corpus},{cs},{jl}]", "split.valid_fraction=0.1", "split.test_fraction=0.1",
              "read.keep_fields=[id]", "clean.min_chars=3", f"exclude.files=[{evalset}]", "batch_rows=37"]
    one = _run(tmp_path, "w1", *common, "workers=1")
    two = _run(tmp_path, "w2", *common, "workers=2", "batch_bytes=997")
    assert two["execution"]["workers"] == 2 and one["execution"]["workers"] == 1
    a, b = _everything(tmp_path / "w1"), _everything(tmp_path / "w2")
    assert a == b
    c = a["counts"]
    assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"]
    assert c["duplicates_exact"] >= 30 and c["duplicates_near"] >= 10
    assert {"eval_overlap", "too_short"} <= set(c["rejected_by_reason"])
    assert sum(f["rows"] for f in a["inputs"]) == c["in"]


def test_dask_cluster_gives_the_local_output(tmp_path, review_lines):
    """engine=dask on a 2-worker local Dask cluster started here (its scheduler address
    given as a real cluster's would be), and engine=dask starting its own, the Dask workers
    reading the file in byte ranges themselves: the same output as the local engine."""
    from dask.distributed import Client, LocalCluster

    edited = [t[:-2] + "真的" for t in review_lines[:40] if len(t) > 40]
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n".join(review_lines + WEIBO + review_lines[:30] + edited + ["短"]) + "\n", encoding="utf-8")
    common = [f"input={corpus}", "split.valid_fraction=0.1", "clean.min_chars=3", "batch_rows=200"]
    _run(tmp_path, "local", *common, "workers=1")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        m = _run(tmp_path, "dask", *common, "engine=dask", f"scheduler={cluster.scheduler_address}")
        assert len(client.scheduler_info()["workers"]) == 2
    assert {k: v for k, v in m["execution"].items() if k not in ("main_process_cpu_s", "phases_s")} == {
        "engine": "dask", "workers": None, "scheduler": cluster.scheduler_address, "batch_rows": 200,
        "batch_bytes": None}
    own = _run(tmp_path, "dask_own", *common, "engine=dask", "workers=2", "read_in_workers=true", "batch_bytes=3KB")
    assert own["execution"]["batch_bytes"] == "3KB"
    local = _everything(tmp_path / "local")
    assert _everything(tmp_path / "dask") == local
    assert _everything(tmp_path / "dask_own") == local
    assert local["counts"]["duplicates_near"] >= 10


def test_output_is_written_in_shards_listed_by_the_manifest(tmp_path, review_lines):
    corpus = tmp_path / "a.txt"
    corpus.write_text("\n".join(review_lines) + "\n", encoding="utf-8")
    one = _run(tmp_path, "one", f"input={corpus}", "split.valid_fraction=0.1")
    many = _run(tmp_path, "many", f"input={corpus}", "split.valid_fraction=0.1", "shard_size=40KB")
    assert one["shards"]["train"] == ["data-00000-of-00001.arrow"]
    assert len(many["shards"]["train"]) >= 3
    for name in many["shards"]["train"]:
        assert f"dataset/train/{name}" in many["files"]
        assert (tmp_path / "many" / "dataset" / "train" / name).stat().st_size < 80_000
    assert _texts(tmp_path / "one") == _texts(tmp_path / "many") and one["counts"] == many["counts"]
    with pytest.raises(Exception) as e:
        load_stage_config("prepare", None, [f"input={corpus}", "shard_size=lots"])
    assert "shard_size: 'lots' is not a size" in str(e.value)


def test_auto_minhash_follows_the_texts_and_says_so(tmp_path, review_lines):
    """dedup.minhash=auto: numpy signatures for short texts, rensa for long ones, chosen from
    the inputs alone and recorded; the near duplicates found are those of the explicit choice."""
    short = tmp_path / "short.txt"
    brief = [t for t in review_lines if len(t) < 80]
    short.write_text("\n".join(brief), encoding="utf-8")
    long_ = tmp_path / "long.txt"  # overlapping runs of 8 reviews: long texts with near duplicates
    long_.write_text("\n".join("".join(review_lines[i:i + 8]) for i in range(0, 320, 2)), encoding="utf-8")
    for path, expect in ((short, "numpy"), (long_, "rensa")):
        auto = _run(tmp_path, f"auto-{path.stem}", f"input={path}")
        assert auto["minhash"]["auto"] == expect and auto["minhash"]["sample_records"] > 0
        assert auto["config"]["dedup"]["minhash"] == expect
        explicit = _run(tmp_path, f"explicit-{path.stem}", f"input={path}", f"dedup.minhash={expect}")
        assert explicit["minhash"] is None
        assert (tmp_path / f"auto-{path.stem}" / "duplicates.jsonl").read_bytes() == \
            (tmp_path / f"explicit-{path.stem}" / "duplicates.jsonl").read_bytes()
        assert auto["counts"] == explicit["counts"]


@pytest.mark.parametrize("valid,test", [(0.1, 0.1), (0.02, 0.0), (0.5, 0.5), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
def test_batched_split_is_the_per_document_split(review_lines, valid, test):
    from workbench.corpus.split import split_index, split_indices

    texts = review_lines + ["", "a", "同一句话"]
    for seed in (0, 7, -3):
        assert split_indices(texts, seed, valid, test) == [split_index(t, seed, valid, test) for t in texts]
