"""`make gpu-check`: what the workbench does on a GPU, measured, in one command (<= 8 minutes).

    make gpu-check            # or: .venv/bin/python benchmarks/gpu_check.py

Without a CUDA GPU it says so and exits 0 (nothing to measure). With one:
  1. the GPU-marked tests (`pytest -m gpu`);
  2. benchmarks/bench_pretrain.py at the bert-base-chinese shape (12 x 768, Google vocab from
     ../shared, refused if absent), seq 128 and 512, bf16: the workbench's pretrain setup
     against a plain Trainer with transformers' defaults, in the same run, with MFU by the
     convention stated there (head counted as computed, attention included);
and writes benchmarks/results/gpu_check_<device>.json with both results, the device, the
driver and torch/CUDA versions. Goal on an H100/H200: >= 50% MFU at seq 128 and >= 2x the
plain baseline; the JSON says whether it was met.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to measure.")
        return 0
    device = torch.cuda.get_device_name(0)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", device).strip("_").lower()
    out = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True).stdout.strip()
    except OSError:
        out["driver"] = None
    t = time.time()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"], cwd=REPO,
                           capture_output=True, text=True)
    out["gpu_tests"] = {"rc": tests.returncode, "summary": (tests.stdout.strip().splitlines() or [""])[-1],
                        "wall_s": round(time.time() - t, 1)}
    print(f"gpu-check: GPU tests: {out['gpu_tests']['summary']}", flush=True)
    t = time.time()
    bench = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_pretrain.py"), "--steps", "40",
                            "--warmup", "10", "--require-google-vocab"], cwd=REPO, capture_output=True, text=True)
    print(bench.stdout[-4000:], bench.stderr[-2000:] if bench.returncode else "", flush=True)
    out["bench_pretrain"] = {"rc": bench.returncode, "wall_s": round(time.time() - t, 1)}
    gpu_json = RESULTS / "bench_pretrain_gpu.json"
    if bench.returncode == 0 and gpu_json.is_file():
        rows = json.loads(gpu_json.read_text())["results"]
        out["bench_pretrain"]["results"] = rows
        ours = {r["shape"]: r for r in rows if r["tool"] == "ours"}
        base = {r["shape"]: r for r in rows if r["tool"] == "baseline"}
        out["goals"] = {shape: {"mfu": r["mfu"], "mfu_goal_50pct": (r["mfu"] or 0) >= 0.5,
                                "vs_baseline": r["seq_per_s"] / base[shape]["seq_per_s"],
                                "vs_baseline_goal_2x": r["seq_per_s"] / base[shape]["seq_per_s"] >= 2.0}
                        for shape, r in ours.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"gpu_check_{tag}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"gpu-check: written {path}")
    return 0 if tests.returncode in (0, 5) and bench.returncode == 0 else 1  # 5: no GPU-marked test collected


if __name__ == "__main__":
    sys.exit(main())
