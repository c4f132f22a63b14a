"""prepare: raw corpus files → cleaned, deduplicated, split Arrow dataset.

    workbench prepare --config configs/demo.yaml
    workbench prepare input=corpus.txt output=out/

Output directory (written atomically):
    dataset/          datasets.DatasetDict (train, valid[, test]): text, source, row, <keep_fields>
    rejects.jsonl     one line per rejected row: file, row, line, reason, detail, excerpt
    duplicates.jsonl  one line per dropped duplicate: file, row, line, reason, duplicate_of, similarity, excerpt
    manifest.json     config, inputs + hashes, counts (in = kept + rejected + duplicates), versions

Flow, with memory that does not grow with the corpus:
  1. stream every input row → reader rejects / clean → length filters; accepted rows go
     to an Arrow stream file on disk in batches, their fingerprints to flat files;
  2. duplicates are found from the memory-mapped fingerprints (corpus/dedup.py);
  3. the non-duplicates are written out per split with datasets.save_to_disk.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from workbench.config import PrepareConfig
from workbench.corpus.clean import Cleaner
from workbench.corpus.dedup import EXACT, KEEP, NEAR, FingerprintWriter, find_duplicates
from workbench.corpus.readers import Row, expand_inputs, read_file
from workbench.corpus.split import SPLITS, split_index
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, owns_output, write_manifest

log = logging.getLogger("workbench.prepare")

EXCERPT_CHARS = 80
_BATCH_ROWS = 8192


def _excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def _keep_value(value: Any) -> str | None:
    """keep_fields are stored as strings (JSON for non-strings) so the schema is fixed."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _CandidateWriter:
    """Accepted rows → an Arrow IPC stream file, in batches (bounded memory)."""

    def __init__(self, path: Path, keep_fields: list[str]):
        self.keep_fields = keep_fields
        fields = [("text", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("line", pa.int64()),
                  ("file_idx", pa.int32()), ("split", pa.int8())]
        fields += [(k, pa.string()) for k in keep_fields]
        self.schema = pa.schema(fields)
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._cols: dict[str, list] = {f.name: [] for f in self.schema}

    def add(self, **values: Any) -> None:
        for name, col in self._cols.items():
            col.append(values.get(name))
        if len(self._cols["text"]) >= _BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._cols["text"]:
            self._writer.write_batch(pa.RecordBatch.from_pydict(self._cols, schema=self.schema))
            self._cols = {name: [] for name in self._cols}

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._sink.close()


@owns_output("prepare")
def run(cfg: PrepareConfig) -> dict[str, Any]:
    import datasets

    datasets.disable_progress_bars()  # our own bar covers the input; saving is quick

    started = time.time()
    files = expand_inputs(cfg.input)
    total_bytes = sum(f.stat().st_size for f in files)
    out_dir = cfg.output_path()
    log.info("prepare: %d file(s), %.1f MB → %s", len(files), total_bytes / 1e6, out_dir)

    cleaner = Cleaner(cfg.clean)
    contamination = None
    if cfg.exclude.files:
        from workbench.corpus.exclude import Contamination

        eval_cleaner = Cleaner(cfg.clean)  # the corpus's cleaning, its own counts
        contamination = Contamination(cfg.exclude.files, cfg.exclude.text_fields, cfg.exclude.ngram,
                                      lambda t: eval_cleaner.clean(t)[0])
        log.info("prepare: excluding text of %d evaluation texts from %d file(s) (%d-char overlap)",
                 contamination.texts, len(cfg.exclude.files), cfg.exclude.ngram)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    file_stats = []
    per_file: list[Counter[str]] = []

    with atomic_output_dir(out_dir) as tmp:
        work = tmp / "_work"
        work.mkdir()
        fingerprints = FingerprintWriter(work / "fingerprints", cfg.dedup)
        candidates = _CandidateWriter(work / "candidates.arrow", cfg.read.keep_fields)

        # ---- 1. stream, reject, clean, fingerprint
        with open(tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects, \
                tqdm(total=total_bytes, unit="B", unit_scale=True, desc="prepare", disable=None, mininterval=1) as bar:

            def reject(r: Row, reason: str, detail: str, text: str | None) -> None:
                reasons[reason] += 1
                per_file[-1]["rejected"] += 1
                rejects.write(json.dumps({"file": r.source, "row": r.row, "line": r.line, "reason": reason,
                                          "detail": detail, "excerpt": _excerpt(text)}, ensure_ascii=False) + "\n")

            for file_idx, path in enumerate(files):
                stats, rows = read_file(path, cfg.read, bar.update)
                file_stats.append(stats)
                per_file.append(Counter())
                for r in rows:
                    counts["in"] += 1
                    per_file[-1]["in"] += 1
                    if r.reject:
                        reject(r, r.reject, r.detail, r.text)
                        continue
                    text, reason = cleaner.clean(r.text)
                    if reason:
                        detail = {"empty": "nothing left after cleaning",
                                  "too_short": f"{len(text)} chars < clean.min_chars={cfg.clean.min_chars}",
                                  "too_long": f"{len(text)} chars > clean.max_chars={cfg.clean.max_chars}",
                                  "low_cjk_ratio": f"CJK share below clean.min_cjk_ratio={cfg.clean.min_cjk_ratio}"}[reason]
                        reject(r, reason, detail, r.text)
                        continue
                    if contamination is not None:
                        hit = contamination.match(text)
                        if hit is not None:
                            reject(r, "eval_overlap", f"shares text with evaluation data {hit} "
                                   f"(prepare.exclude)", r.text)
                            continue
                    fingerprints.add(text)
                    split = split_index(text, cfg.seed, cfg.split.valid_fraction, cfg.split.test_fraction)
                    candidates.add(text=text, source=r.source, row=r.row, line=r.line, file_idx=file_idx, split=split,
                                   **{k: _keep_value(r.fields.get(k)) for k in cfg.read.keep_fields})
        fingerprints.close()
        candidates.close()
        n = fingerprints.n
        if counts["in"] == 0:
            raise InputError(", ".join(map(str, files)), "no input rows at all", "check prepare.input and prepare.read")

        # ---- 2. duplicates
        log.info("prepare: %d candidate documents, looking for duplicates", n)
        dups = find_duplicates(work / "fingerprints", n, cfg.dedup)
        cand = datasets.Dataset.from_file(str(work / "candidates.arrow"))  # memory-mapped
        _write_duplicates(tmp / "duplicates.jsonl", cand, dups)

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
        # datasets writes an empty split with zero shards, which load_from_disk cannot read
        # back (datasets 5.2): give empty splits one (empty) shard.
        datasets.DatasetDict(splits).save_to_disk(
            str(tmp / "dataset"), num_shards={s: 1 for s, d in splits.items() if len(d) == 0})
        del cand
        shutil.rmtree(work)

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
            "cleaning_edits": dict(sorted(cleaner.counts.items())),
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
        )
    _print_summary(manifest, out_dir)
    return manifest


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
                    "similarity": round(float(dups.similarity[i]), 3), "excerpt": _excerpt(d["text"][j]),
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
