"""extend-vocab: a pretrained BERT + the domain's frequent unknown tokens, as a new model dir.

    workbench extend-vocab run=runs/weibo model=bert-base-chinese
    workbench extend-vocab input=runs/x/prepared model=DIR placement=unused_then_resize max_new_tokens=500

Why: Google's vocabulary maps emoji, rare characters and symbols to [UNK] and cuts brand
or product names into pieces; continued pretraining cannot learn what it cannot see. This
stage counts those candidates on the prepared train split, puts the most frequent ones into
the [unusedN] rows (no resize: shapes and all other ids unchanged) and/or appended rows,
initialises each new row from the mean of the embeddings of the pieces the old tokenizer
made of it (workbench/vocab/extend.py says why and how), and writes a plain HF model
directory that `segment` and `pretrain` take as `model=`.

Output directory (atomic):
    config.json, model.safetensors   the model, vocab_size updated when rows were appended
    tokenizer.json, tokenizer_config.json, vocab.txt   the extended tokenizer
    new_tokens.tsv                   token, source, count, row, placement, added_token, old pieces
    manifest.json                    candidates per source, placements, tokens/char and [UNK]
                                     rate before → after (valid split, or train if valid has < 1000 docs), vocab hash
"""

from __future__ import annotations

import logging
import time
from typing import Any

from workbench.config import ExtendVocabConfig
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, load_stage_dataset, owns_output, require_stage_output,
                                sha256_file, verify_model_dir, write_manifest)
from workbench.modeling import cap_model_max_length, load_masked_lm
from workbench.vocab.extend import (
    candidate_tokens, count_candidates, extended_tokenizer, init_rows, place, tokenization_stats, unused_slots,
)
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint

log = logging.getLogger("workbench.extend_vocab")

_BATCH_DOCS = 2048
_STATS_DOCS = 20_000  # tokens/char and [UNK] rate are measured on at most this many documents


@owns_output("extend-vocab")
def run(cfg: ExtendVocabConfig) -> dict[str, Any]:
    from tqdm.auto import tqdm

    started = time.time()
    # 1. Inputs: a prepared corpus, the model and its tokenizer.
    in_dir = cfg.input_path()
    upstream = require_stage_output(in_dir, "prepare", needed_by="extend-vocab")
    dd = load_stage_dataset(in_dir, needed_by="extend-vocab", manifest=upstream)
    if "train" not in dd or len(dd["train"]) == 0:
        raise StageInputError(f"extend-vocab: the prepared dataset in {in_dir} has no train documents to count; "
                              "re-run prepare with more text")
    verify_model_dir(cfg.model, needed_by="extend-vocab")
    tok = load_tokenizer(cfg.model, needed_by="extend-vocab")
    model, head_missing = load_masked_lm(cfg.model, needed_by="extend-vocab")
    if model.get_input_embeddings().weight.shape[0] < len(tok):
        raise StageInputError(f"extend-vocab: model '{cfg.model}' has {model.get_input_embeddings().weight.shape[0]} "
                              f"embedding rows but its tokenizer {len(tok)} tokens; fix the model directory")
    slots = unused_slots(tok)
    if cfg.placement == "unused" and len(slots) <= cfg.keep_unused:
        raise StageInputError(f"extend-vocab: model '{cfg.model}' has {len(slots)} [unusedN] slots and keep_unused="
                              f"{cfg.keep_unused}: no room. fix: placement=resize or unused_then_resize")

    # 2. Count candidates on the train split.
    segmenter, lexicon_words = None, set()
    if "lexicon" in cfg.sources and cfg.lexicons:
        from workbench.segment.segmenter import Segmenter

        segmenter = Segmenter(cfg.backend, cfg.lexicons, {})
        lexicon_words = {w for w, _, _ in segmenter.lexicon_words}
    train = dd["train"]
    cands = None
    with tqdm(total=len(train), desc="extend-vocab: counting", unit="doc", disable=None) as bar:
        for b in train.iter(batch_size=_BATCH_DOCS):
            cands = count_candidates(b["text"], tok, cfg.sources, segmenter, lexicon_words, cands)
            bar.update(len(b["text"]))
    tokens, source_stats = candidate_tokens(cands, tok, cfg.min_count, cfg.min_latin_chars)

    # 3. Rows, tokenizer, weights.
    placed, left_out = place(tokens, tok, cfg.placement, cfg.max_new_tokens, cfg.keep_unused)
    if left_out:
        log.warning("extend-vocab: %d candidates (count >= %d) did not fit (placement=%s, %d free [unusedN] slots, "
                    "max_new_tokens=%d); the most frequent were kept", left_out, cfg.min_count, cfg.placement,
                    max(len(slots) - cfg.keep_unused, 0), cfg.max_new_tokens)
    new_tok, rows = extended_tokenizer(tok, placed)
    init_rows(model, placed, tok.unk_token_id)

    # Before/after figures on held-out text when there is enough of it, else on train.
    sample_split = dd["valid"] if "valid" in dd and len(dd["valid"]) >= 1000 else train
    sample = sample_split.select(range(min(_STATS_DOCS, len(sample_split))))["text"]
    before, after = tokenization_stats(sample, tok), tokenization_stats(sample, new_tok)

    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        cap_model_max_length(new_tok, model.config)
        new_tok.save_pretrained(str(tmp))
        (tmp / "vocab.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
        with open(tmp / "new_tokens.tsv", "w", encoding="utf-8") as f:
            f.write("token\tsource\tcount\trow\tplacement\tadded_token\told_pieces\n")
            for t in placed:
                pieces = " ".join(tok.convert_ids_to_tokens(t.pieces))
                f.write(f"{t.text}\t{t.source}\t{t.count}\t{t.row}\t{t.placement}\t{str(t.added_token).lower()}"
                        f"\t{pieces}\n")
        check = load_tokenizer(str(tmp), needed_by="extend-vocab")  # what segment will load
        if vocab_fingerprint(check) != vocab_fingerprint(new_tok):
            raise RuntimeError("extend-vocab: the saved tokenizer does not reload to the same vocabulary")
        counts = {
            "candidates": sum(s["candidates"] for s in source_stats.values()),
            "added": len(placed),
            "into_unused": sum(t.placement == "unused" for t in placed),
            "appended": sum(t.placement == "appended" for t in placed),
            "added_tokens": sum(t.added_token for t in placed),
            "left_out": left_out,
            "vocab_size_before": len(tok),
            "vocab_size_after": len(new_tok),
        }
        manifest = write_manifest(
            tmp, stage="extend-vocab", config=cfg.model_dump(mode="json"),
            inputs=[{"path": str(in_dir), "stage": "prepare", "manifest_sha256": sha256_file(in_dir / MANIFEST)},
                    {"model": cfg.model}],
            counts=counts, seed=cfg.seed, started=started, finished=time.time(),
            extra={
                "sources": source_stats,
                "tokenization_before": before,
                "tokenization_after": after,
                "top_new_tokens": [{"token": t.text, "source": t.source, "count": t.count, "row": t.row}
                                   for t in placed[:30]],
                "mlm_head_reinitialised": bool(head_missing),
                "tokenizer": {"model": str(out), "base_model": cfg.model, "vocab_size": len(new_tok),
                              "vocab_sha256": vocab_fingerprint(new_tok)},
            },
        )
    _print_summary(manifest, out)
    return manifest


def _print_summary(m: dict[str, Any], out) -> None:
    c, b, a = m["counts"], m["tokenization_before"], m["tokenization_after"]
    top = ", ".join(f"{t['token']}({t['count']})" for t in m["top_new_tokens"][:12])
    print(f"extend-vocab → {out}: {c['added']} new tokens ({c['into_unused']} into [unusedN] rows, "
          f"{c['appended']} appended; {c['added_tokens']} also added tokens), vocab {c['vocab_size_before']:,} → "
          f"{c['vocab_size_after']:,}; {c['left_out']} candidates did not fit\n"
          f"  on {b['chars']:,} chars: [UNK] rate {b['unk_rate']:.3%} → {a['unk_rate']:.3%}, "
          f"tokens/char {b['tokens_per_char']:.4f} → {a['tokens_per_char']:.4f}\n"
          f"  most frequent: {top or '(none)'}")
