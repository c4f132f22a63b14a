"""prepare's per-row work on batches of rows, in this process or in worker processes.

Two kinds of task, both cut so that none spans two files:
  - `Batch`: rows the main process read (readers keep file/row/line accounting): csv/tsv,
    parquet, compressed files, txt paragraphs, and everything when one process works;
  - `RangeTask`: a byte range of an uncompressed txt (line mode) or jsonl file that the
    worker reads itself (`readers.plan_ranges`): with workers, the main process would
    otherwise spend its time decoding lines and pickling them to the workers, and bound
    the speed-up. Its rows and lines come back numbered within the range; the main process,
    taking results in order, shifts them by the rows and lines of the ranges before.
Each batch goes through `BatchProcessor.process`: reader rejects, cleaning, the length
filters, decontamination, the split and the duplicate fingerprints, returning everything
the main process writes: the rejects, the accepted rows (an Arrow record batch) and their
fingerprints. The function is pure given the config, so the output does not depend on how
many processes run it or where: the main process consumes the results strictly in input
order (`ordered_map`), with a bounded number of tasks in flight (memory does not grow with
the corpus).

Engines (`prepare.engine`): `local` (this process for workers=1, else a process pool of
`workers`), `dask` (any Dask cluster: a `scheduler` address, or a local cluster of `workers`
processes started for the run). The same batches, the same order, the same output.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from workbench.config import PrepareConfig
from workbench.corpus.clean import Cleaner
from workbench.corpus.dedup import Fingerprinter
from workbench.corpus.readers import FileStats, read_range
from workbench.corpus.split import split_indices

EXCERPT_CHARS = 80

_DETAIL = {
    "empty": lambda n, c: "nothing left after cleaning",
    "too_short": lambda n, c: f"{n} chars < clean.min_chars={c.min_chars}",
    "too_long": lambda n, c: f"{n} chars > clean.max_chars={c.max_chars}",
    "low_cjk_ratio": lambda n, c: f"CJK share below clean.min_cjk_ratio={c.min_cjk_ratio}",
}


def excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text[:EXCERPT_CHARS] + ("…" if len(text) > EXCERPT_CHARS else "")


def keep_value(value: Any) -> str | None:
    """keep_fields are stored as strings (JSON for non-strings) so the schema is fixed."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def candidate_schema(keep_fields: list[str]) -> pa.Schema:
    fields = [("text", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("line", pa.int64()),
              ("file_idx", pa.int32()), ("split", pa.int8())]
    return pa.schema(fields + [(k, pa.string()) for k in keep_fields])


@dataclass
class Batch:
    """Rows of one file: what a worker needs (plain tuples pickle quickly)."""

    file_idx: int
    source: str
    rows: list[tuple]  # (row, line, text, reject, detail, kept field values)


@dataclass
class RangeTask:
    """A byte range [start, end) of a txt (line mode) or jsonl file, read by the worker."""

    file_idx: int
    path: str
    encoding: str
    bom: int
    start: int
    end: int
    last: bool  # the file's last range: its whole-file checks follow


@dataclass
class BatchResult:
    file_idx: int
    rows: int
    rejects: list[tuple]  # (source, row, line, reason, detail, excerpt)
    reasons: Counter
    candidates: pa.RecordBatch
    exact: np.ndarray
    sig: np.ndarray | None
    bands: np.ndarray | None
    cleaning_edits: Counter = field(default_factory=Counter)

    def shifted(self, rows: int, lines: int) -> BatchResult:
        """This result with `rows` and `lines` added to its row and line numbers (a range's
        rows are numbered from 1; the ranges before it in the file hold `rows` / `lines`)."""
        if not rows and not lines:
            return self
        cand = self.candidates
        for name, by in (("row", rows), ("line", lines)):
            i = cand.schema.get_field_index(name)
            cand = cand.set_column(i, name, pc.add(cand.column(i), pa.scalar(by, pa.int64())))
        rejects = [(src, r + rows, None if ln is None else ln + lines, *rest) for src, r, ln, *rest in self.rejects]
        return replace(self, candidates=cand, rejects=rejects)


@dataclass
class RangeResult:
    """A RangeTask's results: its batches and the stats of the range (rows, lines, blank
    lines, bytes; jsonl's field_seen / first_keys for the whole-file check)."""

    task: RangeTask
    stats: FileStats
    results: list[BatchResult]


def reject_json(rec: tuple) -> str:
    source, row, line, reason, detail, text_excerpt = rec
    return json.dumps({"file": source, "row": row, "line": line, "reason": reason, "detail": detail,
                       "excerpt": text_excerpt}, ensure_ascii=False)


class BatchProcessor:
    def __init__(self, cfg: PrepareConfig):
        self.cfg = cfg
        self.cleaner = Cleaner(cfg.clean)
        self.fingerprinter = Fingerprinter(cfg.dedup)
        self.schema = candidate_schema(cfg.read.keep_fields)
        self.contamination = None
        if cfg.exclude.files:
            from workbench.corpus.exclude import Contamination

            eval_cleaner = Cleaner(cfg.clean)  # the corpus's cleaning, its own counts
            self.contamination = Contamination(cfg.exclude.files, cfg.exclude.text_fields, cfg.exclude.ngram,
                                               lambda t: eval_cleaner.clean(t)[0])

    def process(self, batch: Batch) -> BatchResult:
        cfg, cleaner = self.cfg, self.cleaner
        cleaner.counts = Counter()
        reasons: Counter[str] = Counter()
        rejects: list[tuple] = []
        cols: dict[str, list] = {f.name: [] for f in self.schema}
        keep = cfg.read.keep_fields

        def reject(row, line, reason, detail, text):
            reasons[reason] += 1
            rejects.append((batch.source, row, line, reason, detail, excerpt(text)))  # not the whole text

        for row, line, raw, bad, detail, kept in batch.rows:
            if bad:
                reject(row, line, bad, detail, raw)
                continue
            text, reason = cleaner.clean(raw)
            if reason:
                reject(row, line, reason, _DETAIL[reason](len(text), cfg.clean), raw)
                continue
            if self.contamination is not None:
                hit = self.contamination.match(text)
                if hit is not None:
                    reject(row, line, "eval_overlap", f"shares text with evaluation data {hit} (prepare.exclude)", raw)
                    continue
            cols["text"].append(text)
            cols["source"].append(batch.source)
            cols["row"].append(row)
            cols["line"].append(line)
            cols["file_idx"].append(batch.file_idx)
            for k, v in zip(keep, kept):
                cols[k].append(keep_value(v))
        cols["split"] = split_indices(cols["text"], cfg.seed, cfg.split.valid_fraction, cfg.split.test_fraction)
        exact, sig, bands = self.fingerprinter.batch(cols["text"])
        return BatchResult(batch.file_idx, len(batch.rows), rejects, reasons,
                           pa.RecordBatch.from_pydict(cols, schema=self.schema), exact, sig, bands,
                           cleaner.counts)

    def process_range(self, task: RangeTask) -> RangeResult:
        """Read one byte range and process its rows in batches of `batch_rows`."""
        stats, rows = read_range(Path(task.path), self.cfg.read, task.encoding, task.bom, task.start, task.end)
        keep = self.cfg.read.keep_fields
        results, buf = [], []
        for r in rows:
            buf.append((r.row, r.line, r.text, r.reject, r.detail, [r.fields.get(k) for k in keep]))
            if len(buf) >= self.cfg.batch_rows:
                results.append(self.process(Batch(task.file_idx, task.path, buf)))
                buf = []
        if buf:
            results.append(self.process(Batch(task.file_idx, task.path, buf)))
        return RangeResult(task, stats, results)

    def run(self, task: Batch | RangeTask) -> BatchResult | RangeResult:
        return self.process_range(task) if isinstance(task, RangeTask) else self.process(task)


# ---------------------------------------------------------------- running the batches
_WORKER: BatchProcessor | None = None
_WORKER_CFG: dict | None = None  # the config _WORKER was built from (Dask workers)


def _init_worker(cfg_json: dict) -> None:
    global _WORKER
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = BatchProcessor(PrepareConfig.model_validate(cfg_json))


def _work(task: Batch | RangeTask) -> BatchResult | RangeResult:
    return _WORKER.run(task)


def _process_remote(cfg_json: dict, batch: Batch) -> BatchResult:
    """Dask task: one processor per worker process, built on its first batch."""
    global _WORKER_CFG
    if _WORKER is None or _WORKER_CFG != cfg_json:
        _init_worker(cfg_json)
        _WORKER_CFG = cfg_json
    return _WORKER.run(batch)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# Below this much input, workers=null runs in this process: starting a pool costs more than it saves.
SMALL_INPUT_BYTES = 4 << 20


def effective_workers(cfg: PrepareConfig, input_bytes: int) -> int:
    if cfg.workers:
        return cfg.workers
    return default_workers() if input_bytes >= SMALL_INPUT_BYTES or cfg.engine == "dask" else 1


def ordered_map(cfg: PrepareConfig, batches: Iterable[Batch | RangeTask], workers: int,
                processor: BatchProcessor | None = None) -> Iterator[BatchResult | RangeResult]:
    """`BatchProcessor.run` over `batches`, results in input order, at most a few
    tasks per worker in flight. `processor`: the one to use when workers == 1 (made by
    the caller, which already needed its decontamination index)."""
    if cfg.engine == "dask":
        yield from _dask_map(cfg, batches, workers)
        return
    if workers == 1:
        proc = processor or BatchProcessor(cfg)
        for b in batches:
            yield proc.run(b)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: workers import only what they need, and no thread of this process is forked.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(cfg.model_dump(mode="json"),)) as pool:
        yield from _windowed(lambda b: pool.submit(_work, b), batches, 3 * workers)


def _windowed(submit, batches: Iterable[Batch], window: int) -> Iterator[BatchResult]:
    pending: deque = deque()
    for b in batches:
        pending.append(submit(b))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _dask_map(cfg: PrepareConfig, batches: Iterable[Batch], workers: int) -> Iterator[BatchResult]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:
        from workbench.errors import ConfigError

        raise ConfigError([f"prepare.engine=dask needs dask.distributed ({e}); pip install 'dask[distributed]'"
                           " or use engine=local"]) from None
    import logging

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg_json = cfg.model_dump(mode="json")
    cluster = None
    if cfg.scheduler:
        client = Client(cfg.scheduler, timeout="60s")
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        n = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        yield from _windowed(lambda b: client.submit(_process_remote, cfg_json, b, pure=False), batches, 3 * n)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
