"""Serving exports of a ChnSentiCorp classifier: PyTorch fp32 vs ONNX fp32 vs ONNX int8 vs fp16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serving.py            # ~15 min on 1 thread

The classifiers are the experiment's `none` arm (runs/experiment_reviews/finetune/none-s<seed>):
a 4-layer x 256 BERT (Google's Chinese vocabulary) continued-pretrained on news by
`make base` (runs/base/pretrain), fine-tuned on a 9,600-review subsample of ChnSentiCorp's
train split, max_length 128, one model per seed. For each seed the real stage runs, as a
user would: `workbench export format=int8` (model.onnx with its parity check, then
model_quantized.onnx) and `workbench export format=fp16`; their serving.json give parity and
the test-set accuracy of each engine (int8 and ONNX fp32 on the 1,200 test reviews; fp16 on
the first --fp16-records of them, as fp16 runs ~6x slower than fp32 on this CPU). Accuracy
deltas are per seed against the same seed's PyTorch fp32 model, then mean ± sample std.

Latency (seed 0's models): batch 1 and batch 32 of real test reviews (padded to the longest
in the batch, max 128 tokens), --rounds interleaved rounds (each round runs every engine
once, rotating the order), medians and IQR in ms; one intra-op thread for torch and
onnxruntime alike (the machine is 2 cores shared with other jobs). Speed-up = PyTorch fp32
median / engine median, measured in the same run.

Writes benchmarks/results/serving.json and serving.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, workbench  # noqa: E402

WORK = REPO / "benchmarks" / "work" / "serving"
FINETUNE = REPO / "runs" / "experiment_reviews" / "finetune"


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--fp16-records", type=int, default=400)
    ap.add_argument("--render", action="store_true", help="only rewrite serving.md from serving.json")
    args = ap.parse_args()
    if args.render:
        md = _markdown(json.loads((RESULTS / "serving.json").read_text(encoding="utf-8")))
        (RESULTS / "serving.md").write_text(md, encoding="utf-8")
        print(md)
        return

    import torch

    torch.set_num_threads(1)
    dirs = [FINETUNE / f"none-s{s}" for s in range(args.seeds)]
    missing = [str(d) for d in dirs if not (d / "manifest.json").is_file()]
    if missing:
        sys.exit(f"missing fine-tuned classifiers: {', '.join(missing)}\n"
                 "  make them with `make base` then `workbench experiment --config configs/experiment_reviews.yaml` "
                 "(its `none` arm), or pass --seeds N for the ones there are")
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "log.txt"
    log.write_text("", encoding="utf-8")
    started = time.time()
    per_seed = []
    for seed, ft in enumerate(dirs):
        t = time.time()
        workbench("export", f"input={ft}", f"output={WORK / f'int8-s{seed}'}", "format=int8", "latency_rounds=0",
                  log=log)
        workbench("export", f"input={ft}", f"output={WORK / f'fp16-s{seed}'}", "format=fp16", "latency_rounds=0",
                  f"eval_max_records={args.fp16_records}", log=log)
        q = json.loads((WORK / f"int8-s{seed}" / "serving.json").read_text(encoding="utf-8"))
        h = json.loads((WORK / f"fp16-s{seed}" / "serving.json").read_text(encoding="utf-8"))
        row = {"seed": seed, "finetune": str(ft.relative_to(REPO)), "test_records": q["eval"]["records"],
               "parity_max_abs_logit_diff": q["parity"]["max_abs_logit_diff"], "parity_inputs": q["parity"]["inputs"],
               "int8_max_abs_logit_diff": q["int8"]["max_abs_logit_diff"],
               "accuracy": {"pytorch_fp32": q["pytorch_fp32"]["accuracy"], "onnx_fp32": q["onnx_fp32"]["accuracy"],
                            "onnx_int8": q["onnx_int8"]["accuracy"]},
               "delta": {"onnx_fp32": q["onnx_fp32"]["delta"], "onnx_int8": q["onnx_int8"]["delta"]},
               "fp16": {"records": h["eval"]["records"], "pytorch_fp32": h["pytorch_fp32"]["accuracy"],
                        "pytorch_fp16": h["pytorch_fp16"]["accuracy"], "delta": h["pytorch_fp16"]["delta"]},
               "size_mb": {"pytorch_fp32": q["pytorch_fp32"]["size_mb"], "onnx_fp32": q["onnx_fp32"]["size_mb"],
                           "onnx_int8": q["onnx_int8"]["size_mb"], "pytorch_fp16": h["pytorch_fp16"]["size_mb"]},
               "export_s": round(time.time() - t, 1)}
        per_seed.append(row)
        print(f"seed {seed}: parity {row['parity_max_abs_logit_diff']:.2e}; accuracy fp32 "
              f"{row['accuracy']['pytorch_fp32']:.4f}, onnx {row['accuracy']['onnx_fp32']:.4f}, int8 "
              f"{row['accuracy']['onnx_int8']:.4f}; fp16 delta {row['fp16']['delta']:+.4f} "
              f"({row['export_s']:.0f} s)", flush=True)

    # Latency: seed 0's four engines, interleaved, same run.
    import types

    from workbench.config import TaskDataConfig
    from workbench.serving import held_out_batches, latency, onnx_task_model
    from workbench.stages.finetune import read_records
    from workbench.tasks.heads import load_task_model

    model, _, tok, spec = load_task_model(dirs[0], needed_by="bench")
    half, _, _, _ = load_task_model(WORK / "fp16-s0", needed_by="bench")
    half = half.to(torch.float16).eval()
    onnx_fp32 = onnx_task_model(WORK / "int8-s0" / "model.onnx", threads=1)
    onnx_int8 = onnx_task_model(WORK / "int8-s0" / "model_quantized.onnx", threads=1)
    test = next(e["path"] for e in json.loads((dirs[0] / "manifest.json").read_text())["inputs"] if e["role"] == "test")
    data = TaskDataConfig(**spec.data)
    records, _ = read_records(test, types.SimpleNamespace(task=spec.task, data=data), data)
    texts = [r.text for r in records]
    batches = {f"batch_{n}": held_out_batches(tok, spec, texts, None, batch_size=n, limit=n)[0] for n in (1, 32)}
    engines = {"pytorch_fp32": lambda b: model(**b), "onnx_fp32": lambda b: onnx_fp32(**b),
               "onnx_int8": lambda b: onnx_int8(**b), "pytorch_fp16": lambda b: half(**b)}
    lat = latency(engines, batches, rounds=args.rounds)
    shapes = {k: list(v["input_ids"].shape) for k, v in batches.items()}

    names = ["pytorch_fp32", "onnx_fp32", "onnx_int8", "pytorch_fp16"]
    summary = {}
    for n in names:
        acc = [r["accuracy"][n] for r in per_seed] if n != "pytorch_fp16" else [r["fp16"]["pytorch_fp16"] for r in per_seed]
        delta = ([r["delta"][n] for r in per_seed] if n in ("onnx_fp32", "onnx_int8") else
                 [r["fp16"]["delta"] for r in per_seed] if n == "pytorch_fp16" else [0.0] * len(per_seed))
        summary[n] = {"accuracy_mean_std": mean_std(acc), "delta_mean_std": mean_std(delta),
                      "size_mb": per_seed[0]["size_mb"][n],
                      **{f"latency_ms_{b}": lat[b][n] for b in batches},
                      **{f"latency_iqr_ms_{b}": lat[b + "_iqr"][n] for b in batches},
                      **{f"speedup_{b}": lat[b]["pytorch_fp32"] / lat[b][n] for b in batches}}
    parity = [r["parity_max_abs_logit_diff"] for r in per_seed]
    result = {"benchmark": "bench_serving", "seeds": args.seeds, "rounds": args.rounds, "threads": 1,
              "fp16_records": args.fp16_records, "latency_batch_shapes": shapes, "per_seed": per_seed,
              "summary": summary, "parity_max_over_seeds": max(parity), "wall_s": round(time.time() - started, 1),
              "versions": {"torch": torch.__version__, **_versions()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = _markdown(result)
    (RESULTS / "serving.md").write_text(md, encoding="utf-8")
    print(md)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {"transformers": transformers.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _markdown(r: dict) -> str:
    s = r["summary"]
    n = r["seeds"]
    recs = r["per_seed"][0]["test_records"]
    label = {"pytorch_fp32": "PyTorch fp32 (format=hf)", "onnx_fp32": "ONNX fp32 (format=onnx)",
             "onnx_int8": "ONNX int8 (format=int8)", "pytorch_fp16": "PyTorch fp16 (format=fp16)"}
    lines = ["# Serving exports: ChnSentiCorp classifier (4 x 256 BERT from runs/base/pretrain)", "",
             f"Made by `benchmarks/bench_serving.py` in {r['wall_s'] / 60:.1f} min: {n} fine-tuned classifiers "
             f"(runs/experiment_reviews/finetune/none-s0..{n - 1}: 9,600 train reviews, max_length 128), each exported "
             "with `workbench export format=int8` and `format=fp16`. Accuracy on the ChnSentiCorp test split "
             f"({recs:,} reviews; fp16: the first {r['fp16_records']}), mean ± sample std over the {n} seeds; deltas "
             "are per seed against the same model in PyTorch fp32. Latency: seed 0's models, CPU, 1 thread, "
             f"median (IQR) of {r['rounds']} interleaved rounds on real test reviews "
             f"(batch 1: {r['latency_batch_shapes']['batch_1'][1]} tokens; batch 32: padded to "
             f"{r['latency_batch_shapes']['batch_32'][1]}).", "",
             f"ONNX parity (max |logit difference| from PyTorch, {r['per_seed'][0]['parity_inputs']} held-out inputs "
             f"per seed): worst over seeds {r['parity_max_over_seeds']:.2e} (tolerance 1e-4); int8 vs fp32 logits: "
             f"up to {max(x['int8_max_abs_logit_diff'] for x in r['per_seed']):.3f}.", "",
             "| engine | file MB | test accuracy | delta vs fp32 | batch 1 ms | speed-up | batch 32 ms | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    for k, v in s.items():
        a, sd = v["accuracy_mean_std"]
        d, dsd = v["delta_mean_std"]
        subset = f" (first {r['fp16_records']})" if k == "pytorch_fp16" else ""
        lines.append(f"| {label[k]} | {v['size_mb']:.1f} | {a:.4f} ± {sd:.4f}{subset} | "
                     + ("" if k == "pytorch_fp32" else f"{d:+.4f} ± {dsd:.4f}") + " | "
                     f"{v['latency_ms_batch_1']:.1f} ({v['latency_iqr_ms_batch_1']:.1f}) | {v['speedup_batch_1']:.2f}x | "
                     f"{v['latency_ms_batch_32']:.0f} ({v['latency_iqr_ms_batch_32']:.0f}) | {v['speedup_batch_32']:.2f}x |")
    lines += ["", "Per seed (accuracy fp32 / ONNX / int8; fp16 delta on its subset):", ""]
    for x in r["per_seed"]:
        a = x["accuracy"]
        lines.append(f"- seed {x['seed']}: {a['pytorch_fp32']:.4f} / {a['onnx_fp32']:.4f} / {a['onnx_int8']:.4f}; "
                     f"fp16 {x['fp16']['delta']:+.4f}; parity {x['parity_max_abs_logit_diff']:.1e}")
    lines += ["", "fp16 on a CPU is slower than fp32 (no fast fp16 matmul here): it halves the file and is meant for "
              "GPUs; rounding the weights to float16 left the accuracy on the first 400 test reviews unchanged for every seed (delta 0.0000). Versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
