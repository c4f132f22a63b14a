"""GAIIC 2021 track 1 end to end: remap → continued MLM → multi-label fine-tuning → evaluate.

The real desensitised data in ../shared/data/gaiic2021_track1_desensitised/ (medical
reports, every character an integer id 0..857; 10,000 labelled reports with 0..n of 17
region labels, 3,000 unlabelled test-A reports). Every step is the real CLI:

  1. split the labelled reports 90/10 into train / valid by a hash of the report id;
  2. `remap` strategy=frequency onto the demo's general model (runs/demo_general/pretrain:
     4 x 256, People's Daily; bert-base-chinese is not reachable here): ids take the rows of
     Chinese characters of the same frequency rank, weights linked in; word discovery too;
  3. `prepare` all report texts (train, valid, test-A: unlabelled text for MLM, as the
     competition's solutions did) with `read.delimiter='|,|'`;
  4. `segment` with the remapped tokenizer and `pretrain` (continued MLM);
  5. `finetune task=multilabel` on train, best epoch on valid; `evaluate` on valid;
  6. `export`, loaded back with plain transformers `pipeline()`.

Baseline in the same run: the best constant prediction (every report gets the single most
frequent train label), scored on the same valid reports.

Run from the repository root after `make demo`:
    .venv/bin/python benchmarks/bench_gaiic.py [--mlm-steps 150] [--ft-steps 300]
Output: printed, and benchmarks/results/bench_gaiic.txt / .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections import Counter

import numpy as np
from _common import REPO, SHARED, continued_mlm, save_results
from _common import workbench as wb

from workbench.tasks.metrics import multilabel_metrics

GAIIC = SHARED / "gaiic2021_track1_desensitised"
BASE = REPO / "runs" / "demo_general" / "pretrain"
DELIM = "|,|"


def labels_of(line: str) -> set[str]:
    return set(line.rstrip("\n").split(DELIM)[2].split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlm-steps", type=int, default=150)
    ap.add_argument("--ft-steps", type=int, default=300)
    ap.add_argument("--work", default="benchmarks/work/gaiic")
    args = ap.parse_args()
    train_src = GAIIC / "track1_round1_train_20210222.csv"
    test_a = GAIIC / "track1_round1_testA_20210222.csv"
    if not train_src.is_file():
        sys.exit(f"{train_src} is absent (../shared/data)")
    if not (BASE / "manifest.json").is_file():
        sys.exit(f"{BASE} is missing: run `make demo` first")
    work = REPO / args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "commands.log"
    started = time.time()

    # 1. train / valid split by a hash of the report id (column 0).
    lines = [ln for ln in train_src.read_text(encoding="utf-8").splitlines(keepends=True) if ln.strip()]
    is_valid = [hashlib.blake2b(ln.split(DELIM)[0].encode(), digest_size=8).digest()[0] < 26 for ln in lines]  # ~10%
    train, valid = work / "train.csv", work / "valid.csv"
    train.write_text("".join(ln for ln, v in zip(lines, is_valid) if not v), encoding="utf-8")
    valid.write_text("".join(ln for ln, v in zip(lines, is_valid) if v), encoding="utf-8")
    n_train, n_valid = sum(not v for v in is_valid), sum(is_valid)

    # 2. remap onto the general model's vocabulary rows (frequency rank), weights linked in.
    mapped = work / "map"
    wb("remap", f"input=[{train},{valid},{test_a}]", "format=gaiic", "max_id=857", "strategy=frequency",
       f"target={BASE}", f"output={mapped}", log=log)
    remap_stats = json.loads((mapped / "stats.json").read_text(encoding="utf-8"))

    # 3-4. MLM corpus, segment, continued pretraining.
    read = ["read.format=csv", f"read.delimiter='{DELIM}'", "read.header=false", "read.text_field=1"]
    wb("prepare", f"input=[{train},{valid},{test_a}]", f"output={work / 'prepared'}", *read, "clean.min_chars=2",
       "split.valid_fraction=0.02", log=log)
    mlm = continued_mlm(work / "prepared", mapped, work, args.mlm_steps, "span", log=log)

    # 5. Multi-label fine-tuning, then evaluate on valid.
    data = ["data.format=tsv", f"data.delimiter='{DELIM}'", "data.header=false", "data.text_column=1",
            "data.label_column=2", "data.label_delimiter=' '"]
    wb("finetune", "task=multilabel", f"model={work / 'pretrain'}", f"train={train}", f"valid={valid}",
       f"output={work / 'finetune'}", *data, "max_length=128", f"max_steps={args.ft_steps}", "batch_size=32",
       "eval_batch_size=128", "lr=5e-4", "logging_steps=100", log=log)
    wb("evaluate", f"model={work / 'finetune'}", f"input={valid}", f"output={work / 'evaluate'}", log=log)
    # 6. Export, and load the export with plain transformers (the remapped tokenizer included).
    wb("export", f"input={work / 'finetune'}", f"output={work / 'export'}", log=log)
    from transformers import pipeline

    first_valid = valid.read_text(encoding="utf-8").splitlines()[0].split(DELIM)[1]
    scores = pipeline("text-classification", model=str(work / "export"), device="cpu", top_k=None)([first_valid])[0]
    export_check = (f"export loads in pipeline(): {len(scores)} label scores for a valid report, top "
                    f"{max(scores, key=lambda x: x['score'])['label']}")
    ev = json.loads((work / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    ev = ev.get("metrics", ev)

    # Baseline: every valid report gets the most frequent train label.
    counts = Counter(lab for ln, v in zip(lines, is_valid) if not v for lab in labels_of(ln))
    top = counts.most_common(1)[0][0]
    gold = [labels_of(ln) for ln, v in zip(lines, is_valid) if v]
    names = sorted({lab for g in gold for lab in g} | {top})
    y_true = np.array([[n in g for n in names] for g in gold], dtype=float)
    constant = np.tile([float(n == top) for n in names], (len(gold), 1))
    base_micro = multilabel_metrics(y_true, constant, names)["micro_f1"]

    micro, macro = ev["micro_f1"], ev["macro_f1"]
    res = {"train_reports": n_train, "valid_reports": n_valid, "test_a_reports": sum(1 for _ in open(test_a)),
           "remap_stats": remap_stats, "mlm": mlm, "valid_metrics": {k: v for k, v in ev.items() if k != "per_class"},
           "per_class": ev.get("per_class"), "baseline_most_frequent_label": top, "baseline_micro_f1": base_micro,
           "mlm_steps": args.mlm_steps, "ft_steps": args.ft_steps, "base_model": str(BASE.relative_to(REPO))}
    text = "\n".join([
        f"bench_gaiic: GAIIC 2021 track 1 (desensitised medical reports, 17 labels), {n_train:,} train / {n_valid:,} "
        f"valid reports (split by report id) + {res['test_a_reports']:,} unlabelled test-A reports for MLM",
        f"{os.cpu_count()} CPUs, {platform.platform()}, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}, "
        f"{time.time() - started:.0f} s",
        f"remap: frequency onto {res['base_model']} (4 x 256, People's Daily vocab) — {json.dumps(remap_stats)[:300]}",
        f"continued MLM: {args.mlm_steps} steps x 16 blocks of 128 (span masking): eval loss {mlm.get('eval_loss'):.3f}, "
        f"masked accuracy {mlm.get('eval_masked_accuracy'):.3f}",
        f"multi-label fine-tuning: {args.ft_steps} steps x 32, max_length 128, threshold 0.5",
        "",
        f"valid micro-F1 {micro:.4f}, macro-F1 {macro:.4f}, exact match {ev.get('exact_match', float('nan')):.4f}",
        f"baseline (every report gets label '{top}'): micro-F1 {base_micro:.4f}; ours / baseline = {micro / base_micro:.2f}x",
        export_check,
        "",
        "A CPU-budget run of a tiny model: it shows the desensitised path end to end on the real data; it is not "
        "a competition score (GAIIC ranked by an mlogloss-based metric)."])
    save_results("bench_gaiic", text, res)

if __name__ == "__main__":
    main()
