"""Inputs of configs/experiment/desensitised.yaml: a desensitised ChnSentiCorp and three
starting models for it, made with the real CLI (one secret key; labels kept):

  1. `desensitise` train/dev/test (characters → secret integer ids, key_seed 7 for a
     reproducible benchmark; a user's key stays secret);
  2. `remap` the ids of the TRAIN file onto the general base (runs/base/pretrain, `make
     base`): strategy=frequency (id rank → row of the same frequency rank in People's
     Daily) and strategy=random (seeded random rows) — the pretrained weights start from
     those rows; strategy=scratch + `init-model`: a new vocabulary of the ids and a random
     model of the base's shape (no transfer).

Then `workbench experiment --config configs/experiment/desensitised.yaml` continues each
one with the same budget on the desensitised train text and fine-tunes it (seeds 0, 1, 2),
comparing frequency and random against scratch.

    .venv/bin/python benchmarks/prepare_desensitised_experiment.py     # after make base; ~1 min
"""

from __future__ import annotations

import json
import sys

from _common import REPO, SHARED
from _common import workbench as wb

BASE = REPO / "runs" / "base" / "pretrain"
OUT = REPO / "runs" / "experiment_desensitised" / "inputs"


def main() -> None:
    if not (BASE / "manifest.json").is_file():
        sys.exit(f"{BASE} is missing: run `make base` first")
    src = SHARED / "chnsenticorp"
    if not src.is_dir():
        sys.exit(f"{src} is missing (../shared/data)")
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "commands.log"
    files = [src / f"{s}.tsv" for s in ("train", "dev", "test")]
    des = OUT / "desensitised"
    wb("desensitise", f"input=[{','.join(map(str, files))}]", f"output={des}", "read.text_field=text_a",
       "read.keep_fields=[label]", "key_seed=7", "offset=10", f"key_file={OUT / 'key.tsv'}", log=log)
    for strategy in ("frequency", "random", "scratch"):
        extra = [f"target={BASE}"] if strategy != "scratch" else []
        wb("remap", f"input=[{des / 'train.tsv'}]", "format=tsv", "text_column=text_a", f"strategy={strategy}",
           *extra, f"output={OUT / 'maps' / strategy}", "max_unk_rate=0.05", "discovery.enabled=false", log=log)
    shape = json.loads((BASE / "config.json").read_text(encoding="utf-8"))
    wb("init-model", f"tokenizer={OUT / 'maps' / 'scratch'}", f"layers={shape['num_hidden_layers']}",
       f"hidden={shape['hidden_size']}", f"heads={shape['num_attention_heads']}", f"output={OUT / 'scratch-model'}",
       log=log)
    print(f"inputs in {OUT}: desensitised/, maps/frequency, maps/random, scratch-model (commands: {log})")


if __name__ == "__main__":
    main()
