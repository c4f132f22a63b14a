"""Distillation on ChnSentiCorp: a 4-layer teacher → a 2-layer student, with and without soft targets.

What it runs, each a `workbench` command as a user would (cached under --work, so a killed
run resumes where it stopped; a finished step is reused when its settings are unchanged):
  1. a seeded random subsample of ../shared/data/chnsenticorp: --train train
     reviews, --valid dev reviews (model selection), the whole test split (1,200);
  2. the teacher: `workbench finetune` of runs/base/pretrain (`make base`: 4 layers x 256,
     Google's bert-base-chinese vocabulary, continued MLM on general text), one seed;
  3. per seed (--seeds), three 2-layer students of the same size, same data, same budget:
       distil      `workbench distil` alpha=--alpha T=--temperature: teacher layers 1 and 3 copied,
                   soft targets + hard labels;
       no-teacher  the same command with alpha=0: the same student (teacher layers 1, 3 copied),
                   hard labels only: the effect of the soft targets alone;
       base-2L     `workbench finetune` of the PRETRAINED base cut to its layers 1 and 3 (no
                   fine-tuned teacher anywhere): what a user gets without distillation;
  4. checkpoint averaging: the teacher's run repeated with keep_snapshots=5 (valid every 21
     steps), `workbench average` of its last 5 snapshots vs the last one;
  5. teacher vs student accuracy, parameters, bytes on disk, CPU latency at batch 1 and 32:
     measured inside each distil run (medians of interleaved repeats, 1 thread), reported as
     the median over the seeds' runs, with the teacher/student speed-up measured in the same run.

Accuracy: mean ± sample std over seeds, and the paired difference distil − no-teacher per seed.
Run from the repository root (after `make base`):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distil.py
Output: printed, and benchmarks/results/distil.md / distil.json (aggregate figures only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

from _common import REPO, SHARED, RESULTS, workbench

DATA = SHARED / "chnsenticorp"


def subsample(src: Path, dst: Path, n: int | None, seed: int) -> int:
    """The header and n seeded random lines of a TSV (all when n is None), written to dst."""
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(header + "".join(rows), encoding="utf-8")
    return len(rows)


def done(out: Path, stamp: list[str]) -> bool:
    """Whether `out` is a finished output of exactly these settings (and inputs)."""
    path = out / "bench_args.json"
    return (out / "manifest.json").is_file() and path.is_file() and json.loads(path.read_text()) == stamp


def step(stage: str, out: Path, args: list[str], log: Path, upstream: Path | None = None) -> dict:
    """`workbench stage args output=out` unless done; `upstream`: an output this one is made
    from (its manifest seal is part of the stamp, so a new teacher redoes the students)."""
    stamp = [*args, json.loads((upstream / "manifest.json").read_text())["seal"]] if upstream else list(args)
    if not done(out, stamp):
        t = time.time()
        workbench(stage, *args, f"output={out}", log=log)
        print(f"  {stage} → {out} ({time.time() - t:.0f} s)", flush=True)
        (out / "bench_args.json").write_text(json.dumps(stamp))  # beside the output, after it verified
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def cut_base(base: Path, layers: list[int], out: Path) -> Path:
    """The pretrained base with only `layers` of its encoder (a plain save_pretrained dir)."""
    if (out / "model.safetensors").is_file():
        return out
    from transformers import AutoTokenizer, BertForMaskedLM

    from workbench.stages.distil import student_from_teacher

    model = BertForMaskedLM.from_pretrained(str(base))
    small = student_from_teacher(model, layers)
    tmp = out.with_name(out.name + ".tmp")
    small.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def ms(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="runs/base/pretrain")
    ap.add_argument("--train", type=int, default=2000, help="train reviews (of 9,600)")
    ap.add_argument("--valid", type=int, default=600, help="dev reviews for model selection (of 1,200)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of every student")
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--lr", default="1e-4")
    ap.add_argument("--alpha", default="0.5")
    ap.add_argument("--temperature", default="2")
    ap.add_argument("--work", default="runs/bench_distil")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark needs ../shared/data/chnsenticorp")
    base = REPO / args.base
    if not (base / "manifest.json").is_file():
        sys.exit(f"{base} is missing: run `make base` first")
    os.chdir(REPO)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    seeds = [int(s) for s in args.seeds.split(",")]

    n = {"train": subsample(DATA / "train.tsv", work / "data" / "train.tsv", args.train, 0),
         "valid": subsample(DATA / "dev.tsv", work / "data" / "valid.tsv", args.valid, 0),
         "test": subsample(DATA / "test.tsv", work / "data" / "test.tsv", None, 0)}
    data = [f"train={work / 'data' / 'train.tsv'}", f"valid={work / 'data' / 'valid.tsv'}",
            f"test={work / 'data' / 'test.tsv'}", "data.text_column=text_a", "data.label_column=label"]
    common = [f"max_length={args.max_length}", f"epochs={args.epochs}", f"lr={args.lr}", "batch_size=32",
              "eval_batch_size=64", "logging_steps=50"]
    print(f"ChnSentiCorp subsample: {n}; seeds {seeds}", flush=True)

    teacher_dir = work / "teacher"
    teacher = step("finetune", teacher_dir, [f"model={base}", *data, *common, f"epochs={args.teacher_epochs}",
                                             "truncation=head_tail", "head_tokens=32", "seed=1"], log)
    small_base = cut_base(base, [1, 3], work / "base-2L")
    arms: dict[str, dict[int, dict]] = {"distil": {}, "no_teacher": {}, "base_2L": {}}
    for seed in seeds:
        for arm, alpha in (("distil", args.alpha), ("no_teacher", "0")):
            arms[arm][seed] = step("distil", work / f"{arm}-s{seed}", [
                f"teacher={teacher_dir}", *common, f"alpha={alpha}", f"temperature={args.temperature}",
                f"seed={seed}", "latency_batch_sizes=[1,32]", "latency_repeats=7", "latency_threads=1"], log,
                upstream=teacher_dir)
        arms["base_2L"][seed] = step("finetune", work / f"base_2L-s{seed}", [
            f"model={small_base}", *data, *common, "truncation=head_tail", "head_tokens=32", f"seed={seed}"], log)

    # ---------------------------------------------------------------- checkpoint averaging
    # The teacher's run again (same settings and seed, so the same training) with valid scored
    # every 21 steps and the last 5 snapshots kept, then `workbench average` of those 5.
    snap_dir, avg_dir = work / "teacher-snapshots", work / "teacher-average"
    step("finetune", snap_dir, [f"model={base}", *data, *common, f"epochs={args.teacher_epochs}",
                                "truncation=head_tail", "head_tokens=32", "seed=1", "eval_steps=21",
                                "keep_snapshots=5"], log)
    averaged = step("average", avg_dir, [f"input={snap_dir}", "last=5"], log, upstream=snap_dir)

    # ---------------------------------------------------------------- aggregate
    acc = {arm: {split: ms([runs[s][split]["accuracy"] for s in seeds]) for split in ("valid", "test")}
           for arm, runs in arms.items()}
    paired = {other: ms([arms["distil"][s]["test"]["accuracy"] - arms[other][s]["test"]["accuracy"] for s in seeds])
              for other in ("no_teacher", "base_2L")}
    d0 = arms["distil"][seeds[0]]["distil"]
    lat_runs = [r["distil"]["latency"] for arm in ("distil", "no_teacher") for r in arms[arm].values()]
    latency = {}
    for b in (1, 32):
        t = [x["teacher"][f"batch_{b}"]["median_ms"] for x in lat_runs]
        s = [x["student"][f"batch_{b}"]["median_ms"] for x in lat_runs]
        sp = [x[f"speedup_batch_{b}"] for x in lat_runs]
        latency[f"batch_{b}"] = {"teacher_ms": statistics.median(t), "student_ms": statistics.median(s),
                                 "speedup": statistics.median(sp), "speedup_range": [min(sp), max(sp)],
                                 "runs": len(sp)}
    result = {
        "benchmark": "bench_distil",
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "data": {"dataset": "ChnSentiCorp (../shared/data/chnsenticorp)", "subsample_seed": 0, **n,
                 "note": "train and valid: seeded random subsamples of train.tsv / dev.tsv; test: all of test.tsv"},
        "settings": {"base": args.base, "max_length": args.max_length, "epochs": args.epochs,
                     "teacher_epochs": args.teacher_epochs, "lr": args.lr,
                     "batch_size": 32, "alpha": float(args.alpha), "temperature": float(args.temperature),
                     "student_layers": d0["student_made"], "seeds": seeds},
        "teacher": {"valid_accuracy": teacher["valid"]["accuracy"], "test_accuracy": teacher["test"]["accuracy"],
                    "valid_history": [h["accuracy"] for h in teacher["history"]["1"]],
                    "parameters": d0["teacher"]["parameters"], "layers": d0["teacher"]["layers"],
                    "safetensors_bytes": d0["teacher"]["safetensors_bytes"]},
        "student": {"parameters": d0["student"]["parameters"], "layers": d0["student"]["layers"],
                    "safetensors_bytes": d0["student"]["safetensors_bytes"]},
        "accuracy": acc,
        "paired_test_difference": paired,
        "latency_cpu_1_thread": latency,
        "average": {"source": "the teacher's run with eval_steps=21 and keep_snapshots=5 (same training)",
                    "checkpoints": averaged["checkpoints"], "scores": averaged["scores"]},
        # compute time of every stage run (their manifests), so a resumed benchmark reports the whole
        "wall_s": round(sum(json.loads((out / "manifest.json").read_text())["wall_time_s"]
                            for out in [teacher_dir, *(work / f"{arm}-s{s}" for arm in arms for s in seeds),
                                        snap_dir, avg_dir]), 1),
    }
    (RESULTS / "distil.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md = render(result)
    (RESULTS / "distil.md").write_text(md, encoding="utf-8")
    print(md)


def render(r: dict) -> str:
    f = lambda m: f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"  # noqa: E731
    t, s, lat = r["teacher"], r["student"], r["latency_cpu_1_thread"]
    rows = [
        f"| teacher (finetune, 1 seed) | {t['layers']} | {t['parameters'] / 1e6:.2f} M | {t['safetensors_bytes'] / 1e6:.1f} MB "
        f"| {100 * t['valid_accuracy']:.2f} | {100 * t['test_accuracy']:.2f} |"]
    names = {"distil": f"student, distil (alpha {r['settings']['alpha']}, T {r['settings']['temperature']})",
             "no_teacher": "student, same init, labels only (alpha 0)",
             "base_2L": "student, pretrained base layers 1+3, finetune"}
    for arm, name in names.items():
        a = r["accuracy"][arm]
        rows.append(f"| {name} | {s['layers']} | {s['parameters'] / 1e6:.2f} M | {s['safetensors_bytes'] / 1e6:.1f} MB "
                    f"| {f(a['valid'])} | {f(a['test'])} |")
    p = r["paired_test_difference"]
    verdict = []
    for other, label in (("no_teacher", "the same student on labels only"), ("base_2L", "the base cut to 2 layers")):
        d = p[other]
        wins = sum(v > 0 for v in d["values"])
        verdict.append(f"- distil − {label}: {100 * d['mean']:+.2f} ± {100 * d['std']:.2f} test accuracy points "
                       f"(per seed {', '.join(f'{100 * v:+.2f}' for v in d['values'])}; better in {wins} of "
                       f"{len(d['values'])} seeds)")
    lines = [
        "# Distillation: ChnSentiCorp, 4-layer teacher → 2-layer student",
        "",
        f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_distil.py` ({r['when']}; {r['wall_s'] / 60:.0f} min of stage "
        f"wall time on {r['machine']['cpu_count']} CPU cores shared with other jobs). Data: {r['data']['train']:,} train / {r['data']['valid']:,} "
        f"valid reviews (seeded subsamples of train / dev), all {r['data']['test']:,} test reviews; max_length "
        f"{r['settings']['max_length']}, lr {r['settings']['lr']}, batch 32 for every model; the teacher trains "
        f"{r['settings']['teacher_epochs']} epochs, every student {r['settings']['epochs']}. Teacher: `workbench finetune` of `{r['settings']['base']}` (4 x 256, continued MLM). Students copy "
        f"teacher layers {r['settings']['student_layers'].get('layer_map')}; accuracy: mean ± std over seeds "
        f"{r['settings']['seeds']}.",
        "",
        "| model | layers | parameters | model.safetensors | valid accuracy % | test accuracy % |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "Paired by seed (same data order and init seed):",
        "",
        *verdict,
        "",
        "CPU latency of one forward pass (1 thread; medians of 7 interleaved repeats inside each distil run, then the "
        f"median over {lat['batch_1']['runs']} runs; inputs: the first valid reviews at max_length):",
        "",
        "| batch | teacher ms | student ms | speed-up (same run) |",
        "|---|---|---|---|",
        *[f"| {b.split('_')[1]} | {v['teacher_ms']:.1f} | {v['student_ms']:.1f} | x{v['speedup']:.2f} "
          f"(runs: x{v['speedup_range'][0]:.2f}-x{v['speedup_range'][1]:.2f}) |" for b, v in lat.items()],
        "",
        "Parameters include the embeddings (21,128 x 256 of Google's vocabulary), which halving the layers does not "
        "shrink; that is why the student keeps most of the parameters while its latency halves.",
        "",
    ]
    if min(r["accuracy"][a]["test"]["mean"] for a in ("distil", "no_teacher")) > t["test_accuracy"]:
        lines += [
            "The students score above their teacher: both start from the fine-tuned teacher's own layers 1 and 3 "
            "(embeddings, pooler and head included) and train 3 more epochs on the same data, so they continue the "
            "teacher's fine-tuning (the teacher's valid accuracy per epoch: "
            + ", ".join(f"{100 * v:.1f}" for v in t["valid_history"]) + "). The effect "
            "of the soft targets alone is the distil vs labels-only row; the base-cut row shows what starting from "
            "the teacher is worth.", ""]
    av = r["average"]
    lines += [
        "Checkpoint averaging (`workbench average`, deliverable 1) on the teacher's run: trained again with the same "
        "settings and seed, valid scored every 21 steps and the last 5 snapshots kept (`keep_snapshots=5`); the mean "
        f"of {', '.join(av['checkpoints'])} against the last snapshot and finetune's own best-valid pick (one seed):",
        "",
        "| split | average of 5 % | last snapshot % | finetune's pick % |",
        "|---|---|---|---|",
        *[f"| {split} | {100 * v['average']:.2f} | {100 * v['last']:.2f} | {100 * v['finetune_selected']:.2f} |"
          for split, v in av["scores"].items()],
        ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
