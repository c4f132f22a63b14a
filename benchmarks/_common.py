"""What the CLI-driven benchmarks share: running a `workbench` stage as a subprocess (as a
user would), logging it, and writing the results pair under benchmarks/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"


def workbench(*args, log: Path | None = None) -> str:
    """Run `python -m workbench ARGS` offline; append its output to `log`; exit on failure."""
    t = time.time()
    cmd = [sys.executable, "-m", "workbench", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if log is not None:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ workbench {' '.join(cmd[3:])}\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}\n"
                    f"[{time.time() - t:.0f} s, exit {proc.returncode}]\n\n")
    if proc.returncode:
        sys.exit(f"failed: workbench {' '.join(cmd[3:])}\n{proc.stderr[-3000:]}")
    return proc.stdout


def continued_mlm(prepared: Path, model: Path, out: Path, steps: int, strategy: str, log: Path | None = None) -> dict:
    """segment (rjieba, 128 tokens) + `steps` MLM steps with the benchmarks' shared budget;
    writes out/segmented and out/pretrain, returns the final pretrain metrics."""
    workbench("segment", f"input={prepared}", f"model={model}", f"output={out / 'segmented'}", "backend=rjieba",
              "max_seq_length=128", log=log)
    workbench("pretrain", f"input={out / 'segmented'}", f"model={model}", f"output={out / 'pretrain'}",
              f"max_steps={steps}", "batch_size=16", "lr=5e-4", f"eval_steps={steps}", f"save_steps={steps}",
              "logging_steps=25", f"masking.strategy={strategy}", "resume=false", log=log)
    return json.loads((out / "pretrain" / "metrics.json").read_text(encoding="utf-8"))["final"]


def save_results(name: str, text: str, data: dict) -> None:
    """Print `text`; write results/<name>.txt and results/<name>.json."""
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# The plain baseline prepare is compared with (run as `python -c PLAIN_PREPARE corpus out cache`):
# datasets.load_dataset("text") + exact dedup of the stripped lines (pandas) + a seeded hash
# split + save_to_disk; no cleaning, no near-duplicates. Prints documents in and kept.
PLAIN_PREPARE = r"""
import hashlib, sys, datasets
datasets.disable_progress_bars()
ds = datasets.load_dataset("text", data_files=sys.argv[1], split="train", cache_dir=sys.argv[3])
df = ds.to_pandas()
df["text"] = df["text"].str.strip()
df = df[df["text"] != ""].drop_duplicates("text")
def split(t):
    u = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8, key=b"0").digest(), "little") / 2**64
    return "valid" if u < 0.01 else "train"
df["split"] = df["text"].map(split)
datasets.DatasetDict({s: datasets.Dataset.from_pandas(g[["text"]], preserve_index=False)
                      for s, g in df.groupby("split")}).save_to_disk(sys.argv[2], max_shard_size="500MB")
print(len(ds), len(df))
"""
