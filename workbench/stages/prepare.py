"""prepare: raw corpus files → cleaned, deduplicated, split Arrow dataset.

    workbench prepare --config configs/demo.yaml
    workbench prepare input=corpus.txt output=out/

Output directory (written atomically):
    dataset/          datasets.DatasetDict (train, valid[, test]): text, source, row, <keep_fields>
    rejects.jsonl     one line per rejected row: file, row, line, reason, detail, excerpt
    duplicates.jsonl  one line per dropped duplicate: file, row, line, reason, duplicate_of, similarity, excerpt
    manifest.json     config, inputs + hashes, counts (in = kept + rejected + duplicates), versions

Flow, with memory that does not grow with the corpus:
  1. stream every input row in batches (corpus/process.py) → reader rejects / clean →
     length filters → decontamination → split and fingerprints, on `workers` processes
     (or a Dask cluster), results taken in input order; accepted rows go to an Arrow
     stream file on disk, their fingerprints to flat files;
  2. duplicates are found from the memory-mapped fingerprints (corpus/dedup.py);
  3. the non-duplicates are written out per split with datasets.save_to_disk.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from workbench.config import PrepareConfig, shard_bytes
from workbench.corpus.dedup import EXACT, KEEP, NEAR, FingerprintWriter, find_duplicates
from workbench.corpus.process import (Batch, BatchProcessor, RangeResult, RangeTask, candidate_schema,
                                      effective_workers, excerpt, ordered_map, reject_json)
from workbench.corpus.readers import (FileStats, check_jsonl_field, check_rows, detect_format, expand_inputs,
                                      plan_ranges, read_file, sniff_encoding, splittable)
from workbench.corpus.split import SPLITS
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, owns_output, save_shards, sha256_file, write_manifest

log = logging.getLogger("workbench.prepare")

_BATCH_ROWS = 8192


@owns_output("prepare")
def run(cfg: PrepareConfig) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()  # our own bar covers the input; saving is quick

    started, cpu_started = time.time(), time.process_time()
    files = expand_inputs(cfg.input)
    total_bytes = sum(f.stat().st_size for f in files)
    out_dir = cfg.output_path()
    log.info("prepare: %d file(s), %.1f MB → %s", len(files), total_bytes / 1e6, out_dir)

    workers = effective_workers(cfg, total_bytes)
    range_bytes = shard_bytes(cfg.batch_bytes)
    cfg, minhash_choice = resolve_minhash(cfg, files)
    # One worker in this process: its processor is made here, once (with its decontamination
    # index, which can be large); worker processes and Dask workers each make their own.
    local = BatchProcessor(cfg) if workers == 1 and cfg.engine == "local" else None
    if cfg.exclude.files:
        from workbench.corpus.exclude import Contamination

        # Built here (or above) to fail early on a bad path and to say how much is excluded.
        from workbench.corpus.clean import Cleaner

        eval_cleaner = Cleaner(cfg.clean)
        contamination = local.contamination if local is not None else Contamination(
            cfg.exclude.files, cfg.exclude.text_fields, cfg.exclude.ngram, lambda t: eval_cleaner.clean(t)[0])
        log.info("prepare: excluding text of %d evaluation texts from %d file(s) (%d-char overlap)",
                 contamination.texts, len(cfg.exclude.files), cfg.exclude.ngram)
        del contamination
    log.info("prepare: %s engine, %d worker process(es)", cfg.engine,
             workers if cfg.engine == "local" or not cfg.scheduler else 0)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    cleaning_edits: Counter[str] = Counter()
    file_stats = []
    per_file: list[Counter[str]] = [Counter() for _ in files]
    keep = cfg.read.keep_fields

    with atomic_output_dir(out_dir) as tmp:
        work = tmp / "_work"
        work.mkdir()
        fingerprints = FingerprintWriter(work / "fingerprints", cfg.dedup)
        schema = candidate_schema(keep)
        with pa.OSFile(str(work / "candidates.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as candidates, \
                open(tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects, \
                tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", disable=None, mininterval=1) as bar:

            # Worker processes read large txt/jsonl files themselves, a byte range each; the
            # main process hashes those files on a thread (hashlib releases the GIL).
            ranged = reads_in_workers(cfg, workers)
            hasher = ThreadPoolExecutor(1) if ranged else None
            hashes: dict[int, Any] = {}

            def batches():
                # ---- 1. stream the rows, in batches / byte ranges that never span two files
                for file_idx, path in enumerate(files):
                    if ranged and splittable(path, cfg.read):
                        encoding, bom = sniff_encoding(path, cfg.read.encoding)
                        file_stats.append(FileStats(str(path), detect_format(path, cfg.read.format), encoding,
                                                    bytes=path.stat().st_size))
                        hashes[file_idx] = hasher.submit(sha256_file, path)
                        size = file_stats[-1].bytes
                        for start, end in plan_ranges(path, range_bytes):
                            yield RangeTask(file_idx, str(path), encoding, bom, start, end, end == size)
                        continue
                    stats, rows = read_file(path, cfg.read, bar.update)
                    file_stats.append(stats)
                    source, buf = str(path), []
                    for r in rows:
                        source = r.source
                        buf.append((r.row, r.line, r.text, r.reject, r.detail, [r.fields.get(k) for k in keep]))
                        if len(buf) >= cfg.batch_rows:
                            yield Batch(file_idx, source, buf)
                            buf = []
                    if buf:
                        yield Batch(file_idx, source, buf)

            def take(res) -> None:
                counts["in"] += res.rows
                per_file[res.file_idx]["in"] += res.rows
                per_file[res.file_idx]["rejected"] += len(res.rejects)
                reasons.update(res.reasons)
                cleaning_edits.update(res.cleaning_edits)
                if res.rejects:
                    rejects.write("\n".join(map(reject_json, res.rejects)) + "\n")
                if res.candidates.num_rows:
                    candidates.write_batch(res.candidates)
                fingerprints.write(res.exact, res.sig, res.bands)

            try:
                for res in ordered_map(cfg, batches(), workers, processor=local):
                    if not isinstance(res, RangeResult):
                        take(res)
                        continue
                    whole, part = file_stats[res.task.file_idx], res.stats
                    for r in res.results:  # numbered within the range: shift by the ranges before
                        take(r.shifted(whole.rows, whole.lines))
                    whole.rows += part.rows
                    whole.lines += part.lines
                    whole.blank_lines += part.blank_lines
                    whole.field_seen |= part.field_seen
                    whole.first_keys = whole.first_keys if whole.first_keys is not None else part.first_keys
                    bar.update(res.task.end - res.task.start)
                    if res.task.last:
                        path = Path(res.task.path)
                        check_rows(path, cfg.read, whole)
                        if whole.format == "jsonl":
                            check_jsonl_field(path, cfg.read, whole)
                        whole.sha256 = hashes.pop(res.task.file_idx).result()
            finally:
                if hasher is not None:
                    hasher.shutdown(cancel_futures=True)
        fingerprints.close()
        n = fingerprints.n
        if counts["in"] == 0:
            raise InputError(", ".join(map(str, files)), "no input rows at all", "check prepare.input and prepare.read")

        # ---- 2. duplicates
        phases = {"stream_s": time.time() - started}
        log.info("prepare: %d candidate documents, looking for duplicates", n)
        dups = find_duplicates(work / "fingerprints", n, cfg.dedup)
        phases["find_duplicates_s"] = time.time() - started - sum(phases.values())
        cand = datasets.Dataset.from_file(str(work / "candidates.arrow"))  # memory-mapped
        _write_duplicates(tmp / "duplicates.jsonl", cand, dups)
        phases["write_duplicates_s"] = time.time() - started - sum(phases.values())

        # ---- 3. write the kept documents per split
        file_idx = cand.data.column("file_idx").to_numpy()
        split_col = cand.data.column("split").to_numpy()
        kept_mask = dups.kind == KEEP
        for i, c in enumerate(per_file):
            c["duplicates"] = int(((~kept_mask) & (file_idx == i)).sum())
            c["kept"] = int((kept_mask & (file_idx == i)).sum())
        wanted = [s for s_i, s in enumerate(SPLITS) if s_i == 0 or (s_i == 1 and cfg.split.valid_fraction > 0)
                  or (s_i == 2 and cfg.split.test_fraction > 0)]
        splits = {}
        internal = ["line", "file_idx", "split"]
        for s in wanted:
            idx = np.flatnonzero(kept_mask & (split_col == SPLITS.index(s)))
            splits[s] = cand.select(idx).remove_columns(internal)
        shards = save_shards(datasets.DatasetDict(splits), tmp / "dataset", cfg.shard_size)
        del cand
        shutil.rmtree(work)
        phases["write_splits_s"] = time.time() - started - sum(phases.values())

        counts_out = {
            "in": counts["in"],
            "kept": int(kept_mask.sum()),
            "rejected": sum(reasons.values()),
            "duplicates": int((~kept_mask).sum()),
            "duplicates_exact": int((dups.kind == EXACT).sum()),
            "duplicates_near": int((dups.kind == NEAR).sum()),
            "rejected_by_reason": dict(sorted(reasons.items())),
            "splits": {s: len(d) for s, d in splits.items()},
            "blank_lines_skipped": sum(s.blank_lines for s in file_stats),
            "cleaning_edits": dict(sorted(cleaning_edits.items())),
        }
        if counts_out["in"] != counts_out["kept"] + counts_out["rejected"] + counts_out["duplicates"]:
            raise RuntimeError(f"prepare lost rows (a bug, please report): {counts_out}")
        inputs = [{"path": s.path, "format": s.format, "encoding": s.encoding, "bytes": s.bytes, "sha256": s.sha256,
                   "rows": s.rows, "blank_lines": s.blank_lines, **{k: c[k] for k in ("kept", "rejected", "duplicates")}}
                  for s, c in zip(file_stats, per_file)]
        manifest = write_manifest(
            tmp, stage="prepare", config=cfg.model_dump(mode="json"), inputs=inputs, counts=counts_out,
            seed=cfg.seed, started=started, finished=time.time(),
            # datasets writes a fresh random fingerprint into state.json on every run.
            hash_exclude=tuple(f"dataset/{s}/state.json" for s in splits),
            extra={"execution": {"engine": cfg.engine, "workers": workers if not cfg.scheduler else None,
                                 "scheduler": cfg.scheduler, "batch_rows": cfg.batch_rows,
                                 "batch_bytes": cfg.batch_bytes if reads_in_workers(cfg, workers) else None,
                                 # CPU of this (reading / writing) process alone: its ceiling on many cores
                                 "main_process_cpu_s": round(time.process_time() - cpu_started, 2),
                                 # wall seconds: reading + the workers, then the single-process tail
                                 "phases_s": {k[:-2]: round(v, 2) for k, v in phases.items()}},
                   "shards": shards, "minhash": minhash_choice},
        )
    _print_summary(manifest, out_dir)
    return manifest


def reads_in_workers(cfg: PrepareConfig, workers: int) -> bool:
    """Whether worker processes read txt/jsonl byte ranges themselves (PrepareConfig.read_in_workers)."""
    if cfg.read_in_workers is not None:
        return cfg.read_in_workers and (cfg.engine == "dask" or workers > 1)
    return cfg.engine == "local" and workers > 1


AUTO_MINHASH_SAMPLE, AUTO_MINHASH_FILES, AUTO_MINHASH_SHORT = 1000, 4, 150


def resolve_minhash(cfg: PrepareConfig, files: list[Path]) -> tuple[PrepareConfig, dict | None]:
    """`dedup.minhash=auto` → numpy for short texts, rensa for long ones (see DedupConfig).
    Both cost about the same per shingle, but rensa hands its signatures back as Python
    lists (~16 µs a document), which dominates on posts of ~20 characters and vanishes on
    stories of ~500 (bench_dedup). Decided from the first records of the first files, so
    the choice depends on the inputs only: the same corpus gets the same signatures on any
    number of workers or engines. Returns the config with the choice and what it rests on."""
    if not cfg.dedup.near or cfg.dedup.minhash != "auto":
        return cfg, None
    lengths = []
    for path in files[:AUTO_MINHASH_FILES]:
        _, rows = read_file(path, cfg.read)
        for i, r in enumerate(rows):
            if i >= AUTO_MINHASH_SAMPLE:
                break
            if r.text:
                lengths.append(len(r.text))
    mean = sum(lengths) / len(lengths) if lengths else 0.0
    chosen = "numpy" if mean < AUTO_MINHASH_SHORT else "rensa"
    log.info("prepare: near-duplicate signatures by %s (dedup.minhash=auto: the first %d records average %.0f "
             "characters; numpy below %d)", chosen, len(lengths), mean, AUTO_MINHASH_SHORT)
    resolved = cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"minhash": chosen})})
    return resolved, {"auto": chosen, "sample_records": len(lengths), "mean_chars": round(mean, 1),
                      "threshold_chars": AUTO_MINHASH_SHORT}


def _write_duplicates(path: Path, cand, dups) -> None:
    """duplicates.jsonl: each dropped duplicate with the kept row it duplicates.

    Reads the rows in slices through `Dataset.select` (an index mapping over the memory-
    mapped file): pyarrow's `take` on the chunked text column would first concatenate
    every chunk, i.e. copy the whole corpus into memory.
    """
    dup_idx = np.flatnonzero(dups.kind != KEEP)
    dup_rows = cand.select(dup_idx).select_columns(["source", "row", "line", "text"])
    orig_rows = cand.select(dups.of[dup_idx]).select_columns(["source", "row"])
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, len(dup_idx), _BATCH_ROWS):
            d, o = dup_rows[start : start + _BATCH_ROWS], orig_rows[start : start + _BATCH_ROWS]
            for j, i in enumerate(dup_idx[start : start + _BATCH_ROWS].tolist()):
                f.write(json.dumps({
                    "file": d["source"][j], "row": d["row"][j], "line": d["line"][j],
                    "reason": "duplicate_exact" if dups.kind[i] == EXACT else "duplicate_near",
                    "duplicate_of": {"file": o["source"][j], "row": o["row"][j]},
                    "similarity": round(float(dups.similarity[i]), 3), "excerpt": excerpt(d["text"][j]),
                }, ensure_ascii=False) + "\n")


def _print_summary(manifest: dict[str, Any], out_dir: Path) -> None:
    c = manifest["counts"]
    lines = [
        f"prepare done in {manifest['wall_time_s']:.1f}s → {out_dir}",
        f"  in {c['in']:,} = kept {c['kept']:,} + rejected {c['rejected']:,} + duplicates {c['duplicates']:,}"
        f" (exact {c['duplicates_exact']:,}, near {c['duplicates_near']:,})",
        "  splits: " + ", ".join(f"{k} {v:,}" for k, v in c["splits"].items()),
    ]
    if c["rejected_by_reason"]:
        lines.append("  rejected: " + ", ".join(f"{k} {v:,}" for k, v in c["rejected_by_reason"].items())
                     + f"  (see {out_dir / 'rejects.jsonl'})")
    print("\n".join(lines))
