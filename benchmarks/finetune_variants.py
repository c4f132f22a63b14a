"""The fine-tuning variants table (issue 15, deliverable 5): how to use the encoder, measured.

Variants, each an ordinary `workbench finetune` output from the same base model:
  full          full fine-tune, [CLS] (the baseline every ratio is against)
  frozen_cls    frozen encoder + BERT's pooler on [CLS] + linear (freeze_encoder)
  frozen_mean   frozen encoder + mean pooling
  frozen_mix    frozen encoder + a learned scalar mix of all layers (ELMo), [CLS] of the mix
  top2          only the top 2 layers train (freeze_layers=2)
  adapters      Houlsby bottleneck adapters (reduction 16) + LayerNorms, encoder frozen
  lora          LoRA r=8 on query/value, merged before saving
Tasks: ChnSentiCorp accuracy (classification), MSRA NER entity F1 (tagging, softmax: no CRF,
which the layer mix cannot take), CMRC 2018 EM and F1 (task=qa, the official metric; F1 picks).
For QA, frozen_cls is a frozen encoder + the linear span head on the last layer (no [CLS] vector
is involved) and frozen_mean is n/a (pooling makes one vector per text; a span head scores every
token); frozen_mix is the span head on the mixed layers.

CPU budget (2 shared cores): a fixed number of optimizer steps (batch 32) over the full train
files, `max_length` 64; valid is a fixed subsample (ChnSentiCorp dev: 400 of 1,200; MSRA has no
dev split, so its test file is split once, seeded, into 500 valid / 1,000 test sentences);
ChnSentiCorp test is the full 1,200. CMRC 2018 has its own budget (--qa-*): CMRC dev split by
article 0.7 / 0.3 (split seed 0, as configs/cmrc2018.yaml) into train and held-out questions, a
seeded sample of those as test and of trial as valid, `max_length` --qa-max-length with
--qa-stride shared tokens, one valid evaluation at the end (no selection). Every cell is cached
under --work (a finetune output with its manifest): re-running resumes where it stopped, and a
cached cell made with another command (steps, lr, ...) stops the run rather than mix budgets.
After every cell the results so far are written, with the seeds each cell has: a table with
fewer than 3 seeds in a cell is partial. Tasks not run (--tasks) keep their cached cells in the
tables.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_variants.py [--base runs/base/pretrain]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_variants.py --tasks cmrc2018   # the QA column alone
Output: benchmarks/results/finetune_variants.{json,md} (--results elsewhere for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"

VARIANTS = {  # name: (overrides, lr for classification, lr for tagging and QA: both token-level heads)
    "full": ([], 1e-4, 2e-4),
    "frozen_cls": (["freeze_encoder=true"], 2e-3, 2e-3),
    "frozen_mean": (["freeze_encoder=true", "pooling=mean"], 2e-3, 2e-3),
    "frozen_mix": (["freeze_encoder=true", "layer_mix=true"], 2e-3, 2e-3),
    "top2": (["freeze_layers=2"], 2e-4, 4e-4),
    "adapters": (["adapter.kind=houlsby", "adapter.reduction=16"], 1e-3, 1e-3),
    "lora": (["lora.r=8", "lora.alpha=16"], 1e-3, 1e-3),
}
TASKS = ("chnsenticorp", "msra", "cmrc2018")
# Pooling makes one vector per text; a tagger / span head scores every token (finetune refuses it).
NOT_APPLICABLE = {("msra", "frozen_mean"): "n/a: pooling makes one vector per text, a tagger labels tokens",
                  ("cmrc2018", "frozen_mean"): "n/a: pooling makes one vector per text, a span head scores every "
                                               "token (finetune refuses pooling for qa)"}
# What a variant is for a task where its name says something else.
ROW_NOTES = {("cmrc2018", "frozen_cls"): "frozen encoder + linear span head on the last layer (no [CLS] vector "
                                         "or pooler: the QA head reads every token)",
             ("cmrc2018", "frozen_mix"): "frozen encoder + span head on the learned layer mix"}
TITLES = {"chnsenticorp": "ChnSentiCorp test accuracy", "msra": "MSRA NER test entity F1",
          "cmrc2018": "CMRC 2018 test F1 and EM (official metric, fractions)"}
CLAUSE_END = re.compile("[，。！？；]")
# CMRC 2018 budget per run: 96 steps x 32 windows of 256 tokens = 0.47 epoch of the 6,581 train windows.
# Measured on 1 thread (2 shared cores): full ~2.9 s a step, adapters ~2.0, frozen ~0.7, plus ~45 s of
# loading, valid (200 questions) and test (400) per run: the 18 runs ~62 min.
QA_BUDGET = {"steps": 96, "max_length": 256, "stride": 64, "valid": 200, "test": 400}


def sample_lines(src: Path, dst: Path, n: int, seed: int, header: bool) -> None:
    lines = src.read_text(encoding="utf-8").splitlines()
    head, body = (lines[:1], lines[1:]) if header else ([], lines)
    keep = sorted(random.Random(seed).sample(range(len(body)), min(n, len(body))))
    dst.write_text("\n".join(head + [body[i] for i in keep]) + "\n", encoding="utf-8")


def split_conll(src: Path, valid: Path, test: Path, n_valid: int, n_test: int, seed: int) -> None:
    sents = [s for s in src.read_text(encoding="utf-8").split("\n\n") if s.strip()]
    order = random.Random(seed).sample(range(len(sents)), n_valid + n_test)
    valid.write_text("\n\n".join(sents[i].strip("\n") for i in sorted(order[:n_valid])) + "\n", encoding="utf-8")
    test.write_text("\n\n".join(sents[i].strip("\n") for i in sorted(order[n_valid:])) + "\n", encoding="utf-8")


def prepare_cmrc(data: Path, n_valid: int, n_test: int) -> dict:
    """CMRC 2018 files in `data`: dev split by article (0.3 held out, split seed 0: the split of
    configs/cmrc2018.yaml), its train part whole, a seeded sample of `n_test` held-out questions
    as test and of `n_valid` trial questions as valid (0 = all). Returns what was written."""
    from workbench.tasks.qa import read_squad, split_by_article, write_squad

    names = {"train": "cmrc2018_train.json", "valid": f"cmrc2018_trial{n_valid or 'all'}.json",
             "test": f"cmrc2018_test{n_test or 'all'}.json"}
    info_file = data / f"cmrc2018_{n_valid or 'all'}_{n_test or 'all'}.json"
    if info_file.is_file() and all((data / n).is_file() for n in names.values()):
        return json.loads(info_file.read_text(encoding="utf-8"))
    dev, _ = read_squad(SHARED / "cmrc2018" / "cmrc2018_dev.json", repair=True)
    trial, _ = read_squad(SHARED / "cmrc2018" / "cmrc2018_trial.json", repair=True)
    train, held = split_by_article(dev, 0.3, seed=0)

    def sample(records, n):
        keep = sorted(random.Random(0).sample(range(len(records)), n)) if 0 < n < len(records) else range(len(records))
        return [records[i] for i in keep]

    test, valid = sample(held, n_test), sample(trial, n_valid)
    for key, records in (("train", train), ("valid", valid), ("test", test)):
        write_squad(records, data / names[key])
    info = {"files": names, "train": {"articles": len({r.article for r in train}), "questions": len(train)},
            "held_out_questions": len(held), "test": len(test), "trial_questions": len(trial), "valid": len(valid),
            "clause_rule": {"test": clause_rule(test), "valid": clause_rule(valid), "held_out_all": clause_rule(held)}}
    info_file.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def clause_rule(records) -> dict:
    """The no-model reference of benchmarks/results/cmrc2018_base.json: answer with the context
    clause (cut at ，。！？；) sharing the most distinct characters with the question (ties: the
    first), scored by the same official metric."""
    from workbench.tasks.qa import qa_metrics

    best = []
    for r in records:
        clauses = [c for c in CLAUSE_END.split(r.context) if c.strip()] or [r.context]
        q = set(r.question)
        best.append(max(clauses, key=lambda c: len(set(c) & q)))  # max keeps the first of ties
    m = qa_metrics(records, best)
    return {"em": m["em"], "f1": m["f1"], "n": m["n"]}


def task_args(task: str, data: Path, steps: int, max_length: int, qa: dict | None = None) -> list[str]:
    if task == "cmrc2018":  # its own budget: longer inputs, fewer steps, one valid evaluation at the end
        files = qa["files"]
        return ["task=qa", f"train={data / files['train']}", f"valid={data / files['valid']}",
                f"test={data / files['test']}", "data.repair=true", f"max_steps={qa['steps']}", "batch_size=32",
                "eval_batch_size=64", f"max_length={qa['max_length']}", f"qa.doc_stride={qa['stride']}",
                "logging_steps=10", "warmup_ratio=0.06"]
    common = [f"max_steps={steps}", "batch_size=32", "eval_batch_size=128", f"max_length={max_length}",
              f"eval_steps={max(steps // 2, 1)}", "logging_steps=50", "warmup_ratio=0.06"]
    if task == "chnsenticorp":
        return ["task=classification", f"train={SHARED / 'chnsenticorp' / 'train.tsv'}",
                f"valid={data / 'chnsenticorp_dev400.tsv'}", f"test={SHARED / 'chnsenticorp' / 'test.tsv'}",
                "data.text_column=text_a", "data.label_column=label", "truncation=head_tail", *common]
    return ["task=tagging", f"train={SHARED / 'msra_ner' / 'msra_train.txt'}", f"valid={data / 'msra_valid500.txt'}",
            f"test={data / 'msra_test1000.txt'}", "data.format=conll", "data.repair=true", "scheme=bio", *common]


def run_cell(task: str, variant: str, seed: int, base: str, work: Path, data: Path, steps: int, max_length: int,
             qa: dict | None = None) -> dict:
    from workbench.config import load_stage_config
    from workbench.stages import finetune

    out = work / task / variant / f"seed-{seed}"
    cell = out / "cell.json"
    overrides, lr_cls, lr_tag = VARIANTS[variant]
    lr = lr_cls if task == "chnsenticorp" else lr_tag
    args = [f"model={base}", f"output={out}", f"seed={seed}", f"lr={lr}",
            *task_args(task, data, steps, max_length, qa), *overrides]
    command = "workbench finetune " + " ".join(args)
    if cell.is_file():
        cached = json.loads(cell.read_text(encoding="utf-8"))
        if cached.get("command") != command:
            sys.exit(f"{cell} was made by another command than this run's:\n  cached: {cached.get('command')}\n"
                     f"  now:    {command}\nfix: pass the options it was made with (e.g. --steps), or another --work")
        return cached
    t = time.time()
    try:
        finetune.run(load_stage_config("finetune", None, args))
    except Exception as e:  # recorded and reported, not fatal: the other cells still run
        return {"task": task, "variant": variant, "seed": seed, "error": f"{type(e).__name__}: {e}",
                "command": command}
    wall = time.time() - t
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    main = m["metric"]
    result = {"task": task, "variant": variant, "seed": seed, "metric": main, "test": m["test"][main],
              "valid": m["valid"][main], "trainable": m["parameters"]["trainable"], "total": m["parameters"]["total"],
              "wall_s": round(wall, 1), "lr": lr, "command": command}
    if task == "cmrc2018":  # EM beside F1, and the window counts the budget gave
        result.update(test_em=m["test"]["em"], valid_em=m["valid"]["em"], train_windows=m["length"]["train"]["windows"])
    cell.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _option(command: str, key: str) -> str | None:
    m = re.search(rf"(?:^| ){re.escape(key)}=(\S+)", command)
    return m.group(1) if m else None


def budget_line(cells: list[dict]) -> str:
    """The budget the cells of one task ran with, read from their commands (cached cells of
    earlier runs included)."""
    budgets = sorted({tuple(_option(c["command"], k) for k in ("max_steps", "batch_size", "max_length", "qa.doc_stride"))
                      for c in cells})
    return "; ".join(f"{steps} optimizer steps x batch {batch}, max_length {length}"
                     + (f", doc_stride {stride}" if stride else "") for steps, batch, length, stride in budgets)


def summarise(cells: list[dict], meta: dict) -> tuple[str, dict]:
    table: dict = {}
    for task in TASKS:
        rows = {}
        for variant in VARIANTS:
            got = [c for c in cells if c["task"] == task and c["variant"] == variant and "error" not in c]
            if not got:
                continue
            scores = [c["test"] for c in got]
            rows[variant] = {"seeds": [c["seed"] for c in got], "n": len(got), "metric": got[0]["metric"],
                             "mean": statistics.mean(scores), "std": statistics.stdev(scores) if len(scores) > 1 else None,
                             "valid_mean": statistics.mean(c["valid"] for c in got),
                             "trainable": got[0]["trainable"], "total": got[0]["total"],
                             "wall_s_mean": statistics.mean(c["wall_s"] for c in got), "lr": got[0]["lr"],
                             "per_seed": {c["seed"]: c["test"] for c in got}}
            if task == "cmrc2018":
                em = [c["test_em"] for c in got]
                rows[variant].update(em_mean=statistics.mean(em), em_std=statistics.stdev(em) if len(em) > 1 else None,
                                     valid_em_mean=statistics.mean(c["valid_em"] for c in got),
                                     per_seed_em={c["seed"]: c["test_em"] for c in got})
        if "full" in rows:
            for r in rows.values():
                r["ratio_vs_full"] = r["mean"] / rows["full"]["mean"] if rows["full"]["mean"] else None
        table[task] = rows
    complete = all(len(table.get(t, {})) == sum((t, v) not in NOT_APPLICABLE for v in VARIANTS)
                   and all(r["n"] >= 3 for r in table[t].values()) for t in TASKS)
    total = sum(c.get("wall_s", 0) for c in cells)
    budgets = {t: budget_line([c for c in cells if c["task"] == t]) for t in TASKS if any(c["task"] == t for c in cells)}
    qa = meta.get("cmrc2018") or {}
    lines = ["# Fine-tuning variants: ChnSentiCorp, MSRA NER and CMRC 2018"
             f"{'' if complete else ' (PARTIAL: cells below 3 seeds or missing are marked)'}", "",
             f"Base: `{meta['base']}` ({meta['base_desc']}), on {meta['machine']}; tables written {meta['date']}.",
             "Budgets per run: " + "; ".join(f"{TITLES[t].split(' test')[0]}: {b}" for t, b in budgets.items()) + ".",
             "Test metric mean ± sample std over seeds; ratio = mean / full fine-tune's mean (same run); "
             "trainable parameters as the optimizer saw them; wall = seconds per run (train + valid evals + test), "
             "2 CPU cores shared with other jobs, so wall times are indicative only.",
             "ChnSentiCorp: full train file (steps x 32 reviews seen), valid 400 of dev (seeded), full test (1,200). "
             "MSRA NER: full train file, its test file split once (seeded) into 500 valid / 1,000 test sentences; "
             "softmax tagger (no CRF), BIO. CMRC 2018: see its section.",
             f"{len([c for c in cells if 'error' not in c])} runs, {total / 60:.0f} min of wall time in all "
             "(cached cells of earlier invocations included).", ""]
    for task in TASKS:
        metric_cols = "| test F1 | ratio vs full | test EM | valid F1 | valid EM |" if task == "cmrc2018" else \
            "| test | ratio vs full | valid |"
        lines += [f"## {TITLES[task]}", ""]
        if task == "cmrc2018":
            windows = next((c["train_windows"] for c in cells if c["task"] == task and "train_windows" in c), None)
            lines += cmrc_preamble(qa, budgets.get(task), windows) + [""]
        if not table[task]:
            lines += ["Not run.", ""]
            continue
        lines += [f"| variant | seeds {metric_cols} trainable params | lr | wall s |",
                  "|---|---|" + "---|" * (metric_cols.count("|") - 1) + "---|---|---|"]
        empty = "| " * metric_cols.count("|")
        for variant in VARIANTS:
            r = table[task].get(variant)
            if (task, variant) in NOT_APPLICABLE:
                lines.append(f"| {variant} | {NOT_APPLICABLE[task, variant]} {empty}| | |")
                continue
            if r is None:
                lines.append(f"| {variant} | 0 (not run) {empty}| | |")
                continue
            std = f" ± {r['std']:.4f}" if r["std"] is not None else ""
            ratio = f"{r['ratio_vs_full']:.3f}" if r.get("ratio_vs_full") else ""
            mark = "" if r["n"] >= 3 else " (partial)"
            name = f"{variant}¹" if (task, variant) in ROW_NOTES else variant
            scores = f"{r['mean']:.4f}{std} | {ratio} | "
            if task == "cmrc2018":
                em_std = f" ± {r['em_std']:.4f}" if r["em_std"] is not None else ""
                scores += f"{r['em_mean']:.4f}{em_std} | {r['valid_mean']:.4f} | {r['valid_em_mean']:.4f}"
            else:
                scores += f"{r['valid_mean']:.4f}"
            lines.append(f"| {name} | {r['n']}{mark} | {scores} | "
                         f"{r['trainable']:,} of {r['total']:,} ({100 * r['trainable'] / r['total']:.1f}%) | "
                         f"{r['lr']:g} | {r['wall_s_mean']:.0f} |")
        notes = [f"- {v}¹: {ROW_NOTES[t, v]}" for t, v in ROW_NOTES if t == task]
        if notes:
            lines += ["", *notes]
        full = table[task].get("full")
        if task == "msra" and full and full["mean"] < 0.3:
            lines += ["", f"At this budget the softmax tagger has barely started learning (full fine-tune F1 "
                      f"{full['mean']:.3f}; most entities are still missed), so these F1 figures rank little: "
                      "NER needs a larger budget than a CPU session gives (benchmarks/results/bench_finetune_shared: "
                      "250 steps, softmax F1 0.18, with a CRF 0.57)."]
        if task == "cmrc2018" and full and qa.get("clause_rule"):
            rule = qa["clause_rule"]["test"]["f1"]
            lines += ["", f"Full fine-tune test F1 {full['mean']:.4f} vs the no-model clause rule's {rule:.4f} on the same "
                      "questions: " + ("the models have not yet learnt to beat a character-overlap heuristic at this "
                                       "budget, so the ranking of the variants says little about QA ability."
                                       if full["mean"] < rule else "above the heuristic.")]
        lines.append("")
    failed = [c for c in cells if "error" in c]
    if failed:
        lines += ["Failed cells (not in the means):", ""] + [
            f"- {c['task']} {c['variant']} seed {c['seed']}: {c['error'][:300]}" for c in failed] + [""]
    lines += ["Commands: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_variants.py` "
              f"{' '.join(meta['argv'])} (this invocation); each cell's exact `workbench finetune` command is in the "
              "JSON (`cells`)."]
    return "\n".join(lines) + "\n", {"meta": meta, "complete": complete, "table": table, "cells": cells}


def cmrc_preamble(qa: dict, budget: str | None, train_windows: int | None) -> list[str]:
    """How the CMRC 2018 column was made: split, samples, budget, the no-model reference."""
    if not qa:
        return ["CMRC 2018 data not prepared in this invocation (cached cells only)."]
    rule = qa.get("clause_rule", {})
    out = [f"CMRC 2018 dev split by article 0.7 / 0.3 (split seed 0, as configs/cmrc2018.yaml): train "
           f"{qa['train']['questions']:,} questions ({qa['train']['articles']} articles, all used); test a seeded "
           f"sample of {qa['test']:,} of the {qa['held_out_questions']:,} held-out questions; valid a seeded sample "
           f"of {qa['valid']:,} of trial's {qa['trial_questions']:,} questions, evaluated once at the end of training "
           f"(no selection). {budget or ''} per run"
           + (f" ({qa['steps'] * 32 / train_windows:.2f} epoch of the {train_windows:,} train windows)" if train_windows
              else "")
           + ", answers up to 30 tokens; lr as MSRA's column (token-level heads). A CPU budget (the default budget's 18 runs take "
           "about an hour on one thread), far below what CMRC needs: see the reference below.",
           "F1 picks and is the ratio's metric; EM beside it. Both are the official CMRC 2018 metric as fractions "
           "(x 100 for the official scale)."]
    if rule:
        out += ["", "No-model reference for scale (benchmarks/results/cmrc2018_base.json's rule: answer with the "
                "context clause, cut at ，。！？；, sharing the most distinct characters with the question; same "
                f"metric): test F1 {rule['test']['f1']:.4f} / EM {rule['test']['em']:.4f} on these {rule['test']['n']} "
                f"questions, valid F1 {rule['valid']['f1']:.4f} / EM {rule['valid']['em']:.4f} "
                f"(all {rule['held_out_all']['n']} held-out questions: F1 {rule['held_out_all']['f1']:.4f}, "
                "the 24.08 of cmrc2018_base.json)."]
    return out


def cached_cells(work: Path, task: str) -> list[dict]:
    """The cells of `task` already under --work (a task this invocation does not run)."""
    out = []
    for variant in VARIANTS:
        for cell in sorted((work / task / variant).glob("seed-*/cell.json")):
            out.append(json.loads(cell.read_text(encoding="utf-8")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="runs/base/pretrain")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps", type=int, default=100, help="ChnSentiCorp / MSRA steps (the published table: 100)")
    ap.add_argument("--max-length", type=int, default=64, help="ChnSentiCorp / MSRA max_length")
    ap.add_argument("--qa-steps", type=int, default=QA_BUDGET["steps"], help="CMRC 2018 optimizer steps (batch 32)")
    ap.add_argument("--qa-max-length", type=int, default=QA_BUDGET["max_length"])
    ap.add_argument("--qa-stride", type=int, default=QA_BUDGET["stride"], help="CMRC 2018 qa.doc_stride")
    ap.add_argument("--qa-valid", type=int, default=QA_BUDGET["valid"], help="trial questions sampled as valid (0: all)")
    ap.add_argument("--qa-test", type=int, default=QA_BUDGET["test"], help="held-out dev questions sampled as test (0: all)")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"some of {','.join(TASKS)}; the others keep their cached "
                                                             "cells in the tables")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="runs/finetune_variants")
    ap.add_argument("--results", default=str(RESULTS.relative_to(REPO)), help="where the .json/.md go")
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    if unknown := [t for t in tasks if t not in TASKS]:
        sys.exit(f"--tasks: unknown {unknown}; choose from {list(TASKS)}")
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: the variants table needs ChnSentiCorp, MSRA NER and CMRC 2018")
    import torch

    torch.set_num_threads(1)
    work = (REPO / args.work).resolve()
    results = (REPO / args.results).resolve()
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "chnsenticorp_dev400.tsv").is_file():
        sample_lines(SHARED / "chnsenticorp" / "dev.tsv", data / "chnsenticorp_dev400.tsv", 400, seed=0, header=True)
    if not (data / "msra_test1000.txt").is_file():
        split_conll(SHARED / "msra_ner" / "msra_test.txt", data / "msra_valid500.txt", data / "msra_test1000.txt",
                    500, 1000, seed=0)
    qa = None
    if "cmrc2018" in tasks or any((work / "cmrc2018").glob("*/seed-*/cell.json")):  # data of run or cached cells
        qa = {**prepare_cmrc(data, args.qa_valid, args.qa_test), "steps": args.qa_steps,
              "max_length": args.qa_max_length, "stride": args.qa_stride}
    base = str((REPO / args.base).resolve())
    cfg = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    meta = {"base": args.base, "base_desc": f"BERT {cfg['num_hidden_layers']} layers x {cfg['hidden_size']} hidden, "
                                            f"vocab {cfg['vocab_size']:,}; the project's best base (`make base`)",
            "steps": args.steps, "max_length": args.max_length, "argv": sys.argv[1:], "tasks_run": tasks,
            "cmrc2018": qa, "machine": f"{platform.platform()}, torch threads 1",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [c for t in TASKS if t not in tasks for c in cached_cells(work, t)]
    # Seeds outermost: every variant gets its first seed before any gets its third, so a run
    # stopped early still compares all variants.
    for task in tasks:
        for seed in seeds:
            for variant in args.variants.split(","):
                if (task, variant) in NOT_APPLICABLE:
                    continue
                cells.append(run_cell(task, variant, seed, base, work, data, args.steps, args.max_length, qa))
                text, payload = summarise(cells, meta)
                results.mkdir(parents=True, exist_ok=True)
                (results / "finetune_variants.md").write_text(text, encoding="utf-8")
                (results / "finetune_variants.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
                c = cells[-1]
                print(f"{task} {variant} seed {seed}: " + (c["error"] if "error" in c else
                      f"test {c['metric']} {c['test']:.4f}, {c['trainable']:,} trainable, {c['wall_s']:.0f} s"), flush=True)
    print(summarise(cells, meta)[0])

if __name__ == "__main__":
    main()
