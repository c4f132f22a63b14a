"""Summarise `make base` (runs/base/pretrain) for the README: budget, wall time, loss curve,
held-out MLM loss at each evaluation. Writes benchmarks/results/base.{json,md} and base_loss.png.

    .venv/bin/python benchmarks/summarise_base.py        # after make base
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> None:
    out = REPO / "runs" / "base" / "pretrain"
    if not (out / "manifest.json").is_file():
        sys.exit(f"{out} is missing: run `make base` first")
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    hist = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["log_history"]
    seg = json.loads((REPO / "runs" / "base" / "segmented" / "manifest.json").read_text(encoding="utf-8"))
    prep = json.loads((REPO / "runs" / "base" / "prepared" / "manifest.json").read_text(encoding="utf-8"))
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    c, p = m["counts"], m["config"]
    by_step = {h["step"]: h for h in hist if "eval_loss" in h}  # the final evaluation repeats the last step
    evals = [{"step": s, "eval_loss": round(h["eval_loss"], 4), "perplexity": round(h["eval_perplexity"], 1)}
             for s, h in sorted(by_step.items())]
    data = {
        "model": {k: cfg[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")},
        "corpus": {"inputs": prep["config"]["input"], "documents": prep["counts"]["splits"],
                   "train_blocks": seg["counts"]["blocks"]["train"], "valid_blocks": seg["counts"]["blocks"]["valid"],
                   "tokens": seg["counts"]["tokens"]},
        "budget": {"steps": c["steps"], "batch_size": p["batch_size"], "max_seq_length": seg["config"]["max_seq_length"],
                   "token_slots": c["steps"] * p["batch_size"] * seg["config"]["max_seq_length"],
                   "tokens_seen": c["tokens_seen"], "epochs": c["epochs"], "lr": p["lr"],
                   "masking": p["masking"]["strategy"]},
        "wall_time_s": round(m["wall_time_s"]), "device": m.get("device"),
        "final": {k: m["metrics"][k] for k in ("eval_loss", "eval_perplexity", "eval_masked_accuracy")},
        "evaluations": evals,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "base.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.copyfile(out / "loss.png", RESULTS / "base_loss.png")
    b, f = data["budget"], data["final"]
    md = [f"# `make base`: the general base model ({data['model']['num_hidden_layers']} x {data['model']['hidden_size']}, "
          f"vocab {data['model']['vocab_size']:,})", "",
          f"Corpus: {', '.join(data['corpus']['inputs'])} ({data['corpus']['documents']['train']:,} train / "
          f"{data['corpus']['documents']['valid']:,} held-out documents, {data['corpus']['tokens']:,} tokens).",
          f"Budget: {b['steps']:,} steps x {b['batch_size']} blocks x {b['max_seq_length']} tokens = "
          f"{b['token_slots']:,} token slots ({b['tokens_seen']:,} real tokens, {b['epochs']} epochs), "
          f"{b['masking']} masking, lr {b['lr']}; {data['wall_time_s'] / 60:.0f} min on {data['device']}.",
          f"Held-out MLM loss {f['eval_loss']:.3f} (perplexity {f['eval_perplexity']:.0f}, masked-token accuracy "
          f"{100 * f['eval_masked_accuracy']:.1f}%).", "", "| step | held-out loss | perplexity |", "|---|---|---|"]
    md += [f"| {e['step']} | {e['eval_loss']:.3f} | {e['perplexity']:.0f} |" for e in evals]
    md += ["", "![loss curve](base_loss.png)", ""]
    (RESULTS / "base.md").write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
