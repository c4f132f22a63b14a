"""remap: a desensitised id corpus → an id → vocabulary-row map and a tokenizer that reads ids.

    workbench remap --config configs/gaiic2021.yaml
    workbench remap input=[train.csv,test.csv] name=gaiic target=DIR_OR_VOCAB_TXT strategy=frequency
    workbench remap input=test.csv map=vocab_maps/gaiic name=gaiic_test   # check another corpus against a map
    workbench remap input=runs/x/desensitised/pairs.tsv text_column=text_a text_columns=[text_b] strategy=scratch

Why: pretrained Chinese BERT has a row per character, a desensitised corpus an id per
hidden character. Giving each id a row (by frequency rank, at random, or in a new vocab)
lets continued pretraining start from the pretrained weights unchanged; the rows are an
initialisation only, never an attempt to recover the hidden text
(workbench/vocab/remap.py explains the strategies).

Only the id columns (`text_column`, `text_columns`: e.g. text_a and text_b of a sentence
pair) are counted; labels and other columns never are. When an input file is the output
of `workbench desensitise`, its manifest says which columns hold ids, and remap refuses a
configuration that would count another column or leave an id column out.

Output `vocab_maps/<name>/` (written atomically):
    vocab.txt, tokenizer.json, tokenizer_config.json
                 the target's rows with the ids (as strings) in the mapped rows: plain
                 `BertTokenizerFast.from_pretrained` on "623 328 538" gives the mapped rows,
                 an unmapped id gives [UNK]; pass this directory as `model=` to segment
    config.json, *.safetensors  (target is a model directory and copy_weights) the
                 unchanged weights, hard-linked: the directory is a complete model
    map.json     id → {row, token (the target's token on that row), count}, special ids
    stats.json   coverage (share of the token mass with a row), [UNK] rate, ids mapped
    words.json   (discovery.enabled) discovered words for whole-word masking of id text
    manifest.json
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import RemapConfig
from workbench.corpus.id_corpus import count_ids, read_id_corpus
from workbench.errors import InputError, StageInputError
from workbench.manifest import MANIFEST, atomic_output_dir, owns_output, require_stage_output, sha256_file, write_manifest
from workbench.vocab import remap as rm
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint

_WEIGHT_FILES = ("config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin")


def _target_tokens(target: str) -> list[str]:
    tok = load_tokenizer(target, needed_by="remap")
    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in items] != list(range(len(items))):
        raise StageInputError(f"remap: the ids of the target tokenizer '{target}' are not contiguous 0..n-1")
    return [t for t, _ in items]


def _build_map(cfg: RemapConfig, counts: np.ndarray) -> tuple[list[str], list[str], dict[int, int], dict[int, str]]:
    """(target tokens, output rows, id → row, special ids) for a new map."""
    specials = dict(cfg.special_ids)
    ids = rm.ranked_ids(counts, cfg.min_count, set(specials))
    if cfg.strategy == "scratch":
        tokens, mapping = rm.scratch_tokens(ids, specials)
    else:
        tokens = _target_tokens(cfg.target)
        missing = [n for n in specials.values() if n not in tokens]
        if missing:
            raise StageInputError(f"remap: the target '{cfg.target}' has no {missing} token for special_ids")
        if cfg.strategy == "frequency":
            mapping = rm.frequency_assignment(ids, tokens, rm.reference_char_counts(cfg.reference))
        else:
            mapping = rm.random_assignment(ids, tokens, cfg.seed)
    return tokens, rm.id_vocab_rows(tokens, mapping, specials), mapping, specials


def _reuse_map(cfg: RemapConfig) -> tuple[list[str], list[str], dict[int, int], dict[int, str], dict]:
    src = Path(cfg.map)
    upstream = require_stage_output(src, "remap", needed_by="remap")
    mapping, specials = rm.read_map(src / "map.json")
    rows = (src / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    data = json.loads((src / "map.json").read_text(encoding="utf-8"))
    tokens = list(rows)
    for i, v in data["ids"].items():
        tokens[v["row"]] = v["token"]
    return tokens, rows, mapping, specials, upstream


def _check_coverage(cfg: RemapConfig, stats: rm.RemapStats, mapping: dict[int, int]) -> None:
    if stats.unk_rate <= cfg.max_unk_rate:
        return
    top = ", ".join(f"{i} (x{c})" for i, c in stats.top_unmapped[:8])
    if cfg.map:
        why = f"the map in {cfg.map} was made on another corpus"
        fix = ("remap the corpora together (input=[train, test, ...]) and reuse that map, "
               f"or raise max_unk_rate (now {cfg.max_unk_rate})")
    elif cfg.strategy == "scratch" or cfg.min_count > 1:
        why = f"ids seen fewer than min_count={cfg.min_count} times get no row"
        fix = f"lower min_count, or raise max_unk_rate (now {cfg.max_unk_rate})"
    else:
        why = f"the target has only {len(mapping)} CJK/punctuation rows for {stats.distinct_ids} distinct ids"
        fix = f"use strategy=scratch, a target with more rows, or raise max_unk_rate (now {cfg.max_unk_rate})"
    raise InputError(
        ", ".join(cfg.input),
        f"the map does not match the corpus: {stats.unk_ids:,} of {stats.distinct_ids:,} distinct ids "
        f"({stats.unk_tokens:,} of {stats.tokens:,} tokens, {stats.unk_rate:.2%}) have no row and would be [UNK] "
        f"({why}); most frequent: {top}", fix)


def _copy_weights(src: Path, dst: Path, n_rows: int) -> list[str]:
    """Hard-link (or copy) config and weights of a model directory into dst."""
    copied = []
    for name in _WEIGHT_FILES:
        if (src / name).is_file():
            try:
                os.link(src / name, dst / name)
            except OSError:
                shutil.copy2(src / name, dst / name)
            copied.append(name)
    if "config.json" in copied:
        vocab_size = json.loads((dst / "config.json").read_text(encoding="utf-8")).get("vocab_size")
        if vocab_size is not None and vocab_size < n_rows:
            raise StageInputError(f"remap: {src}/config.json has vocab_size={vocab_size} < {n_rows} vocab rows")
    return copied


def _check_id_columns(cfg: RemapConfig) -> None:
    """An input written by `workbench desensitise` records which of its columns hold ids:
    counting any other (a label) or leaving one out (text_b) is refused, naming the fix."""
    from workbench.corpus.id_corpus import detect_format as id_format
    from workbench.manifest import read_manifest

    wanted = cfg.id_columns()
    for p in map(Path, cfg.input):
        try:
            m = read_manifest(p.parent)
        except StageInputError:
            continue
        if not isinstance(m, dict) or m.get("stage") != "desensitise" or not m.get("text_fields"):
            continue
        rec = next((f for f in m.get("corpus_files") or [] if f.get("output") == p.name), None)
        fmt = cfg.format if cfg.format != "auto" else (id_format(p) if p.is_file() else "lines")
        if rec is None or rec.get("format") == "txt" or not m.get("header", True) or fmt in ("lines", "gaiic"):
            continue
        ids = list(m["text_fields"])
        if set(ids) != set(wanted):
            extra = [c for c in wanted if c not in ids]
            left = [c for c in ids if c not in wanted]
            what = "; ".join(x for x in (f"{extra} hold no ids (e.g. labels, in clear)" if extra else "",
                                         f"the id column(s) {left} would not be counted" if left else "") if x)
            raise InputError(p, f"this file was written by `workbench desensitise` with ids in the column(s) {ids}, "
                                f"but remap counts {wanted}: {what}",
                             f"set text_column={ids[0]}" + (f" text_columns=[{','.join(ids[1:])}]" if ids[1:] else ""))


@owns_output("remap")
def run(cfg: RemapConfig) -> dict[str, Any]:
    started = time.time()
    _check_id_columns(cfg)
    counts, corpus = count_ids(cfg.input, cfg.format, text_column=cfg.id_columns(), max_id=cfg.max_id)
    corpus = {**corpus, "id_columns": cfg.id_columns()}
    upstream = None
    if cfg.map:
        tokens, rows, mapping, specials, upstream = _reuse_map(cfg)
    else:
        tokens, rows, mapping, specials = _build_map(cfg, counts)
    stats = rm.remap_stats(counts, mapping, specials)
    _check_coverage(cfg, stats, mapping)
    out_dir = cfg.output_path()

    with atomic_output_dir(out_dir) as tmp:
        tok = rm.build_id_tokenizer(rows, specials)
        rm.save_id_tokenizer(tok, rows, tmp)
        copied = []
        target = Path(cfg.target)
        if cfg.strategy != "scratch" and not cfg.map and cfg.copy_weights and target.is_dir():
            copied = _copy_weights(target, tmp, len(rows))
        tok = load_tokenizer(str(tmp), needed_by="remap")  # what segment/pretrain will load
        if len(tok) != len(rows):
            raise RuntimeError(f"remap: the saved tokenizer has {len(tok)} tokens, expected {len(rows)} (a bug)")
        rm.check_id_tokenizer(tok, mapping, specials)

        map_json = {
            "strategy": "reused" if cfg.map else cfg.strategy,
            "target": None if cfg.strategy == "scratch" else cfg.target,
            "reference": cfg.reference if cfg.strategy == "frequency" else None,
            "note": "rows are an initialisation, not a decipherment of the hidden text",
            "special_ids": {str(i): n for i, n in sorted(specials.items())},
            "ids": {str(i): {"row": r, "token": tokens[r], "count": int(counts[i]) if i < len(counts) else 0}
                    for i, r in sorted(mapping.items())},
        }
        (tmp / "map.json").write_text(json.dumps(map_json, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        stats_json = {**stats.as_dict(), "corpus": corpus, "vocab_size": len(rows)}
        (tmp / "stats.json").write_text(json.dumps(stats_json, indent=1) + "\n", encoding="utf-8")

        n_words = None
        if cfg.discovery.enabled:
            from workbench.segment.discovery import DiscoveredSegmenter

            d = cfg.discovery
            # one sequence per id column (text_a and text_b are two texts: no n-gram spans both)
            docs = [ids for p in cfg.input
                    for doc in read_id_corpus(p, cfg.format, text_column=cfg.id_columns(), max_id=cfg.max_id)
                    for ids in doc.texts]
            seg = DiscoveredSegmenter.from_corpus(docs, method=d.method, max_n=d.max_n, min_count=d.min_count,
                                                  min_pmi=d.min_pmi, min_entropy=d.min_entropy)
            seg.save(tmp / "words.json")
            n_words = len(seg.words)
            example = " | ".join(seg.cut(" ".join(map(str, docs[0][:40])))) if docs else ""

        inputs = [{"path": str(p), "sha256": sha256_file(p)} for p in cfg.input]
        if cfg.map:
            inputs.append({"path": cfg.map, "stage": "remap", "manifest_sha256": sha256_file(Path(cfg.map) / MANIFEST)})
        manifest = write_manifest(
            tmp, stage="remap", config=cfg.model_dump(mode="json"), inputs=inputs,
            counts={**{k: v for k, v in stats_json.items() if k != "top_unmapped"}, "words_discovered": n_words},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"tokenizer": {"class": type(tok).__name__, "vocab_size": len(tok),
                                 "vocab_sha256": vocab_fingerprint(tok)},
                   "weights": copied,
                   **({"discovery_example": example} if n_words is not None else {})},
        )
    print(f"remap done in {manifest['wall_time_s']:.1f}s → {out_dir}\n"
          f"  {stats.distinct_ids:,} distinct ids in {corpus['documents']:,} documents ({stats.tokens:,} tokens); "
          f"{stats.mapped_ids:,} mapped ({map_json['strategy']}), {stats.special_ids} special, "
          f"{stats.unk_ids:,} → [UNK] ({stats.unk_rate:.3%} of tokens)\n"
          f"  vocab {len(rows):,} rows" + (f"; weights linked: {', '.join(copied)}" if copied else "")
          + (f"\n  {n_words:,} words discovered; e.g. {example[:200]}" if n_words is not None else ""))
    return manifest
