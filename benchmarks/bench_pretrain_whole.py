"""Benchmark: a whole `workbench pretrain` process vs a whole plain-Trainer script, wall clock.

bench_pretrain.py times optimizer steps inside the training loop. What a user waits for is
the whole process: imports, loading the model and blocks, training, the evaluations, the
final save. Here both sides are separate processes started the same way and timed from
start to exit, on the same blocks, model and budget:

  ours      `python -m workbench pretrain` on a segment output (whole-word masking from the
            stored spans, the MLM head computed on the labelled positions only, evaluation
            on the masked positions only, the last evaluation not repeated, the final model
            + tokenizer + manifest written atomically);
  baseline  a plain script: `datasets.load_from_disk` of the same blocks' input_ids,
            BertForMaskedLM from the same base model, transformers' DataCollatorForLanguageModeling
            (token masking; its whole-word mode cannot find Chinese words), Trainer with
            transformers' defaults (fused AdamW where available), the same evaluation schedule
            (every `eval_steps` and at the end: HF evaluates the full vocabulary at every
            position), then trainer.save_model.

Same steps, batch, sequence length, learning rate, seed and number of threads; repeats are
interleaved (ours, baseline, ours, ...) and the medians compared, so a busy machine slows
both alike. A 2 x 128 BERT (CPU) on People's Daily text, with the Google bert-base-chinese
vocabulary when ../shared is present (its 21,128-row MLM head is where the dense head costs).

    .venv/bin/python benchmarks/bench_pretrain_whole.py [--steps 60 --eval-steps 20 --repeats 3]
Output: printed, and benchmarks/results/bench_pretrain_whole.{txt,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_VOCAB = REPO.parent / "shared" / "data" / "vocab" / "bert_base_chinese_vocab.txt"
RESULTS = REPO / "benchmarks" / "results"

BASELINE = r'''
import sys, datasets, torch
from transformers import (AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer,
                          TrainingArguments)
blocks, model_dir, out, steps, eval_steps, batch, lr, seed = sys.argv[1:9]
dd = datasets.load_from_disk(blocks)
train = dd["train"].select_columns(["input_ids"])
valid = dd["valid"].select_columns(["input_ids"])
tok = AutoTokenizer.from_pretrained(model_dir)
model = BertForMaskedLM.from_pretrained(model_dir)
args = TrainingArguments(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(batch),
                         per_device_eval_batch_size=int(batch), learning_rate=float(lr), seed=int(seed),
                         eval_strategy="steps", eval_steps=int(eval_steps), save_strategy="no",
                         logging_steps=int(eval_steps), report_to=[], use_cpu=True, disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
                  data_collator=DataCollatorForLanguageModeling(tok, mlm_probability=0.15))
trainer.train()
metrics = trainer.evaluate()
trainer.save_model(out + "/final")
print("BASELINE_EVAL_LOSS", metrics["eval_loss"])
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lines", type=int, default=4000, help="People's Daily lines for the blocks")
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_pretrain_whole"))
    args = ap.parse_args()

    from workbench.config import load_stage_config
    from workbench.masking.examples import peoples_daily_lines
    from workbench.stages import init_model, prepare, segment, vocab

    work = Path(args.work)
    run = work / "run"
    threads = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))
    if not (run / "segmented" / "manifest.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "peoples_daily.txt"
        corpus.write_text("\n".join("".join(w for w, _ in para) for para in peoples_daily_lines(args.lines)),
                          encoding="utf-8")
        cfg = lambda stage, *kv: load_stage_config(stage, None, [f"run={run}", *kv])  # noqa: E731
        prepare.run(cfg("prepare", f"input={corpus}", "split.valid_fraction=0.05", "split.test_fraction=0",
                        "workers=1"))
        if SHARED_VOCAB.exists():
            tokenizer = str(SHARED_VOCAB)
        else:
            vocab.run(cfg("vocab"))
            tokenizer = str(run / "vocab")
        init_model.run(cfg("init-model", f"tokenizer={tokenizer}", "layers=2", "hidden=128", "heads=2"))
        segment.run(cfg("segment", f"model={run / 'base-model'}", f"max_seq_length={args.seq}"))
    vocab_note = "Google bert-base-chinese vocab" if SHARED_VOCAB.exists() else "a vocab built from the text"
    seg_manifest = json.loads((run / "segmented" / "manifest.json").read_text())
    blocks_dir = run / "segmented" / "dataset"
    if not blocks_dir.exists():
        sys.exit(f"bench_pretrain_whole: {blocks_dir} missing (segment layout changed?)")
    script = work / "baseline_trainer.py"
    script.write_text(BASELINE, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads}

    def ours(i: int) -> float:
        out = work / f"ours-{i}"
        cmd = [sys.executable, "-m", "workbench", "pretrain", f"run={run}", f"model={run / 'base-model'}",
               f"output={out}", f"max_steps={args.steps}", f"eval_steps={args.eval_steps}",
               f"save_steps={args.steps}", f"logging_steps={args.eval_steps}", f"batch_size={args.batch}",
               "lr=1e-4", "seed=0", "resume=false", "masking.strategy=whole_word"]
        return _timed(cmd, env)

    def baseline(i: int) -> float:
        out = work / f"baseline-{i}"
        return _timed([sys.executable, str(script), str(blocks_dir), str(run / "base-model"), str(out),
                       str(args.steps), str(args.eval_steps), str(args.batch), "1e-4", "0"], env)

    times: dict[str, list[float]] = {"ours": [], "baseline": []}
    for i in range(args.repeats):
        for name, fn in (("ours", ours), ("baseline", baseline)):
            t = fn(i)
            times[name].append(t)
            print(f"  repeat {i + 1}/{args.repeats} {name}: {t:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["baseline"] / med["ours"]
    counts = seg_manifest.get("counts", {})
    lines = [
        f"bench_pretrain_whole on CPU: {os.cpu_count()} CPUs, OMP_NUM_THREADS={threads}, {platform.python_version()}, "
        f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"model 2 x 128 BERT, {vocab_note}; {args.steps} steps x batch {args.batch} x seq {args.seq}, evaluation "
        f"every {args.eval_steps} steps and at the end; blocks: {counts.get('blocks', {}).get('train', '?')} train / "
        f"{counts.get('blocks', {}).get('valid', '?')} valid from {args.lines} People's Daily lines",
        "",
        f"{'setup':<10} {'median s':>9}   runs (s, interleaved)",
        *(f"{k:<10} {med[k]:9.1f}   {', '.join(f'{t:.1f}' for t in v)}" for k, v in times.items()),
        "",
        f"whole process: ours is {ratio:.2f}x the plain Trainer script (baseline median / ours median)",
    ]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_pretrain_whole.txt").write_text(text + "\n", encoding="utf-8")
    (RESULTS / "bench_pretrain_whole.json").write_text(json.dumps(
        {"machine": platform.platform(), "cpus": os.cpu_count(), "omp_threads": threads, "steps": args.steps,
         "eval_steps": args.eval_steps, "batch": args.batch, "seq": args.seq, "vocab": vocab_note,
         "seconds": times, "median_s": med, "speedup": ratio}, indent=2) + "\n")


def _timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench_pretrain_whole: {' '.join(cmd[:4])} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return elapsed


if __name__ == "__main__":
    main()
