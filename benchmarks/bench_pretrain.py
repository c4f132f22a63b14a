"""Benchmark: pretraining throughput of the workbench's Trainer setup vs a plain HF baseline.

What it measures, in one run and one process:
  - ours: transformers ``Trainer`` fed by ``MaskingCollator`` (whole-word masking from stored
    jieba spans, the pretrain stage's collator), on packed blocks;
  - baseline: plain ``Trainer`` + transformers' token-level ``DataCollatorForLanguageModeling``
    on the same blocks' input_ids (what users run without the workbench).
Same model, batch, sequence length, optimizer and step count; the first steps (allocation,
warm-up) are excluded by timing steps `warmup+1 .. steps` through a callback. Printed:
sequences/s, tokens/s, achieved TFLOP/s and MFU when a peak is known (a GPU's dense bf16
peak): FLOPs per token = 6 x non-embedding parameters outside the MLM head + 6 x head
parameters x the share of positions the head is computed at (1 dense, 0.15 sparse) +
12 x layers x hidden x seq for attention; and ours/baseline.

Setups, each timed the same way:
  baseline      plain Trainer + DataCollatorForLanguageModeling (token masking), transformers'
                own defaults (fused AdamW), dense MLM head
  ours-dense    the workbench collator (whole-word masking from stored spans), dense MLM head
  ours          the pretrain stage's defaults: workbench collator + MLM head on the labelled
                positions only (workbench.modeling, `sparse_mlm_head: true`); the same
                optimizer as the baseline (TrainingArguments' default)
Levers not applied (yet): unpadding (the blocks are packed full, so there is little padding
to remove), flash attention beyond PyTorch SDPA (transformers' default for BERT), torch.compile.

Shapes: on CPU a tiny BERT (2 layers x 128 hidden) at seq 128 so it always runs; with a CUDA
GPU the bert-base-chinese shape (12 x 768, vocab 21,128) at seq 128 and 512 in bf16.
A sparse head is credited only with the head work it does. Without ../shared the CPU run
builds a small vocabulary and says so; on a GPU (or with --require-google-vocab) it refuses.

Run from the repository root:
    .venv/bin/python benchmarks/bench_pretrain.py [--steps 30]
Output: printed, and benchmarks/results/bench_pretrain_<cpu|gpu>.txt / .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_VOCAB = REPO.parent / "shared" / "data" / "vocab" / "bert_base_chinese_vocab.txt"
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--require-google-vocab", action="store_true", help="refuse to run with a built vocab")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak for MFU (default: looked up from the device name)")
    args = ap.parse_args()

    import datasets
    import torch
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from workbench.config import MaskingConfig
    from workbench.masking.collator import MaskingCollator
    from workbench.masking.examples import make_blocks, peoples_daily_lines, write_char_vocab
    from workbench.modeling import set_sparse_mlm_head
    from workbench.vocab.tokenizer import load_tokenizer

    gpu = torch.cuda.is_available()
    lines = peoples_daily_lines(6000)
    if SHARED_VOCAB.exists():
        vocab_file, vocab_note = SHARED_VOCAB, "Google bert-base-chinese vocab"
    elif gpu or args.require_google_vocab:
        # A smaller vocabulary shrinks the MLM head, the largest matmul: the figures would
        # not be those of bert-base-chinese. Refuse rather than report them.
        sys.exit(f"bench_pretrain: {SHARED_VOCAB} is missing; the bert-base-chinese shape needs its 21,128-token "
                 "vocab (../shared/data/vocab). Nothing measured.")
    else:
        vocab_file, vocab_note = write_char_vocab(lines, Path(tempfile.mkdtemp()) / "vocab.txt"), \
            "built char vocab (no ../shared: CPU tiny shape only)"
    tok = load_tokenizer(str(vocab_file), needed_by="bench_pretrain")
    shapes = [(12, 768, 12, 128), (12, 768, 12, 512)] if gpu else [(2, 128, 2, 128)]
    out_lines = [f"bench_pretrain on {'GPU ' + torch.cuda.get_device_name(0) if gpu else 'CPU'}: "
                 f"{os.cpu_count()} CPUs, torch {torch.__version__}, {vocab_note} ({len(tok):,} tokens), "
                 f"batch {args.batch}, {args.steps} steps (first {args.warmup} not timed), "
                 f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}", ""]
    results = []
    for layers, hidden, heads, seq in shapes:
        blocks = make_blocks(lines, tok, block_size=seq)
        rows = [{k: b[k] for k in ("input_ids", "word_ids", "entity_ids", "pair_split")} for b in blocks]
        while len(rows) < args.batch * (args.steps + 1):
            rows += rows
        ds = datasets.Dataset.from_list(rows[: args.batch * (args.steps + 1)])
        for name in ("baseline", "ours-dense", "ours"):
            torch.manual_seed(0)
            model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                               num_attention_heads=heads, intermediate_size=4 * hidden,
                                               max_position_embeddings=max(512, seq)))
            model.accepts_loss_kwargs = False
            n_params = sum(p.numel() for p in model.parameters())
            if name.startswith("ours"):
                collator, data = MaskingCollator(MaskingConfig(strategy="whole_word"), tok, seed=0), ds
                set_sparse_mlm_head(model, name == "ours")
            else:  # transformers' own defaults. Its whole_word_mask=True needs the tokenizer's
                # offset_mapping per example (it finds words by gaps between offsets, which Chinese
                # text does not have: whole clauses get masked), so token masking is the baseline.
                collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
                data = ds.select_columns(["input_ids"])
            timer = _StepTimer(args.warmup)
            targs = TrainingArguments(
                output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch, max_steps=args.steps,
                learning_rate=1e-4, report_to=[], save_strategy="no", logging_strategy="no",
                remove_unused_columns=False, bf16=gpu, use_cpu=not gpu, dataloader_num_workers=0, seed=0,
                disable_tqdm=True,  # the optimizer: TrainingArguments' default (fused AdamW) for every setup
            )
            Trainer(model=model, args=targs, train_dataset=data, data_collator=collator,
                    callbacks=[timer]).train()
            timed_steps = args.steps - args.warmup
            seqs = timed_steps * args.batch / timer.elapsed
            toks = seqs * seq
            # FLOPs per token (training = 3 x forward): 6 x the encoder's and pooler's parameters,
            # 6 x the MLM head's on the positions it is computed at (all for a dense head, the
            # ~15% labelled for the sparse one), plus attention's 12 x layers x hidden x seq
            # (QK^T and AV, forward + backward). Embedding lookups are not matmuls: not counted.
            head = sum(p.numel() for n_, p in model.named_parameters() if n_.startswith("cls."))
            emb = sum(p.numel() for n_, p in model.named_parameters() if ".embeddings." in n_)
            head_share = 0.15 if name == "ours" else 1.0
            flops_per_token = (6 * (n_params - head - emb) + 6 * head * head_share + 12 * layers * hidden * seq)
            tflops = flops_per_token * toks / 1e12
            peak = args.peak_tflops or (_gpu_peak(torch.cuda.get_device_name(0)) if gpu else None)
            mfu = tflops / peak if peak else None
            results.append({"shape": f"{layers}x{hidden}, seq {seq}", "tool": name, "seq_per_s": seqs,
                            "tokens_per_s": toks, "tflops": tflops, "mfu": mfu, "params": n_params})
    out_lines.append(f"{'shape':<22} {'setup':<10} {'seq/s':>9} {'tokens/s':>11} {'TFLOP/s':>9} {'MFU':>7}")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        out_lines.append(f"{r['shape']:<22} {r['tool']:<10} {r['seq_per_s']:9.1f} {r['tokens_per_s']:11,.0f} "
                         f"{r['tflops']:9.4f} {mfu:>7}")
    out_lines.append("")
    out_lines.append("key figures")
    for shape in dict.fromkeys(r["shape"] for r in results):
        ours = next(r for r in results if r["shape"] == shape and r["tool"] == "ours")
        dense = next(r for r in results if r["shape"] == shape and r["tool"] == "ours-dense")
        base = next(r for r in results if r["shape"] == shape and r["tool"] == "baseline")
        out_lines.append(f"  {shape}: ours / baseline = {ours['seq_per_s'] / base['seq_per_s']:.2f}x sequences/s; "
                         f"ours-dense / baseline = {dense['seq_per_s'] / base['seq_per_s']:.2f}x "
                         f"(collator alone), ours / ours-dense = {ours['seq_per_s'] / dense['seq_per_s']:.2f}x "
                         f"(sparse MLM head)")
    if not gpu:
        out_lines.append("  (CPU, tiny shape: MFU needs a GPU peak; rerun on a GPU for the bert-base shape)")
    text = "\n".join(out_lines)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if gpu else "cpu"
    (RESULTS / f"bench_pretrain_{tag}.txt").write_text(text + "\n", encoding="utf-8")
    (RESULTS / f"bench_pretrain_{tag}.json").write_text(json.dumps({"machine": platform.platform(),
                                                                     "results": results}, indent=2) + "\n")


def _gpu_peak(name: str) -> float | None:
    """Dense bf16 tensor-core peak (TFLOP/s) of known GPUs, from the vendors' data sheets."""
    table = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}
    return next((v for k, v in table.items() if k in name), None)


class _StepTimer:
    """A TrainerCallback (duck-typed) timing optimizer steps after `warmup` steps."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.elapsed = warmup, None, None

    def __getattr__(self, name):  # every other callback event: do nothing
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        elif state.global_step == args.max_steps and self.start is not None:
            self.elapsed = time.perf_counter() - self.start


if __name__ == "__main__":
    main()
