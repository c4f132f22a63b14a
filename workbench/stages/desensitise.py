"""desensitise: a Chinese corpus → the same corpus with every character (or word) an integer id.

    workbench desensitise input=corpus.tsv read.keep_fields=[label] output=runs/x/desensitised
    workbench desensitise input=pairs.jsonl read.text_field=text_a text_fields=[text_b] read.keep_fields=[label]
    workbench desensitise --config configs/my.yaml unit=word offset=10

Why: to measure the desensitised-data tools (remap, word discovery, pretraining on ids)
on a corpus whose real text we know, and to hand a corpus to someone who must not read it.

Output directory (written atomically): each input file under its own name, same format
(txt: one id line per document; jsonl: the text keys hold the ids; csv/tsv: the text
columns hold the ids, other kept columns such as labels unchanged, in the header's order),
and manifest.json (counts, which fields are ids and which are in clear, the key file's
path and sha256; never the seed or the key's content).

What is desensitised, what is copied in clear (safe by default):
  - `read.text_field` and every `text_fields` entry (e.g. text_b of a pair) → ids, one key;
  - `public_fields` → copied in clear: the user's statement that they reveal nothing;
  - any other `read.keep_fields` entry → copied in clear only if it holds no letter (CJK,
    Latin, kana, ...) in any row: ids, numeric labels and scores pass; `体育`, `pos` or a
    second sentence stop the stage, naming the file, row, field and the fix.
  - every other column/key of the input is dropped.

The SECRET key `id<TAB>unit` goes to `key_file` (default `<output>.key.tsv`, BESIDE the
output directory) with mode 0600. It must never be copied into exports, model cards or
reports: with it the corpus is readable again. See workbench/corpus/desensitise.py.
Key file safety: it must not be (inside) an input; an existing file there is replaced only
when it is this output's own key (its sha256 is recorded in the output's manifest); the new
key is written to a 0600 temp file beside it and renamed over the old one only AFTER the new
output is in place, so a crash leaves the old output with its old key (or the new output
with its new key: the next run finishes an interrupted key rename).

Flow: pass 1 reads every file, collects the distinct units and checks the kept fields;
the key is drawn (`key_seed`, or a fresh random seed); pass 2 re-reads and writes the id
text. A row the reader cannot use (undecodable, broken quoting) stops the stage: labels
must stay aligned.
"""

from __future__ import annotations

import csv
import json
import logging
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.config import DesensitiseConfig, ReadConfig
from workbench.corpus.desensitise import (
    UnitSplitter,
    build_key,
    install_key,
    key_temp_prefix,
    letters_in,
    write_key_temp,
)
from workbench.corpus.readers import detect_format, expand_inputs, read_file, sniff_encoding
from workbench.errors import InputError, OutputRefusedError, StageInputError
from workbench.manifest import (
    atomic_output_dir,
    claim_output,
    config_inputs,
    hold_lock,
    read_manifest,
    resolved_path,
    sha256_file,
    write_manifest,
)

log = logging.getLogger("workbench.desensitise")


def _rows(path: Path, read: ReadConfig):
    _, rows = read_file(path, read)
    for r in rows:
        if r.reject:
            raise InputError(path, f"row {r.row} cannot be read ({r.reject}: {r.detail})",
                             "fix the row (every row is kept so that labels stay aligned), or check desensitise.read",
                             line=r.line)
        yield r


def _columns(path: Path, cfg: DesensitiseConfig, fmt: str) -> list[str]:
    """Output columns for csv/tsv: the text fields and kept fields, in the input header's order."""
    wanted = [cfg.read.text_field, *cfg.kept_fields()]
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


# --------------------------------------------------------------------------- kept fields
def _check_clear_fields(path: Path, r, fields: list[str]) -> None:
    """A kept field that is neither desensitised nor declared public is copied in clear only
    when it holds no letters (the value itself is never shown: it may be secret text)."""
    for name in fields:
        kind = letters_in(r.fields.get(name))
        if kind:
            raise InputError(
                path, f"row {r.row}: the kept field '{name}' holds {kind}, and would be copied IN CLEAR beside the "
                      "desensitised text (a kept field is copied in clear only when no row holds a letter)",
                f"desensitise it with the text: text_fields=[{name}]; or, if its values reveal nothing (e.g. category "
                f"names), declare it public_fields=[{name}]; or drop it from read.keep_fields", line=r.line)


def _text_values(path: Path, r, text_fields: list[str]) -> list[str | None]:
    """The main text and each extra text field of a row (None: missing / null)."""
    out: list[str | None] = [r.text]
    for name in text_fields:
        v = r.fields.get(name)
        if v is not None and not isinstance(v, str):
            raise InputError(path, f"row {r.row}: the text field '{name}' holds a {type(v).__name__}, not text",
                             f"remove '{name}' from text_fields (numbers and lists are not desensitised), "
                             "or fix the row", line=r.line)
        out.append(v)
    return out


# --------------------------------------------------------------------------- key file
def _check_key_target(key_path: Path, inputs: list[Path]) -> None:
    """The key must not be, or lie inside, an input (the corpus, a lexicon, a config ...),
    and must be a plain file path."""
    k = resolved_path(key_path)
    for inp in inputs:
        src = resolved_path(inp)
        if k == src:
            raise OutputRefusedError(
                f"key_file {key_path} is also an input of this stage ({inp}); writing the key would overwrite it.\n"
                "  fix: choose another key_file= (by default it goes beside the output: <output>.key.tsv)")
        if src in k.parents:
            raise OutputRefusedError(
                f"key_file {key_path} lies inside the input {inp}; the secret key would become part of the input "
                "(a later run would read it as corpus).\n"
                "  fix: choose a key_file= outside every input (default: <output>.key.tsv beside the output)")
    if key_path.is_symlink() or key_path.is_dir():
        raise OutputRefusedError(
            f"key_file {key_path} is {'a symlink' if key_path.is_symlink() else 'a directory'}; the key is written "
            "as a plain file.\n  fix: choose another key_file=")


def _recorded_key(out_dir: Path) -> dict[str, Any]:
    """What the existing output's manifest records about its key ({} if nothing)."""
    try:
        manifest = read_manifest(out_dir) if out_dir.is_dir() else None
    except StageInputError:
        return {}
    if not isinstance(manifest, dict) or manifest.get("stage") != "desensitise":
        return {}
    rec = manifest.get("key_file")
    return rec if isinstance(rec, dict) else {}


def _finish_interrupted_key(key_path: Path, out_dir: Path) -> None:
    """Temp keys beside `key_path` left by a run that died: the one whose sha256 the output's
    manifest records (the output went in, its key did not) is installed; others are removed."""
    if not key_path.parent.is_dir():
        return
    prefix = key_temp_prefix(key_path)
    want = _recorded_key(out_dir).get("sha256")
    for t in sorted(p for p in key_path.parent.iterdir() if p.name.startswith(prefix)):
        if (want and t.is_file() and not t.is_symlink() and sha256_file(t) == want
                and not (key_path.is_file() and sha256_file(key_path) == want)):
            install_key(t, key_path)
            log.warning("desensitise: installed the key of %s at %s (an earlier run stopped after renaming the "
                        "output in, before moving its key into place)", out_dir, key_path)
        else:
            t.unlink(missing_ok=True)
            log.warning("desensitise: removed the temporary key file %s left by an interrupted run", t)


def _own_key(key_path: Path, out_dir: Path) -> str | None:
    """sha256 of the existing key file when it is this output's own key, None when there is
    none; raises OutputRefusedError for any other existing file."""
    if not key_path.exists():
        return None
    rec = _recorded_key(out_dir)
    known = {rec.get("sha256"), rec.get("replaces_sha256")} - {None}
    sha = sha256_file(key_path)
    if sha in known:
        return sha
    why = (f"the manifest of {out_dir} records another key" if known else
           f"{out_dir} is no desensitise output that records its key's sha256" if out_dir.exists() else
           f"the output {out_dir} does not exist, so nothing says the file is its key")
    raise OutputRefusedError(
        f"key_file {key_path} already exists and is not the key of the desensitise output {out_dir} ({why}); "
        "replacing it would destroy it (if it is another output's key, that output could never be read again).\n"
        f"  fix: choose another key_file= (or output=); if {key_path} is an old key you no longer need, "
        "delete or move it yourself")


# --------------------------------------------------------------------------- stage
def run(cfg: DesensitiseConfig) -> dict[str, Any]:
    started = time.time()
    files = expand_inputs(cfg.input)
    out_dir, key_path = cfg.output_path(), cfg.key_path()
    inputs = [*config_inputs(cfg), *files]
    _check_key_target(key_path, inputs)
    with claim_output(out_dir, stage="desensitise", inputs=inputs), hold_lock(key_path, "desensitise"):
        _finish_interrupted_key(key_path, out_dir)
        replaces = _own_key(key_path, out_dir)
        old_key = _recorded_key(out_dir).get("path")
        manifest, rows_in, tokens, n_units = _desensitise(cfg, files, out_dir, key_path, inputs, replaces, started)
    if old_key and resolved_path(old_key) != resolved_path(key_path) and Path(old_key).is_file():
        log.warning("desensitise: the key of the replaced output is still at %s and decodes nothing now; "
                    "delete it (the new key is %s)", old_key, key_path)
    clear = manifest["clear_fields"]
    print(f"desensitise done in {manifest['wall_time_s']:.1f}s → {out_dir}\n"
          f"  {rows_in:,} rows, {tokens:,} {cfg.unit}s, {n_units:,} distinct → ids {cfg.offset}.."
          f"{cfg.offset + n_units - 1}; desensitised: {', '.join(manifest['text_fields'])}"
          + (f"; in clear: {', '.join(clear)}" if clear else "") + "\n"
          f"  SECRET key (mode 0600, keep it out of exports): {key_path}")
    return manifest


def _desensitise(cfg: DesensitiseConfig, files: list[Path], out_dir: Path, key_path: Path, inputs: list[Path],
                 replaces: str | None, started: float) -> tuple[dict[str, Any], int, int, int]:
    split = UnitSplitter(cfg.unit)
    read = cfg.read.model_copy(update={"keep_fields": cfg.kept_fields()})
    text_fields = list(cfg.text_fields)
    checked = [f for f in cfg.read.keep_fields if f not in cfg.text_fields and f not in cfg.public_fields]

    # ---- pass 1: the distinct units, and the kept fields checked. jieba words are also
    # spooled to a temporary file (one JSON list of unit lists a row, one list per text
    # field), so pass 2 reads them instead of running jieba a second time.
    units: set[str] = set()
    rows_in = tokens = 0
    spool = tempfile.TemporaryFile("w+", encoding="utf-8") if cfg.unit == "word" else None
    for path in files:
        for r in _rows(path, read):
            _check_clear_fields(path, r, checked)
            per_field = [split(t) if t is not None else None for t in _text_values(path, r, text_fields)]
            for us in per_field:
                if us:
                    units.update(us)
                    tokens += len(us)
            rows_in += 1
            if spool is not None:
                spool.write(json.dumps(per_field, ensure_ascii=False) + "\n")
    if spool is not None:
        spool.seek(0)

    def units_of(path: Path, r) -> list[list[str] | None]:
        if spool is not None:
            return json.loads(next(spool))
        return [split(t) if t is not None else None for t in _text_values(path, r, text_fields)]

    if not units:
        raise InputError(", ".join(map(str, files)), "the corpus has no text to desensitise",
                         "point input= at the corpus files (and read.text_field at the text column)")
    key = build_key(units, cfg.key_seed if cfg.key_seed is not None else secrets.randbits(63), cfg.offset)
    names = [cfg.read.text_field, *text_fields]
    clear = [f for f in cfg.kept_fields() if f not in text_fields]

    # ---- pass 2: write the id text, file by file, in the input's format
    per_file = []
    tmp_key: Path | None = None
    key_sha = None
    try:
        with atomic_output_dir(out_dir, stage="desensitise", inputs=inputs) as tmp:
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
                    for r in _rows(path, read):
                        ids = {field: (None if us is None else " ".join(str(key[u]) for u in us))
                               for field, us in zip(names, units_of(path, r))}
                        if fmt == "txt":
                            f.write(ids[cfg.read.text_field] + "\n")
                        elif fmt == "jsonl":
                            f.write(json.dumps({cfg.read.text_field: ids[cfg.read.text_field],
                                                **{k: ids.get(k, v) for k, v in r.fields.items()}},
                                               ensure_ascii=False) + "\n")
                        else:
                            values = {k: "" if v is None else v for k, v in r.fields.items()}
                            values.update({k: "" if v is None else v for k, v in ids.items()})
                            w.writerow([values[c] for c in cols])
                        n += 1
                per_file.append({"path": str(path), "output": name, "format": fmt, "rows": n})
            if spool is not None:
                if next(spool, None) is not None:  # pass 2 must have read exactly the rows of pass 1
                    raise RuntimeError("desensitise: the input changed between the two passes; run it again")
                spool.close()
            # The new key goes to a 0600 temp file beside the old one; it replaces the old
            # key only once this output is in place (below), never before.
            tmp_key = write_key_temp(key_path, key)
            key_sha = sha256_file(tmp_key)
            config = cfg.model_dump(mode="json")
            config["key_seed"] = "<secret>" if cfg.key_seed is not None else "<random>"
            manifest = write_manifest(
                tmp, stage="desensitise", config=config,
                inputs=[{"path": p["path"]} for p in per_file],
                counts={"files": len(files), "rows": rows_in, "units": tokens, "distinct_units": len(key),
                        "first_id": cfg.offset, "last_id": cfg.offset + len(key) - 1},
                seed=cfg.seed, started=started, finished=time.time(),
                extra={"unit": cfg.unit, "corpus_files": per_file, "header": cfg.read.header,
                       "text_fields": names, "clear_fields": clear, "public_fields": list(cfg.public_fields),
                       "key_file": {"path": str(key_path), "mode": "0600", "sha256": key_sha,
                                    "replaces_sha256": replaces,
                                    "note": "SECRET: undoes the desensitisation; never copy it into exports, "
                                            "model cards or reports"}},
            )
    except BaseException:
        # The output did not go in: its key must not either (the old key keeps decoding the
        # old output). If it did go in (interrupted right after the rename), keep the temp
        # key: the next run installs it (_finish_interrupted_key).
        if tmp_key is not None and _recorded_key(out_dir).get("sha256") != key_sha:
            tmp_key.unlink(missing_ok=True)
        raise
    try:
        install_key(tmp_key, key_path)
    except BaseException:
        log.error("desensitise: the output %s is in place but its key could not be renamed to %s; it is in %s "
                  "(mode 0600) and the next `workbench desensitise` run with this output installs it",
                  out_dir, key_path, tmp_key)
        raise
    return manifest, rows_in, tokens, len(key)
