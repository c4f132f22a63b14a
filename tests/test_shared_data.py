"""prepare on the real public datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from workbench.config import load_stage_config
from workbench.stages.prepare import run as prepare

pytestmark = pytest.mark.shared_data


def test_weibo_config_on_real_weibo_posts(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the config's paths are relative to the repo root
    m = prepare(load_stage_config("prepare", "configs/weibo.yaml", [f"output={tmp_path / 'out'}"]))
    c = m["counts"]
    assert c["in"] == 27_766 + 2_000  # every post of train + dev is a row
    assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"]
    assert c["kept"] > 0.9 * c["in"]
    assert c["cleaning_edits"].get("emoji_codes", 0) > 100  # real [表情] codes
    assert {i["encoding"] for i in m["inputs"]} == {"utf-8"}
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").open(encoding="utf-8")]
    assert all(r["file"].endswith(".tsv") and r["row"] >= 1 and r["reason"] for r in rejects)


def test_cluecorpus_sample_with_cjk_filter(shared_data, tmp_path):
    src = shared_data / "cluecorpus_small_sample" / "CLUECorpusSmall_sampled.txt"
    cfg = load_stage_config("prepare", None, [f"input={src}", f"output={tmp_path / 'out'}", "clean.min_cjk_ratio=0.3"])
    m = prepare(cfg)
    c = m["counts"]
    assert c["in"] == m["inputs"][0]["rows"] >= 2_000
    assert c["in"] == c["kept"] + c["rejected"] + c["duplicates"]
