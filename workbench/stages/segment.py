"""segment: prepared text → blocks of token ids with word ids and entity spans.

    workbench segment --config configs/demo.yaml
    workbench segment input=runs/x/prepared model=DIR output=runs/x/segmented

jieba runs here and only here: masking later reads the stored word/entity spans and
never re-segments. Output directory (written atomically):
    dataset/      DatasetDict of blocks: input_ids (uint16 when the vocab fits),
                  word_ids (int16), entity_tags (int8), pair_split (int16)
                  [, next_sentence_label (int8)]  — see workbench/segment/blocks.py
    tokenizer/    the tokenizer that made the ids (save_pretrained), with prepare's
                  character folding installed (workbench/vocab/normalize.py)
    manifest.json tokenizer vocab hash, entity types, lexicon stats, counts

Per batch of documents (datasets.map, batched, optionally in worker processes): the
fast tokenizer encodes the texts with character offsets, the segmenter cuts words and
looks up entities, offsets align tokens to words, and the block builder packs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import SegmentConfig
from workbench.corpus.process import default_workers
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, owns_output, load_stage_dataset, save_shards,
                                require_stage_output, sha256_file, verify_model_dir, write_manifest)
from workbench.segment.blocks import BlockBuilder, encode_docs, render_block
from workbench.segment.fast_tokenize import FastChineseEncoder
from workbench.segment.fast_tokenize import supported as fast_supported
from workbench.segment.segmenter import Segmenter
from workbench.vocab.normalize import char_map_for, install_char_map, installed_char_map
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint

log = logging.getLogger("workbench.segment")


def features(vocab_size: int, nsp: bool):
    import datasets

    seq = getattr(datasets, "List", datasets.Sequence)
    f = {
        "input_ids": seq(datasets.Value("uint16" if vocab_size <= 65536 else "uint32")),
        "word_ids": seq(datasets.Value("int16")),
        "entity_tags": seq(datasets.Value("int8")),
        "pair_split": datasets.Value("int16"),
    }
    if nsp:
        f["next_sentence_label"] = datasets.Value("int8")
    return datasets.Features(f)


class _BatchEncoder:
    """The datasets.map function: a batch of documents → a batch of blocks (picklable)."""

    def __init__(self, tokenizer, segmenter: Segmenter, cfg: SegmentConfig):
        self.tokenizer, self.segmenter, self.cfg = tokenizer, segmenter, cfg
        self.type_index = {t: i for i, t in enumerate(segmenter.entity_types)}
        self.fast = FastChineseEncoder(tokenizer) if fast_supported(tokenizer) else None
        self.features = features(len(tokenizer), cfg.pairs == "nsp")
        self.builder = BlockBuilder(cfg.max_seq_length, tokenizer.cls_token_id, tokenizer.sep_token_id,
                                    cfg.pairs, cfg.pack_documents)

    def __call__(self, batch, indices: list[int]):
        """`batch` is a pyarrow Table (the dataset is mapped in arrow format); so is the result:
        block columns are built from flat arrays + offsets without per-block Python objects."""
        import pyarrow as pa

        docs = encode_docs(batch.column("text").to_pylist(), self.tokenizer, self.segmenter, self.type_index, self.fast)
        id_type = self.features["input_ids"].feature.dtype
        if self.cfg.pairs == "none":
            flat = self.builder.pack_flat(docs)
            if flat is None:
                return self.features.arrow_schema.empty_table()
            ids, word, ent, starts = flat
            offsets = pa.array(starts.astype(np.int32))
            return pa.table({
                "input_ids": pa.ListArray.from_arrays(offsets, pa.array(ids.astype(id_type))),
                "word_ids": pa.ListArray.from_arrays(offsets, pa.array(word)),
                "entity_tags": pa.ListArray.from_arrays(offsets, pa.array(ent)),
                "pair_split": pa.array(np.zeros(len(starts) - 1, dtype=np.int16)),
            })
        # Sentence pairs: NSP negatives depend only on the seed and the batch's position,
        # so the output is the same whatever num_proc is.
        rng = np.random.default_rng([self.cfg.seed, indices[0] if indices else 0])
        blocks = self.builder.build(docs, rng)
        return pa.Table.from_pylist(blocks, schema=self.features.arrow_schema)


_FORKED: dict[str, Any] = {}


def _encode_range(job: tuple[int, int, str, str]) -> str:
    """In a forked worker: map rows [start, stop) of the split (inherited, not pickled) in
    batches that start at multiples of batch_size counted from row 0 of the split."""
    start, stop, path, fingerprint = job
    ds, encoder, batch_size = _FORKED["ds"], _FORKED["encoder"], _FORKED["batch_size"]
    part = ds.select(range(start, stop))
    part.with_format("arrow").map(
        lambda batch, idx: encoder(batch, [i + start for i in idx]), batched=True, batch_size=batch_size,
        with_indices=True, remove_columns=ds.column_names, features=encoder.features, cache_file_name=path,
        new_fingerprint=fingerprint, desc=None)
    return path


def _encode_split(ds, encoder, batch_size: int, num_proc: int, cache: Path, name: str, run_key: str):
    """Blocks of one split. Packing works per batch of documents, so the batches are cut at
    the same rows whatever `num_proc` is: row ranges of whole batches (datasets' own
    num_proc shards at row counts that are not multiples of the batch, which changed the
    blocks with the number of processes), mapped in forked workers and concatenated in
    order. The output is identical for any num_proc."""
    import datasets

    n_batches = -(-len(ds) // batch_size)
    procs = min(num_proc, n_batches)
    if procs <= 1:
        return ds.with_format("arrow").map(
            encoder, batched=True, batch_size=batch_size, with_indices=True, remove_columns=ds.column_names,
            features=encoder.features, desc=f"segment {name}", cache_file_name=str(cache / f"{name}.arrow"),
            new_fingerprint=f"{run_key}-{name}").with_format(None)
    import multiprocessing

    per = -(-n_batches // procs)
    jobs = [(i * per * batch_size, min((i + 1) * per * batch_size, len(ds)), str(cache / f"{name}-{i:05d}.arrow"),
             f"{run_key}-{name}-{i}") for i in range(procs) if i * per * batch_size < len(ds)]
    _FORKED.update(ds=ds, encoder=encoder, batch_size=batch_size)
    try:
        # fork: the workers inherit the tokenizer, jieba's dictionary and the memory-mapped split.
        with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
            paths = pool.map(_encode_range, jobs, chunksize=1)
    finally:
        _FORKED.clear()
    log.info("segment %s: %d documents in %d row ranges on %d processes", name, len(ds), len(jobs), len(jobs))
    return datasets.concatenate_datasets([datasets.Dataset.from_file(p) for p in paths])


@owns_output("segment")
def run(cfg: SegmentConfig) -> dict[str, Any]:
    import datasets

    started = time.time()
    in_dir = cfg.input_path()
    upstream = require_stage_output(in_dir, "prepare", needed_by="segment")
    dd = load_stage_dataset(in_dir, needed_by="segment", manifest=upstream)
    n_docs = {name: len(d) for name, d in dd.items()}
    if sum(n_docs.values()) == 0:
        raise StageInputError(f"segment: the prepared dataset in {in_dir} has no documents "
                              f"(prepare kept 0 of {upstream['counts'].get('in', '?')} rows; see {in_dir}/rejects.jsonl)")
    verify_model_dir(cfg.model, needed_by="segment")
    tok = load_tokenizer(cfg.model, needed_by="segment")
    # prepare folded characters (full-width → ASCII ...): the tokenizer saved here, and the
    # model pretrain saves, do the same to raw text (workbench/vocab/normalize.py).
    tok = install_char_map(tok, char_map_for((upstream.get("config") or {}).get("clean")))
    char_map = installed_char_map(tok)
    if cfg.backend == "discovered":  # desensitised id text: words found by `remap`'s discovery
        from workbench.segment.discovery import DiscoveredSegmenter

        if not Path(cfg.words).is_file():
            raise StageInputError(f"segment: words file {cfg.words} not found; run `workbench remap` (it writes "
                                  "vocab_maps/<name>/words.json) or use backend=jieba")
        seg = DiscoveredSegmenter.load(cfg.words)
    else:
        seg = Segmenter(cfg.backend, cfg.lexicons, cfg.entity_pos, cfg.posseg)
    encoder = _BatchEncoder(tok, seg, cfg)
    num_proc = cfg.num_proc or (default_workers() if sum(n_docs.values()) >= 2000 else 1)
    if num_proc > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers + rust threads deadlock
    run_key = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]
    out_dir = cfg.output_path()
    how = ("jieba.posseg cuts and tags entities" if getattr(seg, "posseg", False)
           else f"backend {cfg.backend}, dictionary entities")
    log.info("segment: %s documents from %s → %s (%s, %d entity words, %d lexicon words)",
             f"{sum(n_docs.values()):,}", in_dir, out_dir, how, len(seg.entities), len(seg.lexicon_words))

    with atomic_output_dir(out_dir) as tmp:
        cache = tmp / "_cache"
        cache.mkdir()
        out = {}
        for name, ds in dd.items():
            if len(ds) == 0:  # e.g. train of an all-valid set: map would return it with no columns at all
                out[name] = datasets.Dataset.from_dict({k: [] for k in encoder.features}, features=encoder.features)
                continue
            out[name] = _encode_split(ds, encoder, cfg.batch_size, num_proc, cache, name, run_key)
        result = datasets.DatasetDict(out)
        shards = save_shards(result, tmp / "dataset", cfg.shard_size)
        del result, out
        shutil.rmtree(cache)
        tok.save_pretrained(str(tmp / "tokenizer"))

        saved = datasets.load_from_disk(str(tmp / "dataset"))
        counts = _counts(saved, tok, seg.entity_types, n_docs, tmp / "dataset")
        first = next((d for d in saved.values() if len(d)), None)
        examples = [render_block(first[i], tok, seg.entity_types) for i in range(min(3, len(first)))] if first else []
        del saved, first
        manifest = write_manifest(
            tmp, stage="segment", config=cfg.model_dump(mode="json"),
            inputs=[{"path": str(in_dir), "stage": "prepare", "manifest_sha256": sha256_file(in_dir / MANIFEST)}],
            counts=counts, seed=cfg.seed, started=started, finished=time.time(),
            hash_exclude=tuple(f"dataset/{s}/state.json" for s in dd),
            extra={
                "execution": {"num_proc": num_proc},
                "shards": shards,
                "tokenizer": {"model": cfg.model, "class": type(tok).__name__, "vocab_size": len(tok),
                              "vocab_sha256": vocab_fingerprint(tok), "char_map": char_map},
                "entity_types": seg.entity_types,
                "examples": examples,
                "lexicons": seg.lexicon_stats,
                "block_format": {"entity_tags": "0 = outside, 2k+1 = entity start, 2k+2 = inside, k = index in entity_types",
                                 "word_ids": "-1 on special tokens, word index within the block otherwise"},
            },
        )
    _print_summary(manifest, out_dir)
    return manifest


def _counts(dd, tok, entity_types: list[str], n_docs: dict[str, int], data_dir: Path) -> dict[str, Any]:
    import pyarrow.compute as pc

    tokens = unk = words = 0
    ent = np.zeros(len(entity_types), dtype=np.int64)
    blocks = {}
    for name, d in dd.items():
        blocks[name] = len(d)
        if not len(d):
            continue
        # numpy on the flat values, one Arrow chunk (record batch) at a time: memory stays that
        # of a chunk however large the split (flattening whole columns took 3.5 GiB on 1 GiB of
        # text). pc.equal(uint16 column, python int) would cast to int64 first: numpy is faster.
        for chunk in d.data.column("input_ids").chunks:
            ids = pc.list_flatten(chunk).to_numpy()
            tokens += len(ids)
            unk += int(np.count_nonzero(ids == tok.unk_token_id))
        words += _count_words(d.data.column("word_ids"))
        for chunk in d.data.column("entity_tags").chunks:
            tags = pc.list_flatten(chunk).to_numpy()
            by_tag = np.bincount(tags.view(np.uint8), minlength=2 * len(entity_types) + 1)
            ent += by_tag[1:2 * len(entity_types) + 1:2]  # odd tags start an entity
    disk = sum(p.stat().st_size for p in data_dir.rglob("*.arrow"))
    return {
        "in": sum(n_docs.values()),
        "documents": n_docs,
        "blocks": blocks,
        "tokens": tokens,
        "unk_tokens": unk,
        "unk_rate": round(unk / tokens, 6) if tokens else 0.0,
        "words": words,
        "tokens_per_word": round(tokens / words, 3) if words else 0.0,
        "entities": {t: int(n) for t, n in zip(entity_types, ent)},
        "bytes_per_token": round(disk / tokens, 3) if tokens else 0.0,
    }


def _count_words(word_ids_column) -> int:
    """Words per block = max word id + 1, summed over blocks."""
    import pyarrow.compute as pc

    total = 0
    for chunk in word_ids_column.chunks:
        flat = pc.list_flatten(chunk).to_numpy().astype(np.int64)
        offsets = chunk.offsets.to_numpy()
        starts = offsets[:-1][np.diff(offsets) > 0] - offsets[0]  # non-empty blocks
        if len(flat):
            total += int((np.maximum.reduceat(flat, starts) + 1).sum())
    return total


def _print_summary(m: dict[str, Any], out_dir: Path) -> None:
    c = m["counts"]
    print(f"segment done in {m['wall_time_s']:.1f}s → {out_dir}\n"
          f"  {c['in']:,} documents → " + ", ".join(f"{k} {v:,}" for k, v in c["blocks"].items()) + " blocks; "
          f"{c['tokens']:,} tokens ({c['unk_rate']:.2%} [UNK]), {c['words']:,} words, "
          f"{c['bytes_per_token']:.2f} bytes/token on disk\n"
          "  entities: " + ", ".join(f"{k} {v:,}" for k, v in c["entities"].items()) + "\n"
          "  examples (| word boundary, [..]TYPE entity):\n" + "\n".join(f"    {e}" for e in m["examples"]))
