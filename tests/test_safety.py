"""Safety (issue 11): nothing lost, no one let in. One test (or a few) per numbered item.

1. an output replaces only its own: never the input, a directory holding it, or a
   directory another stage (or the user) owns;            → test_item1_*
3. reads are verified against the writer's manifest; a deliberate change is recorded;
   a model whose weights do not load completely is refused → test_item3_*
4. one writer per output (OS lock, holder's pid + command)  → test_item4_*
5. leftovers of dead runs are swept; `workbench clean`      → test_item5_*
6. exports hold no corpus text, are 0644 / 0755, escape labels → test_item6_*
7. failures end in a message naming the file and the fix   → test_item7_*
Items 2 (secrets), 8 (CRF exports) and 9 (jieba cache, resumed train_loss, huge lines) are
in test_safety_secrets.py, test_safety_crf.py and test_safety_misc.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO
from finetune_fixtures import one_thread, reviews, tiny_model, write_tsv  # noqa: F401  (autouse fixture)

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000"]


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, review_lines) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "corpus.txt").write_text("\n".join(review_lines[:200]) + "\n", encoding="utf-8")
    return d / "corpus.txt"


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    """A tiny classification finetune + export on real reviews (labels include `|` and
    HTML, to test escaping) whose train text has characters the vocab lacks ([UNK])."""
    from workbench.cli import main

    d = tmp_path_factory.mktemp("cls")
    rows = reviews(120)
    labels = {"pos": "good|<img src=x onerror=alert(1)>", "neg": "bad*news_"}
    rows = [(labels[lab], text) for lab, text in rows]
    # Characters outside the vocabulary become [UNK]; their raw text must not reach an export.
    secret = "瑷瑷瑷鼋鼋"
    rows[0] = (rows[0][0], rows[0][1] + secret)
    write_tsv(d / "train.tsv", rows[:200])
    write_tsv(d / "valid.tsv", rows[200:240])
    tiny_model(d / "base", [t for _, t in rows[1:]])  # the vocab never saw `secret`
    assert main(["finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                 f"output={d / 'ft'}", "epochs=1", "max_length=48", *FAST]) == 0
    assert main(["export", f"input={d / 'ft'}", f"output={d / 'export'}"]) == 0
    return d


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- 1. ownership
def test_item1_output_holding_the_input_is_refused_and_nothing_is_deleted(cli, tmp_path, review_lines):
    user = tmp_path / "userdir"
    (user / "sub").mkdir(parents=True)
    (user / "corpus.txt").write_text("\n".join(review_lines[:50]), encoding="utf-8")
    (user / "sub" / "notes.md").write_text("my notes", encoding="utf-8")
    before = _tree(user)
    code, _, err = cli("prepare", f"input={user / 'corpus.txt'}", f"output={user}")
    assert code == 2 and "contains the input" in err and str(user) in err and "fix:" in err
    assert _tree(user) == before
    # A directory of the user's without the corpus in it is not the stage's either.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x", encoding="utf-8")
    code, _, err = cli("prepare", f"input={user / 'corpus.txt'}", f"output={other}")
    assert code == 2 and "not a workbench output" in err and "thesis.tex" in err
    assert (other / "thesis.tex").read_text() == "x"
    # An empty directory, or an earlier output of the same stage, is fine (and re-runs work).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("prepare", f"input={user / 'corpus.txt'}", f"output={empty}")[0] == 0
    assert cli("prepare", f"input={user / 'corpus.txt'}", f"output={empty}")[0] == 0


def test_item1_stage_outputs_never_replace_their_input_or_another_stage(cli, tmp_path, corpus):
    prepared = tmp_path / "prepared"
    assert cli("prepare", f"input={corpus}", f"output={prepared}")[0] == 0
    before = _tree(prepared)
    # segment input=X output=X
    code, _, err = cli("segment", f"input={prepared}", f"output={prepared}", "model=bert-base-chinese")
    assert code == 2 and "is also an input" in err
    # inside its input
    code, _, err = cli("segment", f"input={prepared}", f"output={prepared / 'seg'}", "model=bert-base-chinese")
    assert code == 2 and "lies inside the input" in err
    # another stage's output
    code, _, err = cli("vocab", f"input={prepared}", f"output={tmp_path / 'v'}")
    assert code == 0
    code, _, err = cli("prepare", f"input={corpus}", f"output={tmp_path / 'v'}")
    assert code == 2 and "is a `vocab` output" in err
    assert _tree(prepared) == before


def test_item1_export_onto_its_input_is_refused(cli, cls_run, tmp_path):
    ft = _copy_run(cls_run / "ft", tmp_path / "ft")
    before = _tree(ft)
    code, _, err = cli("export", f"input={ft}", f"output={ft}")
    assert code == 2 and "is also an input" in err
    # predict must not overwrite its input file or a file it did not write
    texts = tmp_path / "texts.txt"
    texts.write_text("很好\n", encoding="utf-8")
    code, _, err = cli("predict", f"model={ft}", f"input={texts}", f"output={texts}")
    assert code == 2 and texts.read_text(encoding="utf-8") == "很好\n"
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"mine": 1}\n', encoding="utf-8")
    code, _, err = cli("predict", f"model={ft}", f"input={texts}", f"output={notes}")
    assert code == 2 and "not written by `predict`" in err and notes.read_text() == '{"mine": 1}\n'
    assert _tree(ft) == before
    # predict may replace its own earlier predictions
    preds = tmp_path / "preds.jsonl"
    assert cli("predict", f"model={ft}", f"input={texts}", f"output={preds}")[0] == 0
    assert cli("predict", f"model={ft}", f"input={texts}", f"output={preds}")[0] == 0


def test_item1_report_never_overwrites_a_users_report_md(cli, tmp_path, corpus):
    run = tmp_path / "run"
    assert cli("prepare", f"input={corpus}", f"run={run}")[0] == 0
    (run / "report.md").write_text("# my own notes\n", encoding="utf-8")
    code, _, err = cli("report", f"run={run}")
    assert code == 2 and (run / "report.md").read_text() == "# my own notes\n"
    (run / "report.md").unlink()
    assert cli("report", f"run={run}")[0] == 0
    assert cli("report", f"run={run}")[0] == 0  # its own report is replaced


# --------------------------------------------------------------------------- 3. verified reads
@pytest.fixture(scope="module")
def prepared(tmp_path_factory, review_lines) -> Path:
    from workbench.cli import main

    d = tmp_path_factory.mktemp("prep")
    (d / "c.txt").write_text("\n".join(review_lines[:300]), encoding="utf-8")
    assert main(["prepare", f"input={d / 'c.txt'}", f"output={d / 'prepared'}", "split.valid_fraction=0.2"]) == 0
    assert main(["vocab", f"input={d / 'prepared'}", f"output={d / 'vocab'}"]) == 0
    return d


def test_item3_a_swapped_split_is_refused_until_accepted(cli, prepared, tmp_path, caplog):
    p = _copy_run(prepared / "prepared", tmp_path / "prepared")
    train = p / "dataset" / "train" / "data-00000-of-00001.arrow"
    valid = p / "dataset" / "valid" / "data-00000-of-00001.arrow"
    shutil.copy(valid, train)
    args = ("segment", f"input={p}", f"output={tmp_path / 'seg'}", f"model={prepared / 'vocab'}")
    code, _, err = cli(*args)
    assert code == 2 and "dataset/train/data-00000-of-00001.arrow" in err and "truncated or replaced" in err
    assert "workbench verify" in err and not (tmp_path / "seg").exists()
    # `workbench verify` shows the same; accept="why" records it, then segment proceeds and logs it.
    code, _, err = cli("verify", f"input={p}")
    assert code == 2 and "train" in err
    code, out, _ = cli("verify", f"input={p}", "accept=train replaced by valid for a smoke test")
    assert code == 0 and "dataset/train/data-00000-of-00001.arrow" in out
    m = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    assert m["accepted_changes"][-1]["reason"] == "train replaced by valid for a smoke test"
    assert "dataset/train/data-00000-of-00001.arrow" in m["accepted_changes"][-1]["changed"]
    with caplog.at_level("WARNING"):
        code, _, err = cli(*args)
    assert code == 0 and "train replaced by valid for a smoke test" in caplog.text


def test_item3_an_edited_manifest_is_refused(cli, prepared, tmp_path):
    p = _copy_run(prepared / "prepared", tmp_path / "prepared")
    m = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
    # what segment installs into the tokenizer (the character folding) would silently change
    m["config"]["clean"]["fullwidth"] = "all" if m["config"]["clean"]["fullwidth"] != "all" else "alnum"
    (p / "manifest.json").write_text(json.dumps(m, ensure_ascii=False, indent=2), encoding="utf-8")
    code, _, err = cli("segment", f"input={p}", f"output={tmp_path / 'seg'}", f"model={prepared / 'vocab'}")
    assert code == 2 and "manifest.json was edited" in err


def test_item3_damaged_or_wrong_models_are_never_exported_or_served(cli, cls_run, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("质量很好\n", encoding="utf-8")
    # truncated weights
    ft = _copy_run(cls_run / "ft", tmp_path / "trunc")
    w = ft / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    for args in (("export", f"input={ft}", f"output={tmp_path / 'e1'}"), ("predict", f"model={ft}", f"input={texts}")):
        code, out, err = cli(*args)
        assert code == 2 and "model.safetensors" in err and "Traceback" not in err and out == ""
    # the weights of the MLM base instead of the classifier's, even when "accepted"
    ft = _copy_run(cls_run / "ft", tmp_path / "mlm")
    shutil.copy(cls_run / "base" / "model.safetensors", ft / "model.safetensors")
    assert cli("export", f"input={ft}", f"output={tmp_path / 'e2'}")[0] == 2
    assert cli("verify", f"input={ft}", "accept=testing a swapped head")[0] == 0
    for args in (("export", f"input={ft}", f"output={tmp_path / 'e2'}"), ("predict", f"model={ft}", f"input={texts}"),
                 ("evaluate", f"model={ft}", f"input={cls_run / 'valid.tsv'}", f"output={tmp_path / 'ev'}")):
        code, out, err = cli(*args)
        assert code == 2 and "classifier" in err and "missing" in err, (args, err)
        assert out == ""
    assert not (tmp_path / "e2").exists()
    # no tokenizer files
    ft = _copy_run(cls_run / "ft", tmp_path / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (ft / name).unlink(missing_ok=True)
    code, _, err = cli("export", f"input={ft}", f"output={tmp_path / 'e3'}")
    assert code == 2 and "tokenizer" in err and not (tmp_path / "e3").exists()


def test_item3_finetune_refuses_a_base_whose_encoder_does_not_load(cli, cls_run, tmp_path):
    from safetensors.torch import load_file, save_file

    base = _copy_run(cls_run / "base", tmp_path / "base")
    w = load_file(base / "model.safetensors")
    del w[next(k for k in w if "encoder.layer.1" in k)]
    save_file(w, base / "model.safetensors", metadata={"format": "pt"})
    code, _, err = cli("finetune", f"model={base}", f"train={cls_run / 'train.tsv'}", f"valid={cls_run / 'valid.tsv'}",
                       f"output={tmp_path / 'ft'}", "epochs=1", *FAST)
    assert code == 2 and "encoder.layer.1" in err and "missing" in err


# --------------------------------------------------------------------------- 4. one writer
_HOLD = textwrap.dedent("""
    import sys, time
    sys.argv = ["workbench", "export", "input=somewhere", "key_seed=99"]
    from workbench.manifest import claim_output
    with claim_output({out!r}, stage="export"):
        print("held", flush=True)
        time.sleep(120)
""")


def _hold_lock(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(out=str(out))], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_item4_a_second_writer_fails_at_once_naming_the_first(cli, cls_run, tmp_path):
    out = tmp_path / "export"
    holder = _hold_lock(out)
    try:
        started = time.time()
        code, _, err = cli("export", f"input={cls_run / 'ft'}", f"output={out}")
        assert code == 2 and f"pid {holder.pid}" in err and "workbench export input=somewhere" in err
        assert "key_seed=<secret>" in err and "99" not in err.split("command:")[1]
        assert time.time() - started < 60 and not out.exists()
        assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its holder
    assert cli("export", f"input={cls_run / 'ft'}", f"output={out}")[0] == 0


def test_item4_two_pretrain_runs_never_share_checkpoints(cli, pretrain_chain, tmp_path):
    out = tmp_path / "pre"
    ckpts = tmp_path / "pre-checkpoints"
    holder = _hold_lock(ckpts)  # a live run's checkpoint directory
    try:
        code, _, err = cli("pretrain", f"run={pretrain_chain}", f"model={pretrain_chain / 'base-model'}",
                           f"output={out}", "max_steps=2", "batch_size=4")
        assert code == 2 and f"pid {holder.pid}" in err and "checkpoints" in err
        assert not ckpts.exists() or not any(ckpts.glob("checkpoint-*"))
    finally:
        holder.kill()
        holder.wait()
    # a checkpoint directory that is not pretrain's is not written into
    ckpts.mkdir(exist_ok=True)
    (ckpts / "holiday.jpg").write_bytes(b"\xff\xd8")
    code, _, err = cli("pretrain", f"run={pretrain_chain}", f"model={pretrain_chain / 'base-model'}",
                       f"output={out}", "max_steps=2", "batch_size=4")
    assert code == 2 and "holiday.jpg" in err


def test_item4_concurrent_exports_one_wins_the_other_says_why(cls_run, tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "workbench", "export", f"input={cls_run / 'ft'}", f"output={out}"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert "Traceback" not in err, err
        assert code == 0 or (code == 2 and "being written by another run" in err), err
    assert any(code == 0 for code, _ in results)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stage"] == "export"


# --------------------------------------------------------------------------- 5. leftovers
def _plant_leftovers(parent: Path, name: str) -> list[Path]:
    junk = [parent / f".{name}.tmp-4242-deadbeef", parent / f".{name}.old-0badf00d"]
    for j in junk:
        (j / "dataset").mkdir(parents=True)
        (j / "dataset" / "data.arrow").write_bytes(os.urandom(4096))
    return junk


def test_item5_leftovers_of_dead_runs_are_swept_at_the_next_start(cli, tmp_path, corpus, caplog):
    junk = _plant_leftovers(tmp_path, "out")
    with caplog.at_level("WARNING"):
        assert cli("prepare", f"input={corpus}", f"output={tmp_path / 'out'}")[0] == 0
    assert not any(j.exists() for j in junk) and "swept 2 leftover(s)" in caplog.text
    # a sibling output's leftovers are not this stage's business
    other = _plant_leftovers(tmp_path, "other")
    assert cli("prepare", f"input={corpus}", f"output={tmp_path / 'out'}")[0] == 0
    assert all(j.exists() for j in other)


def test_item5_a_kill_during_the_final_swap_loses_nothing(cli, tmp_path, corpus):
    out = tmp_path / "out"
    assert cli("prepare", f"input={corpus}", f"output={out}")[0] == 0
    before = _tree(out)
    # killed after moving the old output aside, before renaming the new one in:
    out.rename(tmp_path / ".out.old-4242-0badf00d")
    (tmp_path / ".out.tmp-4242-deadbeef").mkdir()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    # the next run (even one that then fails) first puts the old output back
    assert cli("prepare", f"input=[{corpus},{bad}]", f"output={out}")[0] == 2
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


def test_item5_workbench_clean_lists_and_removes_but_spares_live_runs(cli, tmp_path):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    dead = _plant_leftovers(runs / "a", "prepared")
    code, out, _ = cli("clean", f"path={runs}", "dry_run=true")
    assert code == 0 and "would remove 2 leftover(s)" in out and all(j.exists() for j in dead)
    holder = _hold_lock(runs / "a" / "pretrain")  # a live run, with its temp dir
    live = _plant_leftovers(runs / "a", "pretrain")
    try:
        code, out, _ = cli("clean", f"path={runs}")
        assert code == 0 and "removed 2 leftover(s)" in out and "being written now" in out
        assert not any(j.exists() for j in dead) and all(j.exists() for j in live)
    finally:
        holder.kill()
        holder.wait()
    code, out, _ = cli("clean", f"path={runs}")  # its holder is dead now
    assert code == 0 and "removed 2 leftover(s)" in out and not any(j.exists() for j in live)


# --------------------------------------------------------------------------- 6. exports
def test_item6_exports_hold_no_corpus_text_are_readable_and_escape_labels(cls_run, tmp_path, cli):
    exp = cls_run / "export"
    ft_metrics = (cls_run / "ft" / "metrics.json").read_text(encoding="utf-8")
    assert "瑷" in ft_metrics  # the user's own run shows what became [UNK] ...
    for p in exp.rglob("*"):  # ... the export does not, in any text file
        if p.is_file() and p.suffix != ".safetensors":
            data = p.read_bytes()
            assert "瑷".encode() not in data and "鼋".encode() not in data, p
    # no 8-character piece of any train record in a text file of the export
    texts = [line.split("\t", 1)[1] for line in (cls_run / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    blob = "".join(p.read_text(encoding="utf-8") for p in exp.iterdir() if p.suffix in (".json", ".md", ".txt"))
    for text in texts:
        for i in range(0, max(len(text) - 8, 1), 8):
            assert text[i:i + 8] not in blob
    umask = os.umask(0o022)
    os.umask(umask)
    for p in [exp, *exp.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~umask, (p, oct(mode))
    card = (exp / "README.md").read_text(encoding="utf-8")
    assert "<img" not in card and "&lt;img src=x onerror=alert\\(1\\)&gt;" in card
    assert "good\\|" in card  # the table cell is not split
    code, _, _ = cli("evaluate", f"model={exp}", f"input={cls_run / 'valid.tsv'}", f"output={tmp_path / 'ev'}")
    assert code == 0
    report = (tmp_path / "ev" / "report.md").read_text(encoding="utf-8")
    outside_code = re.sub(r"(?ms)^(`{3,})\n.*?^\1$", "", report)  # HTML in a code block is shown, not run
    assert "<img" not in outside_code and "good\\|" in outside_code


# --------------------------------------------------------------------------- 7. errors, not tracebacks
def test_item7_truncated_arrow_and_missing_task_json_end_in_messages(cli, prepared, cls_run, tmp_path):
    p = _copy_run(prepared / "prepared", tmp_path / "prepared")
    arrow = p / "dataset" / "train" / "data-00000-of-00001.arrow"
    arrow.write_bytes(arrow.read_bytes()[:100])
    code, _, err = cli("segment", f"input={p}", f"output={tmp_path / 'seg'}", f"model={prepared / 'vocab'}")
    assert code == 2 and "data-00000-of-00001.arrow" in err and "fix:" in err
    # even when the truncation was "accepted", reading it ends in a message, not a traceback
    assert cli("verify", f"input={p}", "accept=truncated on purpose")[0] == 0
    code, _, err = cli("segment", f"input={p}", f"output={tmp_path / 'seg'}", f"model={prepared / 'vocab'}")
    assert code == 2 and "cannot read the dataset" in err and "fix:" in err
    ft = _copy_run(cls_run / "ft", tmp_path / "ft")
    (ft / "task.json").unlink()
    texts = tmp_path / "t.txt"
    texts.write_text("很好\n", encoding="utf-8")
    for args in (("export", f"input={ft}", f"output={tmp_path / 'e'}"), ("predict", f"model={ft}", f"input={texts}")):
        code, _, err = cli(*args)
        assert code == 2 and "task.json" in err and "fix" in err.lower(), err


def test_item7_a_full_disk_ends_in_a_message_and_keeps_the_old_output(cli, tmp_path, corpus, monkeypatch):
    import workbench.stages.prepare as prepare

    out = tmp_path / "out"
    assert cli("prepare", f"input={corpus}", f"output={out}")[0] == 0
    before = _tree(out)

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(prepare, "_write_duplicates", full)
    code, _, err = cli("prepare", f"input={corpus}", f"output={out}", "seed=1")
    assert code == 2 and "ENOSPC" in err and "duplicates.jsonl" in err and "free disk space" in err
    assert _tree(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
