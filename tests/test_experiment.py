"""experiment: arms x seeds through the real stages, one table; resumes without recomputing.

configs/experiment/demo.yaml is run end to end (2 arms x 2 seeds) on the demo data built by
`demo-data` (real reviews, real People's Daily text) and a tiny 2 x 32 BERT, with only the
budget numbers and paths overridden. An interrupted run continues: the cells that finished
are reused (same files, not recomputed), and the table has the same shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from finetune_fixtures import one_thread, tiny_model  # noqa: F401  (one_thread: autouse fixture)
from workbench.config import load_stage_config
from workbench.errors import ConfigError
from workbench.report.paired import paired_interval, verdict

CONFIG = REPO / "configs" / "experiment" / "demo.yaml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """Demo data (400 reviews) with the general text cut to its first 600 lines, and a tiny base."""
    from workbench.stages.demo_data import run as demo_data

    root = tmp_path_factory.mktemp("exp")
    data = root / "demo"
    demo_data(load_stage_config("demo-data", None, [f"output={data}", "max_reviews=400"]))
    pd = data / "peoples_daily.txt"
    pd.write_text("".join(pd.read_text(encoding="utf-8").splitlines(keepends=True)[:600]), encoding="utf-8")
    for name in ("train.txt", "dev.txt", "test.txt"):  # the first ~400 lines of each, whole sentences
        f = data / "ner" / name
        text = f.read_text(encoding="utf-8")
        f.write_text(text[:text.index("\n\n", len("".join(text.splitlines(keepends=True)[:400]))) + 2],
                     encoding="utf-8")
    texts = [line for f in (pd, data / "reviews" / "train.tsv", data / "reviews" / "dev.tsv",
                            data / "reviews" / "test.tsv") for line in f.read_text(encoding="utf-8").splitlines()]
    tiny_model(root / "base", texts)
    return root


def _cfg(root: Path, run: Path, *extra: str):
    d = root / "demo"
    return load_stage_config("experiment", CONFIG, [
        f"run={run}", f"base={root / 'base'}",
        f"corpora.domain.input=[{d / 'reviews' / 'train.tsv'}]", f"corpora.general.input=[{d / 'peoples_daily.txt'}]",
        f"finetune.train={d / 'reviews' / 'train.tsv'}", f"finetune.valid={d / 'reviews' / 'dev.tsv'}",
        f"finetune.test={d / 'reviews' / 'test.tsv'}",
        "pretrain.max_steps=6", "pretrain.eval_steps=3", "pretrain.save_steps=3", "pretrain.batch_size=8",
        "finetune.max_steps=8", "finetune.eval_steps=4", "finetune.batch_size=16", "mlm_blocks=20", *extra])


def _mtimes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("manifest.json")
            if "experiment" not in p.parts}


def test_help_lists_the_arms(capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(["experiment", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for word in ("general_more", "whole_word", "entity_ngram", "pretrain_seeds", "probe.every", "forgetting"):
        assert word in out


@pytest.mark.slow
def test_two_arms_two_seeds_end_to_end_and_an_interrupted_run_resumes(demo, tmp_path, monkeypatch):
    from workbench import stages
    from workbench.stages.experiment import run

    run_dir = tmp_path / "run"
    ner = demo / "demo" / "ner"
    cfg = _cfg(demo, run_dir, "probe.every=3", "probe.train_size=100", "probe.valid_size=30",
               f"forgetting={{task: tagging, train: {ner / 'train.txt'}, valid: {ner / 'dev.txt'}, "
               f"test: {ner / 'test.txt'}, max_length: 32, max_steps: 4, batch_size: 16}}")

    # 1. Interrupt: the 5th fine-tune (whole_word, seed 0) dies, after prepare/segment, the
    # base's MLM scoring, the `none` fine-tunes (task and forgetting), the whole_word pretrain,
    # its MLM scoring and its probes.
    real = stages.get_runner
    calls = {"finetune": 0}

    def dying(command):
        fn = real(command)
        if command != "finetune":
            return fn

        def wrapped(c):
            calls["finetune"] += 1
            if calls["finetune"] == 5:
                raise KeyboardInterrupt
            return fn(c)
        return wrapped

    monkeypatch.setattr(stages, "get_runner", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    monkeypatch.setattr(stages, "get_runner", real)
    assert not (run_dir / "experiment").exists()
    before = _mtimes(run_dir)
    finished = {k for k in before if k.startswith(("finetune/", "forgetting/", "corpora/", "mlm/", "arms/"))}
    assert {"finetune/none-s0/manifest.json", "finetune/none-s1/manifest.json",
            "arms/whole_word/p0/pretrain/manifest.json", "mlm/whole_word-p0-domain/manifest.json"} <= finished
    assert "1 / " not in (run_dir / "progress.md").read_text(encoding="utf-8")

    # 2. Resume: what finished is reused (files untouched), the rest runs.
    manifest = run(cfg)
    after = _mtimes(run_dir)
    assert all(after[k] == before[k] for k in finished), "a finished cell was recomputed"
    assert manifest["counts"]["cells_reused"] == len(finished)
    assert manifest["counts"]["cells_ran"] == 4  # whole_word's 2 fine-tunes and 2 forgetting fine-tunes

    # 3. The table: 2 arms x 2 seeds, paired differences against none, a verdict.
    out = run_dir / "experiment"
    r = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert list(r["arms"]) == ["none", "whole_word"]
    assert r["metric"] == "accuracy" and r["split"] == "test"
    for arm in ("none", "whole_word"):
        cells = r["arms"][arm]["cells"]
        assert sorted(c["seed"] for c in cells) == [0, 1]
        assert all(0 <= c["test"]["accuracy"] <= 1 for c in cells)
        assert r["arms"][arm]["summary"]["n"] == 2
    vs = r["arms"]["whole_word"]["vs_none"]
    diffs = [c["test"]["accuracy"] - n["test"]["accuracy"]
             for c, n in zip(sorted(r["arms"]["whole_word"]["cells"], key=lambda c: c["seed"]),
                             sorted(r["arms"]["none"]["cells"], key=lambda c: c["seed"]))]
    assert vs["n"] == 2 and vs["mean"] == pytest.approx(sum(diffs) / 2)
    if vs["std"] > 0:
        assert vs["low"] < vs["mean"] < vs["high"]
    assert r["arms"]["whole_word"]["verdict"] == verdict(vs)
    assert "vs_none" not in r["arms"]["none"]
    # Held-out MLM loss before (base) and after, on domain and general text; budget stated.
    assert set(r["mlm"]) == {"base", "whole_word-p0"}
    assert set(r["mlm"]["base"]) == {"domain", "general"}
    assert r["budget"]["tokens"] == 6 * 8 * 128
    assert r["pretrain"]["whole_word-p0"]["steps"] == 6
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| whole\\_word | domain | 2 |" in md and "vs none [95% CI]" in md
    assert "No same-budget control in this run" in md  # demo.yaml has no general_more arm
    assert (out / "results.png").stat().st_size > 1000
    # Probes at steps 0 (the base), 3 and 6, beside the eval loss; the forgetting table.
    probes = r["probes"]["whole_word-p0"]
    assert [p["step"] for p in probes] == [0, 3, 6]
    assert probes[0]["eval_loss"] is None and probes[1]["eval_loss"] is not None
    assert all(0 <= p["accuracy"] <= 1 and p["train"] == 100 and p["valid"] == 30 for p in probes)
    f = r["forgetting"]
    assert f["metric"] == "f1" and list(f["arms"]) == ["none", "whole_word"]
    assert f["arms"]["whole_word"]["vs_none"]["n"] == 2
    assert "Forgetting check" in md and "Probes during pretraining" in md

    # 4. A third run reuses every cell; a budget that passes over the corpus more than
    # max_epochs times is warned about (here 6 x 8 blocks over ~200 is ~0.2 epochs).
    assert not r["warnings"]
    again = run(cfg.model_copy(update={"max_epochs": 0.1}))
    assert again["counts"]["cells_ran"] == 0
    r = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert len(r["warnings"]) == 1 and "pass over corpus 'domain'" in r["warnings"][0]


def test_config_errors_name_every_problem(demo, tmp_path):
    with pytest.raises(ConfigError) as e:
        _cfg(demo, tmp_path / "r", "finetune.seed=3",
             "pretrain.max_stepz=4", "seeds=[1, 1]", "probe.every=10", "finetune.task=tagging", "replay.weight=1.5",
             "arms=[none, whole_wrd, replay, general_more, none+sop]")
    msg = str(e.value)
    for part in ("did you mean 'whole_word'", "replay.weight: 1.5", "'none+sop'", "finetune.seed: set per cell",
                 "pretrain.max_stepz: unknown key", "seeds:", "probe.every"):
        assert part in msg, (part, msg)


def test_paired_intervals_and_verdicts():
    # diffs 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    iv = paired_interval([0.01, 0.02, 0.03])
    assert iv["mean"] == pytest.approx(0.02) and iv["std"] == pytest.approx(0.01)
    assert iv["low"] == pytest.approx(0.02 - 4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert iv["high"] == pytest.approx(0.02 + 4.302653 * 0.01 / 3 ** 0.5, abs=1e-6)
    assert verdict(iv).startswith("no detectable effect") and "≥ 3.1 points" in verdict(iv)  # (4.303 + 1.061) x 0.577 = 3.097
    assert verdict(paired_interval([0.02, 0.021, 0.019, 0.02])) == "helps"
    assert verdict(paired_interval([-0.02, -0.021, -0.019])) == "hurts"
    assert verdict(paired_interval([0.05])).startswith("one pair")
    assert verdict(paired_interval([0.0, 0.0])) == "no difference at any seed"
    assert verdict(paired_interval([0.01, 0.01])).startswith("helps (the same 1.0 points")
    # a wider confidence gives a wider interval
    assert paired_interval([0.01, 0.03, 0.02], 0.99)["low"] < iv["low"]


def test_pairing_with_several_pretraining_seeds():
    """Against none, an arm's pretraining seeds are averaged per fine-tune seed (one pair per
    fine-tune seed); against general_more each (pretraining seed, fine-tune seed) is a pair."""
    from workbench.stages.experiment import Arm, analyse

    def cell(arm, p, s, acc):
        return {"arm": arm, "pretrain_seed": p, "seed": s, "valid": {"accuracy": acc}, "test": {"accuracy": acc}}

    cells = {"none": [cell("none", None, s, 0.80 + 0.01 * s) for s in range(3)],
             "general_more": [cell("general_more", p, s, 0.81 + 0.01 * s) for p in (0, 1) for s in range(3)],
             "whole_word": [cell("whole_word", p, s, 0.82 + 0.01 * s + 0.002 * p) for p in (0, 1) for s in range(3)]}
    arms = [Arm("none", None), Arm("general_more", "general"), Arm("whole_word", "domain")]
    cfg = load_stage_config("experiment", None, ["finetune={task: classification, train: a, valid: b}", "arms=[none]"])
    r = analyse(cfg, arms, cells, "accuracy")
    ww = r["arms"]["whole_word"]
    assert ww["vs_none"]["n"] == 3 and ww["vs_none"]["mean"] == pytest.approx(0.021)
    assert ww["vs_general_more"]["n"] == 6 and ww["vs_general_more"]["mean"] == pytest.approx(0.011)
    assert ww["summary"]["n"] == 6 and r["arms"]["general_more"]["vs_none"]["n"] == 3
    assert ww["verdict"] == "helps (the same 2.1 points at every seed)"


@pytest.mark.slow
def test_arms_with_their_own_base_and_a_chosen_control(demo, tmp_path):
    """Desensitised-style comparisons: arms that start from other models (e.g. remap outputs)
    get their corpora segmented with their own tokenizer and are compared with `controls`."""
    import shutil

    from workbench.stages.experiment import run

    other = tmp_path / "other-base"
    shutil.copytree(demo / "base", other)
    cfg = _cfg(demo, tmp_path / "run", "arms=[{name: scratch, corpus: null, base: " + str(other) + "}, "
               "{name: scratch_ww, corpus: domain, base: " + str(other) + "}, none]",
               "controls=[scratch]", "seeds=[0]", "mlm_blocks=10")
    run(cfg)
    r = json.loads((tmp_path / "run" / "experiment" / "results.json").read_text(encoding="utf-8"))
    assert r["controls"] == ["scratch"]
    assert set(r["arms"]["scratch_ww"]) >= {"vs_scratch", "verdicts"} and "vs_none" not in r["arms"]["scratch_ww"]
    assert r["arms"]["none"]["vs_scratch"]["n"] == 1
    assert {"base", "base@scratch", "scratch_ww-p0"} <= set(r["mlm"])
    segs = sorted(p.name for p in (tmp_path / "run" / "corpora" / "domain").iterdir() if p.name.startswith("segmented"))
    assert len(segs) == 2 and "segmented" in segs  # one per tokenizer
    assert (tmp_path / "run" / "finetune" / "scratch-s0" / "manifest.json").is_file()
    ft = json.loads((tmp_path / "run" / "finetune" / "scratch-s0" / "manifest.json").read_text(encoding="utf-8"))
    assert ft["config"]["model"] == str(other)


def test_one_experiment_at_a_time_per_run_directory(demo, tmp_path):
    from workbench.errors import OutputBusyError
    from workbench.manifest import hold_lock
    from workbench.stages.experiment import run

    cfg = _cfg(demo, tmp_path / "run")
    with hold_lock(tmp_path / "run" / "cells.json", "experiment"):
        with pytest.raises(OutputBusyError, match="another run"):
            run(cfg)
    assert not (tmp_path / "run" / "corpora").exists()


def test_cells_follow_file_contents_not_timestamps(tmp_path):
    """A data folder re-created with the same bytes (new mtimes) keeps its cells; one changed
    byte, in a file or inside a folder of corpus files, gives a new fingerprint."""
    import os

    from workbench.stages.experiment import FileHashes, fingerprint

    data = tmp_path / "data"
    (data / "more").mkdir(parents=True)
    (data / "a.txt").write_text("第一行文本\n", encoding="utf-8")
    (data / "more" / "b.txt").write_text("另一个文件\n", encoding="utf-8")
    cfg_file = load_stage_config("prepare", None, [f"input=[{data / 'a.txt'}]", f"output={tmp_path / 'out'}"])
    cfg_dir = load_stage_config("prepare", None, [f"input=[{data / 'more'}]", f"output={tmp_path / 'out'}"])
    hashes = FileHashes(tmp_path / "input-hashes.json")
    before = fingerprint(cfg_file, hashes), fingerprint(cfg_dir, hashes)
    assert json.loads((tmp_path / "input-hashes.json").read_text())  # the cache is on disk

    for f in (data / "a.txt", data / "more" / "b.txt"):  # same bytes, written again, new mtime
        text = f.read_bytes()
        f.unlink()
        f.write_bytes(text)
        os.utime(f, ns=(1, 1))
    again = FileHashes(tmp_path / "input-hashes.json")
    assert (fingerprint(cfg_file, again), fingerprint(cfg_dir, again)) == before

    (data / "a.txt").write_text("第一行文本!\n", encoding="utf-8")
    (data / "more" / "b.txt").write_text("另一个文件。\n", encoding="utf-8")
    changed = fingerprint(cfg_file, again), fingerprint(cfg_dir, again)
    assert changed[0] != before[0] and changed[1] != before[1]
    (data / "more" / "c.txt").write_text("另一个文件。\n", encoding="utf-8")  # a new file in the folder
    assert fingerprint(cfg_dir, again) != changed[1]


def test_replay_and_sop_arms(demo, tmp_path):
    """arms=[none, replay, whole_word+sop]: the replay arm pretrains on domain text with 25%
    general blocks (pretrain `mix`), the achieved share is in the results; the +sop arm
    pretrains with objective=mlm+sop on pair blocks of the domain corpus (segmented once more,
    pairs=sop); both are compared with none."""
    from workbench.stages.experiment import run

    cfg = _cfg(demo, tmp_path / "run", "arms=[none, replay, whole_word+sop]", "seeds=[0, 1]", "replay.weight=0.25",
               "probe.every=0", "pretrain.max_steps=8")
    run(cfg)
    r = json.loads((cfg.output_path() / "results.json").read_text(encoding="utf-8"))
    mix = r["pretrain"]["replay-p0"]["mixture"]
    assert mix["sources"][1].endswith("corpora/general/segmented") and mix["target"] == pytest.approx([0.75, 0.25])
    assert sum(mix["blocks_trained"]) == 8 * 8 and mix["max_abs_deviation"] <= 0.01
    arm = r["arms"]["replay"]
    assert len(arm["cells"]) == 2 and "vs_none" in arm and arm["verdict"]
    sop = json.loads((tmp_path / "run" / "arms" / "whole_word+sop" / "p0" / "pretrain" / "manifest.json").read_text())
    assert sop["objective"] == "mlm+sop" and sop["config"]["input"].endswith("corpora/domain/segmented-sop")
    seg = json.loads((tmp_path / "run" / "corpora" / "domain" / "segmented-sop" / "manifest.json").read_text())
    assert seg["config"]["pairs"] == "sop"
    assert len(r["arms"]["whole_word+sop"]["cells"]) == 2 and "vs_none" in r["arms"]["whole_word+sop"]
