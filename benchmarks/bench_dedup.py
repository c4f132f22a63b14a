"""Benchmark: the near-duplicate pass (rensa and numpy vs the earlier datasketch path) and whole
`prepare` on one and two workers against a plain `load_dataset` baseline, on real text.

What it measures (every timing: medians of `--repeats` runs, the variants interleaved
within each repeat so machine load hits them alike)
  A. The near-duplicate pass alone (fingerprints + LSH + verification, `dedup.Fingerprinter`
     + `FingerprintWriter` + `find_duplicates`, exact keys included) on the cleaned texts of
     each corpus, with `minhash=datasketch` (the implementation before this change) and
     `minhash=rensa` and `minhash=numpy`: seconds, documents/s, the speed-up, and how far the duplicate records
     agree (documents flagged by both / by either; the same kept document for those).
  B. Whole `workbench prepare` (the CLI in a subprocess: start-up, reading, full cleaning,
     split, near + exact dedup, writing) with workers=1 and workers=2, against the plain
     baseline of the issue: `datasets.load_dataset("text")` + exact dedup of the stripped
     lines (a pandas `drop_duplicates`) + a seeded hash split + `save_to_disk`, also in a
     subprocess. Ratios: baseline seconds / prepare seconds (1.0 = as fast as the baseline)
     and the 2-worker speed-up.

Corpora (../shared/data; research use, read in place, never copied into the repo)
  weibo  weibo_ced_posts/posts.txt: 559k short posts (30.9 MB), one per line
  news   news_xwlb/stories.txt: 24k CCTV news stories (39.5 MB), long documents
`--limit N` takes the first N lines of each (a quicker run).

    .venv/bin/python benchmarks/bench_dedup.py                   # both corpora, 3 repeats
    .venv/bin/python benchmarks/bench_dedup.py --limit 100000 --repeats 1 --skip-prepare

Results: benchmarks/results/bench_dedup.{txt,json}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PLAIN_PREPARE, REPO, RESULTS, SHARED

CORPORA = {"weibo": SHARED / "weibo_ced_posts" / "posts.txt", "news": SHARED / "news_xwlb" / "stories.txt"}



def _clean_texts(path: Path, limit: int | None) -> list[str]:
    from workbench.config import CleanConfig
    from workbench.corpus.clean import Cleaner

    cleaner, out = Cleaner(CleanConfig()), []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit and i >= limit:
                break
            text, reason = cleaner.clean(line.rstrip("\n"))
            if not reason:
                out.append(text)
    return out


def _dedup_pass(texts: list[str], minhash: str, batch: int = 2048):
    from workbench.config import DedupConfig
    from workbench.corpus.dedup import Fingerprinter, FingerprintWriter, find_duplicates

    cfg = DedupConfig(minhash=minhash)
    with tempfile.TemporaryDirectory(dir=REPO / "benchmarks" / "work") as d:
        t = time.perf_counter()
        fp, w = Fingerprinter(cfg), FingerprintWriter(Path(d), cfg)
        for s in range(0, len(texts), batch):
            w.write(*fp.batch(texts[s:s + batch]))
        w.close()
        dups = find_duplicates(Path(d), w.n, cfg)
        return time.perf_counter() - t, dups


def _true_jaccard(texts: list[str], i: int, j: int) -> float:
    from workbench.corpus.dedup import shingles

    x, y = set(shingles(texts[i], 5)), set(shingles(texts[j], 5))
    return len(x & y) / len(x | y)


def _agreement(a, b, texts: list[str], threshold: float = 0.8, names: tuple[str, str] = ("datasketch", "rensa")) -> dict:
    """How far the two implementations' duplicate records agree, and, for every near
    duplicate either one flagged, the exact Jaccard of its 5-character shingle set with the
    document it was matched to: the quality of both, measured on the same pairs."""
    import numpy as np

    quality = {}
    na, nb = names
    for impl, d in ((na, a), (nb, b)):
        near = np.flatnonzero(d.kind == 2)
        true = np.array([_true_jaccard(texts, int(i), int(d.of[i])) for i in near])
        quality[impl] = {"near_flagged": len(near),
                         "true_jaccard_median": round(float(np.median(true)), 3) if len(true) else None,
                         "share_true_jaccard_at_or_above_threshold": round(float((true >= threshold).mean()), 3)
                         if len(true) else None,
                         "share_true_jaccard_at_or_above_0.7": round(float((true >= 0.7).mean()), 3) if len(true) else None}
    fa, fb = a.kind != 0, b.kind != 0
    dis = np.flatnonzero(fa ^ fb)
    dis_true = [(_true_jaccard(texts, int(i), int(a.of[i] if fa[i] else b.of[i]))) for i in dis]
    both, either = int((fa & fb).sum()), int((fa | fb).sum())
    same_of = int(((a.of == b.of) & fa & fb).sum())
    return {f"flagged_{na}": int(fa.sum()), f"flagged_{nb}": int(fb.sum()), "flagged_both": both,
            "flagged_either": either, "agreement": round(both / either, 4) if either else 1.0,
            "same_kept_document": round(same_of / both, 4) if both else 1.0,
            f"near_{na}": int((a.kind == 2).sum()), f"near_{nb}": int((b.kind == 2).sum()),
            f"only_{na}": int((fa & ~fb).sum()), f"only_{nb}": int((fb & ~fa).sum()),
            "true_jaccard_of_disagreements_median": round(float(np.median(dis_true)), 3) if dis_true else None,
            "true_jaccard_of_disagreements_range": [round(min(dis_true), 3), round(max(dis_true), 3)] if dis_true else None,
            "quality": quality}


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N lines of each corpus")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    ap.add_argument("--skip-prepare", action="store_true", help="only part A")
    args = ap.parse_args()
    for name in args.corpora:
        if not CORPORA[name].is_file():
            sys.exit(f"{CORPORA[name]} is missing (../shared/data)")
    work = REPO / "benchmarks" / "work" / "bench_dedup"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines_out = [f"bench_dedup: the near-duplicate pass and whole prepare on real text "
                 f"({args.repeats} repeat(s), medians, variants interleaved)",
                 f"machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
                 f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}"]
    print("\n".join(lines_out), flush=True)
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "args": vars(args),
                     "corpora": {}}
    for name in args.corpora:
        src = CORPORA[name]
        if args.limit:
            path = work / f"{name}.txt"
            with open(src, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as g:
                for i, line in enumerate(f):
                    if i >= args.limit:
                        break
                    g.write(line)
        else:
            path = src
        texts = _clean_texts(path, None)
        mb = path.stat().st_size / 2**20
        r: dict = {"file": str(src), "lines_limit": args.limit, "mib": round(mb, 2), "documents_after_cleaning": len(texts),
                   "mean_chars": round(sum(map(len, texts)) / max(len(texts), 1), 1)}
        # ---- A. the near-duplicate pass
        times = {"datasketch": [], "rensa": [], "numpy": []}
        dups = {}
        for _ in range(args.repeats):
            for impl in times:
                sec, dups[impl] = _dedup_pass(texts, impl)
                times[impl].append(sec)
        med = {k: statistics.median(v) for k, v in times.items()}
        r["dedup_pass"] = {"seconds": times, "median_s": med, "docs_per_s": {k: round(len(texts) / v) for k, v in med.items()},
                           "speedup_rensa_vs_datasketch": round(med["datasketch"] / med["rensa"], 2),
                           "speedup_numpy_vs_datasketch": round(med["datasketch"] / med["numpy"], 2),
                           "agreement": _agreement(dups["datasketch"], dups["rensa"], texts),
                           "agreement_numpy": _agreement(dups["datasketch"], dups["numpy"], texts,
                                                         names=("datasketch", "numpy"))}
        a = r["dedup_pass"]
        an = a["agreement_numpy"]
        line = (f"\n[{name}] {mb:.1f} MiB, {len(texts):,} documents after cleaning (mean {r['mean_chars']} chars)\n"
                f"  A. near-duplicate pass: datasketch {med['datasketch']:.2f} s ({a['docs_per_s']['datasketch']:,} docs/s)"
                f"  rensa {med['rensa']:.2f} s ({a['docs_per_s']['rensa']:,} docs/s)  → {a['speedup_rensa_vs_datasketch']}x\n"
                f"     duplicates flagged: datasketch {a['agreement']['flagged_datasketch']:,}, rensa "
                f"{a['agreement']['flagged_rensa']:,}, both {a['agreement']['flagged_both']:,}; agreement "
                f"{a['agreement']['agreement']:.2%} (both / either), same kept document {a['agreement']['same_kept_document']:.2%}\n"
                f"     exact shingle Jaccard of the near duplicates each flagged (median; share >= 0.8; >= 0.7): "
                + "; ".join(f"{k} {q['true_jaccard_median']} ({q['share_true_jaccard_at_or_above_threshold']}; "
                            f"{q['share_true_jaccard_at_or_above_0.7']})" for k, q in a['agreement']['quality'].items())
                + f"\n     the {a['agreement']['flagged_either'] - a['agreement']['flagged_both']} documents only one flagged: "
                f"exact Jaccard median {a['agreement']['true_jaccard_of_disagreements_median']}, range "
                f"{a['agreement']['true_jaccard_of_disagreements_range']} (borderline pairs: MinHash sampling noise)\n"
                f"     numpy {med['numpy']:.2f} s ({a['docs_per_s']['numpy']:,} docs/s) → "
                f"{a['speedup_numpy_vs_datasketch']}x datasketch; flagged {an['flagged_numpy']:,}, both with datasketch "
                f"{an['flagged_both']:,}; agreement {an['agreement']:.2%}, same kept document {an['same_kept_document']:.2%}; "
                f"exact Jaccard of its near duplicates: median {an['quality']['numpy']['true_jaccard_median']}, "
                f"share >= 0.8 {an['quality']['numpy']['share_true_jaccard_at_or_above_threshold']}; the "
                f"{an['flagged_either'] - an['flagged_both']} only one flagged: median "
                f"{an['true_jaccard_of_disagreements_median']}")
        print(line, flush=True)
        lines_out.append(line)
        # ---- B. whole prepare vs the plain baseline
        if not args.skip_prepare:
            py = sys.executable
            variants = {
                "baseline": lambda i: [py, "-c", PLAIN_PREPARE, str(path), str(work / f"base-{name}-{i}"), str(work / "hf-cache")],
                "prepare_w1": lambda i: [py, "-m", "workbench", "prepare", f"input={path}",
                                         f"output={work / f'w1-{name}-{i}'}", "workers=1"],
                "prepare_w2": lambda i: [py, "-m", "workbench", "prepare", f"input={path}",
                                         f"output={work / f'w2-{name}-{i}'}", "workers=2"],
            }
            walls = {k: [] for k in variants}
            for i in range(args.repeats):
                for k, cmd in variants.items():
                    walls[k].append(_timed(cmd(i)))
                    shutil.rmtree(work / "hf-cache", ignore_errors=True)
            m = {k: statistics.median(v) for k, v in walls.items()}
            same = (work / f"w1-{name}-0" / "duplicates.jsonl").read_bytes() == (work / f"w2-{name}-0" / "duplicates.jsonl").read_bytes()
            r["prepare"] = {"seconds": walls, "median_s": m, "mib_per_s": {k: round(mb / v, 2) for k, v in m.items()},
                            "prepare_w1_vs_baseline": round(m["baseline"] / m["prepare_w1"], 3),
                            "prepare_w2_vs_baseline": round(m["baseline"] / m["prepare_w2"], 3),
                            "speedup_2_workers": round(m["prepare_w1"] / m["prepare_w2"], 2),
                            "same_duplicates_w1_w2": same}
            p = r["prepare"]
            line = (f"  B. whole process: baseline {m['baseline']:.1f} s ({p['mib_per_s']['baseline']} MiB/s), prepare "
                    f"workers=1 {m['prepare_w1']:.1f} s ({p['mib_per_s']['prepare_w1']} MiB/s) = "
                    f"{p['prepare_w1_vs_baseline']}x the baseline, workers=2 {m['prepare_w2']:.1f} s = "
                    f"{p['prepare_w2_vs_baseline']}x; 2 workers vs 1: {p['speedup_2_workers']}x "
                    f"(same duplicate records: {same})")
            print(line, flush=True)
            lines_out.append(line)
        results["corpora"][name] = r
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_dedup.txt").write_text("\n".join(lines_out) + "\n", encoding="utf-8")
    (RESULTS / "bench_dedup.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    print(f"\nwritten: {RESULTS / 'bench_dedup.txt'}, {RESULTS / 'bench_dedup.json'}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
