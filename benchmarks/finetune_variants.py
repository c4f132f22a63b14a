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
which the layer mix cannot take). CMRC 2018 (task=qa) is not run by this script yet.

CPU budget (2 shared cores): a fixed number of optimizer steps (batch 32) over the full train
files, `max_length` 64; valid is a fixed subsample (ChnSentiCorp dev: 400 of 1,200; MSRA has no
dev split, so its test file is split once, seeded, into 500 valid / 1,000 test sentences);
ChnSentiCorp test is the full 1,200. Every cell is cached under --work (a finetune output with
its manifest): re-running resumes where it stopped. After every cell the results so far are
written, with the seeds each cell has: a table with fewer than 3 seeds in a cell is partial.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_variants.py [--base runs/base/pretrain]
Output: benchmarks/results/finetune_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"

VARIANTS = {  # name: (overrides, lr for classification, lr for tagging)
    "full": ([], 1e-4, 2e-4),
    "frozen_cls": (["freeze_encoder=true"], 2e-3, 2e-3),
    "frozen_mean": (["freeze_encoder=true", "pooling=mean"], 2e-3, 2e-3),
    "frozen_mix": (["freeze_encoder=true", "layer_mix=true"], 2e-3, 2e-3),
    "top2": (["freeze_layers=2"], 2e-4, 4e-4),
    "adapters": (["adapter.kind=houlsby", "adapter.reduction=16"], 1e-3, 1e-3),
    "lora": (["lora.r=8", "lora.alpha=16"], 1e-3, 1e-3),
}
TASKS = ("chnsenticorp", "msra")
# Pooling makes one vector per text; a tagger labels every token (finetune refuses the combination).
NOT_APPLICABLE = {("msra", "frozen_mean"): "n/a: pooling makes one vector per text, a tagger labels tokens"}


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


def task_args(task: str, data: Path, steps: int, max_length: int) -> list[str]:
    common = [f"max_steps={steps}", "batch_size=32", "eval_batch_size=128", f"max_length={max_length}",
              f"eval_steps={max(steps // 2, 1)}", "logging_steps=50", "warmup_ratio=0.06"]
    if task == "chnsenticorp":
        return ["task=classification", f"train={SHARED / 'chnsenticorp' / 'train.tsv'}",
                f"valid={data / 'chnsenticorp_dev400.tsv'}", f"test={SHARED / 'chnsenticorp' / 'test.tsv'}",
                "data.text_column=text_a", "data.label_column=label", "truncation=head_tail", *common]
    return ["task=tagging", f"train={SHARED / 'msra_ner' / 'msra_train.txt'}", f"valid={data / 'msra_valid500.txt'}",
            f"test={data / 'msra_test1000.txt'}", "data.format=conll", "data.repair=true", "scheme=bio", *common]


def run_cell(task: str, variant: str, seed: int, base: str, work: Path, data: Path, steps: int, max_length: int) -> dict:
    from workbench.config import load_stage_config
    from workbench.stages import finetune

    out = work / task / variant / f"seed-{seed}"
    cell = out / "cell.json"
    if cell.is_file():
        return json.loads(cell.read_text(encoding="utf-8"))
    overrides, lr_cls, lr_tag = VARIANTS[variant]
    lr = lr_cls if task == "chnsenticorp" else lr_tag
    args = [f"model={base}", f"output={out}", f"seed={seed}", f"lr={lr}", *task_args(task, data, steps, max_length),
            *overrides]
    t = time.time()
    try:
        finetune.run(load_stage_config("finetune", None, args))
    except Exception as e:  # recorded and reported, not fatal: the other cells still run
        return {"task": task, "variant": variant, "seed": seed, "error": f"{type(e).__name__}: {e}",
                "command": "workbench finetune " + " ".join(args)}
    wall = time.time() - t
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    main = m["metric"]
    result = {"task": task, "variant": variant, "seed": seed, "metric": main, "test": m["test"][main],
              "valid": m["valid"][main], "trainable": m["parameters"]["trainable"], "total": m["parameters"]["total"],
              "wall_s": round(wall, 1), "lr": lr, "command": "workbench finetune " + " ".join(args)}
    cell.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


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
        if "full" in rows:
            for r in rows.values():
                r["ratio_vs_full"] = r["mean"] / rows["full"]["mean"] if rows["full"]["mean"] else None
        table[task] = rows
    complete = all(len(table.get(t, {})) == sum((t, v) not in NOT_APPLICABLE for v in VARIANTS)
                   and all(r["n"] >= 3 for r in table[t].values()) for t in TASKS)
    total = sum(c.get("wall_s", 0) for c in cells)
    lines = [f"# Fine-tuning variants: ChnSentiCorp and MSRA NER (CMRC 2018 not run)"
             f"{'' if complete else ' (PARTIAL: cells below 3 seeds or missing are marked)'}", "",
             f"Base: `{meta['base']}` ({meta['base_desc']}); {meta['steps']} optimizer steps x batch 32 per run, "
             f"max_length {meta['max_length']}, on {meta['machine']}; {meta['date']}.",
             "Test metric mean ± sample std over seeds; ratio = mean / full fine-tune's mean (same run); "
             "trainable parameters as the optimizer saw them; wall = seconds per run (train + valid evals + test), "
             "2 CPU cores shared with other jobs, so wall times are indicative only.",
             "ChnSentiCorp: full train file (steps x 32 reviews seen), valid 400 of dev (seeded), full test (1,200). "
             "MSRA NER: full train file, its test file split once (seeded) into 500 valid / 1,000 test sentences; "
             "softmax tagger (no CRF), BIO. CMRC 2018 (task=qa): not run here.",
             f"{len([c for c in cells if 'error' not in c])} runs, {total / 60:.0f} min of wall time in all.", ""]
    for task, title in (("chnsenticorp", "ChnSentiCorp test accuracy"), ("msra", "MSRA NER test entity F1")):
        lines += [f"## {title}", "", "| variant | seeds | test | ratio vs full | valid | trainable params | lr | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for variant in VARIANTS:
            r = table[task].get(variant)
            if (task, variant) in NOT_APPLICABLE:
                lines.append(f"| {variant} | {NOT_APPLICABLE[task, variant]} | | | | | | |")
                continue
            if r is None:
                lines.append(f"| {variant} | 0 (not run) | | | | | | |")
                continue
            std = f" ± {r['std']:.4f}" if r["std"] is not None else ""
            ratio = f"{r['ratio_vs_full']:.3f}" if r.get("ratio_vs_full") else ""
            mark = "" if r["n"] >= 3 else " (partial)"
            lines.append(f"| {variant} | {r['n']}{mark} | {r['mean']:.4f}{std} | {ratio} | {r['valid_mean']:.4f} | "
                         f"{r['trainable']:,} of {r['total']:,} ({100 * r['trainable'] / r['total']:.1f}%) | "
                         f"{r['lr']:g} | {r['wall_s_mean']:.0f} |")
        full = table[task].get("full")
        if task == "msra" and full and full["mean"] < 0.3:
            lines += ["", f"At this budget the softmax tagger has barely started learning (full fine-tune F1 "
                      f"{full['mean']:.3f}; most entities are still missed), so these F1 figures rank little: "
                      "NER needs a larger budget than a CPU session gives (benchmarks/results/bench_finetune_shared: "
                      "250 steps, softmax F1 0.18, with a CRF 0.57)."]
        lines.append("")
    failed = [c for c in cells if "error" in c]
    if failed:
        lines += ["Failed cells (not in the means):", ""] + [
            f"- {c['task']} {c['variant']} seed {c['seed']}: {c['error'][:300]}" for c in failed] + [""]
    lines += ["Commands: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_variants.py` "
              f"{' '.join(meta['argv'])}; each cell's exact `workbench finetune` command is in the JSON (`cells`)."]
    return "\n".join(lines) + "\n", {"meta": meta, "complete": complete, "table": table, "cells": cells}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="runs/base/pretrain")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default="runs/finetune_variants")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: the variants table needs ChnSentiCorp and MSRA NER")
    import torch

    torch.set_num_threads(1)
    work = (REPO / args.work).resolve()
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "chnsenticorp_dev400.tsv").is_file():
        sample_lines(SHARED / "chnsenticorp" / "dev.tsv", data / "chnsenticorp_dev400.tsv", 400, seed=0, header=True)
    if not (data / "msra_test1000.txt").is_file():
        split_conll(SHARED / "msra_ner" / "msra_test.txt", data / "msra_valid500.txt", data / "msra_test1000.txt",
                    500, 1000, seed=0)
    base = str((REPO / args.base).resolve())
    cfg = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    meta = {"base": args.base, "base_desc": f"BERT {cfg['num_hidden_layers']} layers x {cfg['hidden_size']} hidden, "
                                            f"vocab {cfg['vocab_size']:,}; the project's best base (`make base`)",
            "steps": args.steps, "max_length": args.max_length, "argv": sys.argv[1:],
            "machine": f"{platform.platform()}, torch threads 1",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = []
    # Seeds outermost: every variant gets its first seed before any gets its third, so a run
    # stopped early still compares all variants.
    for task in args.tasks.split(","):
        for seed in seeds:
            for variant in args.variants.split(","):
                if (task, variant) in NOT_APPLICABLE:
                    continue
                cells.append(run_cell(task, variant, seed, base, work, data, args.steps, args.max_length))
                text, payload = summarise(cells, meta)
                RESULTS.mkdir(parents=True, exist_ok=True)
                (RESULTS / "finetune_variants.md").write_text(text, encoding="utf-8")
                (RESULTS / "finetune_variants.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
                c = cells[-1]
                print(f"{task} {variant} seed {seed}: " + (c["error"] if "error" in c else
                      f"test {c['metric']} {c['test']:.4f}, {c['trainable']:,} trainable, {c['wall_s']:.0f} s"), flush=True)
    print(summarise(cells, meta)[0])


if __name__ == "__main__":
    main()
