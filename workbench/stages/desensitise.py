"""desensitise: a Chinese corpus → the same corpus with every character (or word) an integer id.

    workbench desensitise input=corpus.tsv read.keep_fields=[label] output=runs/x/desensitised
    workbench desensitise --config configs/my.yaml unit=word offset=10

Why: to measure the desensitised-data tools (remap, word discovery, pretraining on ids)
on a corpus whose real text we know, and to hand a corpus to someone who must not read it.

Output directory (written atomically): each input file under its own name, same format
(txt: one id line per document; jsonl: the text key holds the ids; csv/tsv: the text
column holds the ids, `read.keep_fields` columns such as labels kept unchanged, in the
header's order), and manifest.json (counts; no seed, no key).
The SECRET key `id<TAB>unit` goes to `key_file` (default `<output>.key.tsv`, BESIDE the
output directory) with mode 0600. It must never be copied into exports, model cards or
reports: with it the corpus is readable again. See workbench/corpus/desensitise.py.

Flow: pass 1 reads every file and collects the distinct units; the key is drawn
(`key_seed`, or a fresh random seed); pass 2 re-reads and writes the id text. A row the
reader cannot use (undecodable, broken quoting) stops the stage: labels must stay aligned.
"""

from __future__ import annotations

import csv
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.config import DesensitiseConfig
from workbench.corpus.desensitise import UnitSplitter, build_key, write_key
from workbench.corpus.readers import detect_format, expand_inputs, read_file, sniff_encoding
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, write_manifest


def _rows(path: Path, cfg: DesensitiseConfig):
    _, rows = read_file(path, cfg.read)
    for r in rows:
        if r.reject:
            raise InputError(path, f"row {r.row} cannot be read ({r.reject}: {r.detail})",
                             "fix the row (every row is kept so that labels stay aligned), or check desensitise.read",
                             line=r.line)
        yield r


def _columns(path: Path, cfg: DesensitiseConfig, fmt: str) -> list[str]:
    """Output columns for csv/tsv: the text and keep_fields, in the input header's order."""
    wanted = [cfg.read.text_field, *cfg.read.keep_fields]
    if not cfg.read.header:
        return wanted
    encoding, bom = sniff_encoding(path, cfg.read.encoding)
    with open(path, encoding=encoding, newline="") as f:
        f.read(1 if bom else 0)
        first = f.readline().rstrip("\r\n")
    header = next(csv.reader([first], delimiter="\t" if fmt == "tsv" else ","))
    return [c for c in header if c in wanted] + [c for c in wanted if c not in header]


def _output_name(path: Path, taken: set[str]) -> str:
    name = path.name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{Path(base).stem}.{k}{Path(base).suffix}"
    taken.add(name)
    return name


def run(cfg: DesensitiseConfig) -> dict[str, Any]:
    started = time.time()
    files = expand_inputs(cfg.input)
    split = UnitSplitter(cfg.unit)
    out_dir, key_path = cfg.output_path(), cfg.key_path()

    # ---- pass 1: the distinct units. jieba words are also spooled to a temporary file (one
    # JSON list a row), so pass 2 reads them instead of running jieba a second time.
    units: set[str] = set()
    rows_in = tokens = 0
    spool = tempfile.TemporaryFile("w+", encoding="utf-8") if cfg.unit == "word" else None
    for path in files:
        for r in _rows(path, cfg):
            us = split(r.text)
            units.update(us)
            rows_in += 1
            tokens += len(us)
            if spool is not None:
                spool.write(json.dumps(us, ensure_ascii=False) + "\n")
    if spool is not None:
        spool.seek(0)

    def units_of(text: str) -> list[str]:
        return json.loads(next(spool)) if spool is not None else split(text)

    if not units:
        raise InputError(", ".join(map(str, files)), "the corpus has no text to desensitise",
                         "point input= at the corpus files (and read.text_field at the text column)")
    key = build_key(units, cfg.key_seed if cfg.key_seed is not None else secrets.randbits(63), cfg.offset)

    # ---- pass 2: write the id text, file by file, in the input's format
    per_file = []
    with atomic_output_dir(out_dir) as tmp:
        taken: set[str] = set()
        for path in files:
            fmt = detect_format(path, cfg.read.format)
            if fmt == "parquet":
                raise InputError(path, "parquet output is not supported by desensitise",
                                 "convert it to jsonl or tsv first")
            name = _output_name(path, taken)
            n = 0
            with open(tmp / name, "w", encoding="utf-8", newline="") as f:
                if fmt in ("csv", "tsv"):
                    cols = _columns(path, cfg, fmt)
                    w = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n",
                                   quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE,
                                   **({"quotechar": None, "escapechar": None} if fmt == "tsv" else {}))
                    if cfg.read.header:
                        w.writerow(cols)
                for r in _rows(path, cfg):
                    ids = " ".join(str(key[u]) for u in units_of(r.text))
                    if fmt == "txt":
                        f.write(ids + "\n")
                    elif fmt == "jsonl":
                        f.write(json.dumps({cfg.read.text_field: ids, **r.fields}, ensure_ascii=False) + "\n")
                    else:
                        values = {cfg.read.text_field: ids, **{k: "" if v is None else v for k, v in r.fields.items()}}
                        w.writerow([values[c] for c in cols])
                    n += 1
            per_file.append({"path": str(path), "output": name, "format": fmt, "rows": n})
        if spool is not None:
            if next(spool, None) is not None:  # pass 2 must have read exactly the rows of pass 1
                raise RuntimeError("desensitise: the input changed between the two passes; run it again")
            spool.close()
        # The key is written only once the output is complete, and outside it.
        write_key(key_path, key)
        config = cfg.model_dump(mode="json")
        config["key_seed"] = "<secret>" if cfg.key_seed is not None else "<random>"
        manifest = write_manifest(
            tmp, stage="desensitise", config=config,
            inputs=[{"path": p["path"]} for p in per_file],
            counts={"files": len(files), "rows": rows_in, "units": tokens, "distinct_units": len(key),
                    "first_id": cfg.offset, "last_id": cfg.offset + len(key) - 1},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"unit": cfg.unit, "files": per_file,
                   "key_file": {"path": str(key_path), "mode": "0600",
                                "note": "SECRET: undoes the desensitisation; never copy it into exports, "
                                        "model cards or reports"}},
        )
    print(f"desensitise done in {manifest['wall_time_s']:.1f}s → {out_dir}\n"
          f"  {rows_in:,} rows, {tokens:,} {cfg.unit}s, {len(key):,} distinct → ids {cfg.offset}.."
          f"{cfg.offset + len(key) - 1}\n"
          f"  SECRET key (mode 0600, keep it out of exports): {key_path}")
    return manifest
