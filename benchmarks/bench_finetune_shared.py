"""Fine-tuning scores on the real public datasets in ../shared/data, with the demo's small models.

What it runs, one `workbench finetune` per line, through the configs in configs/ with a CPU
budget (the configs themselves are set for bert-base-chinese on a GPU):
  - ChnSentiCorp sentiment (configs/chnsenticorp.yaml)        model: runs/demo/pretrain
  - SMP2020-EWECT Weibo emotion, 6 classes (weibo_emotion.yaml) model: runs/demo/pretrain
  - MSRA NER, BIOES, with a CRF and without (msra_ner.yaml)    model: runs/demo_general/pretrain
runs/demo/pretrain is the demo's 4-layer x 256 BERT (People's Daily, then product reviews);
runs/demo_general/pretrain the same before the review domain. `make demo` makes both; they
are tiny and briefly pretrained, so these scores are far below bert-base-chinese's (ChnSentiCorp
~95% accuracy, MSRA ~95 F1): they show the pipeline works on real data, not the state of the art.

Baseline measured in the same run: the majority class of train, scored on the same test set
(classification), and the tagger without a CRF vs with one (NER).

Run from the repository root after `make demo`:
    .venv/bin/python benchmarks/bench_finetune_shared.py [--steps 250] [--max-length 64]
Output: printed, and benchmarks/results/bench_finetune_shared.txt / .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from _common import REPO, SHARED, save_results, workbench

from workbench.tasks.data import read_text_records
from workbench.tasks.metrics import classification_metrics


def constant_baseline(train: Path, test: Path, text: str = "text_a") -> tuple[str, dict]:
    """The majority class of train predicted for every test record, scored like the model."""
    top = Counter(r.label for r in read_text_records(train, text=text)).most_common(1)[0][0]
    gold = [r.label for r in read_text_records(test, text=text)]
    names = sorted(set(gold) | {top})
    ids = {n: i for i, n in enumerate(names)}
    return top, classification_metrics([ids[g] for g in gold], [ids[top]] * len(gold), names)


def finetune(config: str, model: str, out: Path, *overrides: str) -> tuple[dict, float]:
    t = time.time()
    workbench("finetune", "--config", config, f"model={model}", f"output={out}", *overrides)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8")), time.time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=250, help="optimizer steps per run (batch 32)")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--work", default="benchmarks/work/finetune_shared")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit("../shared/data is absent")
    domain, general = REPO / "runs/demo/pretrain", REPO / "runs/demo_general/pretrain"
    for m in (domain, general):
        if not (m / "manifest.json").is_file():
            sys.exit(f"{m} is missing: run `make demo` first")
    size = json.loads((domain / "config.json").read_text())
    model_note = (f"BERT {size['num_hidden_layers']} layers x {size['hidden_size']} hidden x "
                  f"{size['num_attention_heads']} heads, vocab {size['vocab_size']:,} (the demo's, built from "
                  f"People's Daily + review tokens), pretrained 60 + 60 steps on CPU")
    work = REPO / args.work
    budget = [f"max_steps={args.steps}", f"max_length={args.max_length}", "seeds=[]", "batch_size=32",
              "eval_batch_size=128", "lr=5e-4", "early_stopping_patience=null", "logging_steps=50"]
    lines = [f"bench_finetune_shared: {args.steps} steps x batch 32, max_length {args.max_length}, lr 5e-4, one seed; "
             f"{os.cpu_count()} CPUs, {platform.platform()}, {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
             f"model: {model_note}", ""]
    res: dict = {"steps": args.steps, "max_length": args.max_length, "model": model_note, "runs": {}}

    # Classification: ChnSentiCorp (accuracy), Weibo emotion (macro F1).
    cs = SHARED / "chnsenticorp"
    top, base = constant_baseline(cs / "train.tsv", cs / "test.tsv")
    base_acc = base["accuracy"]
    m, secs = finetune("configs/chnsenticorp.yaml", str(domain), work / "chnsenticorp", *budget, "head_tokens=16")
    acc = m["test"]["accuracy"]
    res["runs"]["chnsenticorp"] = {"test_accuracy": acc, "valid_accuracy": m["valid"]["accuracy"],
                                   "majority_accuracy": base_acc, "seconds": secs}
    lines.append(f"ChnSentiCorp      test accuracy {acc:.4f} (valid {m['valid']['accuracy']:.4f}); majority class "
                 f"'{top}' {base_acc:.4f}; {acc / base_acc:.2f}x baseline; {secs:.0f} s")

    wb = SHARED / "smp2020_weibo_emotion"
    top, base = constant_baseline(wb / "train.tsv", wb / "test.tsv")
    base_f1 = base["macro_f1"]
    m, secs = finetune("configs/weibo_emotion.yaml", str(domain), work / "weibo_emotion", *budget)
    f1 = m["test"]["macro_f1"]
    res["runs"]["weibo_emotion"] = {"test_macro_f1": f1, "test_accuracy": m["test"]["accuracy"],
                                    "valid_macro_f1": m["valid"]["macro_f1"], "majority_macro_f1": base_f1,
                                    "seconds": secs}
    lines.append(f"Weibo emotion (6) test macro-F1 {f1:.4f}, accuracy {m['test']['accuracy']:.4f}; majority class "
                 f"'{top}' macro-F1 {base_f1:.4f}; {f1 / base_f1:.2f}x baseline; {secs:.0f} s")

    # NER: MSRA with and without a CRF (test file = valid file: MSRA has no dev split).
    ner = {}
    for crf in (False, True):
        name = "msra_crf" if crf else "msra_softmax"
        m, secs = finetune("configs/msra_ner.yaml", str(general), work / name, *budget, f"crf={str(crf).lower()}",
                           "window_overlap=16")
        v = m["valid"]
        ner[crf] = v["f1"]
        res["runs"][name] = {"test_f1": v["f1"], "precision": v["precision"], "recall": v["recall"],
                             "per_entity": v.get("per_entity") or v.get("per_type"), "seconds": secs,
                             "repairs": m.get("repairs")}
        lines.append(f"MSRA NER {'+ CRF ' if crf else 'softmax'}  entity F1 {v['f1']:.4f} (P {v['precision']:.4f}, "
                     f"R {v['recall']:.4f}); {secs:.0f} s")
    lines.append(f"  CRF / softmax entity F1: {ner[True] / ner[False]:.2f}x")
    lines += ["", "Scores of a tiny, briefly pretrained model on CPU: a pipeline check on real data, not the state of "
              "the art (bert-base-chinese reaches ~0.95 on ChnSentiCorp and MSRA with a GPU)."]
    save_results("bench_finetune_shared", "\n".join(lines), res)

if __name__ == "__main__":
    main()
