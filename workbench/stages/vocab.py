"""vocab: prepared text → a BERT-Chinese-style vocab.txt and tokenizer, built from the corpus.

    workbench vocab run=runs/demo
    workbench vocab input=runs/x/prepared size=21128 output=runs/x/vocab

Why: bert-base-chinese comes from the hub; offline (the demo, the tests, air-gapped
machines) a tokenizer laid out like Google's is built from the corpus itself, so every
later stage runs the same code path as with the real model. Pass the output directory
as `model=` to `segment`.

Output directory (written atomically), a tokenizer directory (no config.json: the model
is made by a later stage):
    vocab.txt              one token a line: [PAD] [unused1..N] [UNK] [CLS] [SEP] [MASK],
                           punctuation + ASCII, CJK characters by frequency, WordPiece pieces
    tokenizer.json         the fast tokenizer (BertNormalizer, BertPreTokenizer, WordPiece)
    tokenizer_config.json  BertTokenizer, do_lower_case
    manifest.json          counts: characters seen, CJK characters kept and their coverage of
                           the train text, pieces, vocab size, [UNK] rate on the valid split

Flow: one pass over the train split normalises each text with the tokenizer's own
normaliser, counts characters and writes the non-CJK word runs to a scratch file; the
WordPiece trainer (tokenizers) learns pieces from that file; workbench/vocab/build.py
fills the slots; the result is loaded back through `from_pretrained` and size-checked.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from workbench.config import VocabConfig
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, load_stage_dataset, owns_output, require_stage_output,
                                sha256_file, write_manifest)
from workbench.vocab.build import (
    CJK, CharClasses, assemble, base_tokens, bert_tokenizer, cjk_ranked, piece_slots, reference_tokenizer,
    scan, special_tokens, train_pieces,
)
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint

log = logging.getLogger("workbench.vocab")

_BATCH_DOCS = 2048
# The [UNK] rate is measured on at most this many documents of the valid split (or of
# train when there is no valid split): a rate, not a census.
_UNK_EVAL_DOCS = 50_000


@owns_output("vocab")
def run(cfg: VocabConfig) -> dict[str, Any]:

    started = time.time()
    in_dir = cfg.input_path()
    upstream = require_stage_output(in_dir, "prepare", needed_by="vocab")
    dd = load_stage_dataset(in_dir, needed_by="vocab", manifest=upstream)
    if "train" not in dd or len(dd["train"]) == 0:
        raise StageInputError(f"vocab: the prepared dataset in {in_dir} has no train documents "
                              f"(prepare kept {upstream['counts'].get('kept', '?')} of "
                              f"{upstream['counts'].get('in', '?')} rows; see {in_dir}/rejects.jsonl)")
    train = dd["train"].select_columns(["text"])
    eval_split = "valid" if "valid" in dd and len(dd["valid"]) else "train"
    out_dir = cfg.output_path()
    log.info("vocab: counting %s train documents from %s → %s", f"{len(train):,}", in_dir, out_dir)

    # The tokenizer decides what a character becomes: normalise and classify with the
    # normaliser/pre-tokenizer of a BertTokenizer made with the same options.
    ref = reference_tokenizer(lowercase=cfg.lowercase).backend_tokenizer
    classes = CharClasses(ref.normalizer, ref.pre_tokenizer)
    specials = special_tokens(cfg.unused)

    with atomic_output_dir(out_dir) as tmp:
        work = tmp / "_work"
        work.mkdir()
        words_file = work / "words.txt"
        with open(words_file, "w", encoding="utf-8") as f:
            batches = (b["text"] for b in train.iter(batch_size=_BATCH_DOCS))
            counts = scan(batches, ref.normalizer, classes, f)

        # ---- fill the slots: specials, punctuation + ASCII, CJK by frequency, pieces
        base = base_tokens(counts, classes, lowercase=cfg.lowercase)
        cjk = cjk_ranked(counts, classes, cfg.min_char_count)
        max_pieces = piece_slots(cfg.size, len(specials) + len(base), cfg.wordpiece_share)
        pieces = train_pieces(words_file, max_pieces, counts)
        shutil.rmtree(work)
        tokens, filled = assemble(specials, base, cjk, pieces, size=cfg.size, wordpiece_share=cfg.wordpiece_share)

        # ---- the tokenizer directory: vocab.txt alone → from_pretrained → save_pretrained
        tok = bert_tokenizer(tmp, tokens, lowercase=cfg.lowercase)
        tok.save_pretrained(str(tmp))  # adds tokenizer.json + tokenizer_config.json
        tok = load_tokenizer(str(tmp), needed_by="vocab")  # what later stages will load

        # ---- how well it fits the corpus
        cjk_total = sum(n for c, n in counts.items() if classes.of.get(c) == CJK)
        cjk_covered = sum(counts[c] for c in cjk[: filled["cjk_chars"]])
        unk = _unk_rate(tok, dd[eval_split], eval_split)
        counts_out = {
            "documents": len(train),
            "chars": sum(n for c, n in counts.items() if not c.isspace()),
            "chars_seen": sum(1 for c in counts if not c.isspace()),
            "cjk_chars_seen": sum(1 for c in counts if classes.of.get(c) == CJK),
            "cjk_chars_below_min_count": sum(1 for c, n in counts.items()
                                             if classes.of.get(c) == CJK and n < cfg.min_char_count),
            "specials": filled["specials"],
            "base": filled["base"],
            "cjk_chars": filled["cjk_chars"],
            "pieces": filled["pieces"],
            "pieces_available": filled["pieces_available"],
            "vocab_size": len(tokens),
            "coverage": round(cjk_covered / cjk_total, 6) if cjk_total else 1.0,
            **unk,
        }
        examples = [" ".join(tok.tokenize(t)) for t in dd[eval_split].select(range(min(2, len(dd[eval_split]))))["text"]]
        manifest = write_manifest(
            tmp, stage="vocab", config=cfg.model_dump(mode="json"),
            inputs=[{"path": str(in_dir), "stage": "prepare", "manifest_sha256": sha256_file(in_dir / MANIFEST)}],
            counts=counts_out, seed=cfg.seed, started=started, finished=time.time(),
            extra={
                "tokenizer": {"class": type(tok).__name__, "vocab_size": len(tok), "do_lower_case": cfg.lowercase,
                              "vocab_sha256": vocab_fingerprint(tok)},
                "layout": {"[PAD]": 0, "[unusedN]": f"1..{cfg.unused}" if cfg.unused else "none",
                           **{t: tok.convert_tokens_to_ids(t) for t in specials[-4:]},
                           "base": _span(len(specials), filled["base"]),
                           "cjk_chars": _span(len(specials) + filled["base"], filled["cjk_chars"]),
                           "pieces": _span(len(specials) + filled["base"] + filled["cjk_chars"], filled["pieces"])},
                "examples": [e[:300] for e in examples],
            },
        )
    _print_summary(manifest, out_dir)
    return manifest


def _span(start: int, n: int) -> str:
    return f"{start}..{start + n - 1}" if n else "none"


def _unk_rate(tok, ds, split: str) -> dict[str, Any]:
    """Share of [UNK] among the tokens of (up to _UNK_EVAL_DOCS documents of) `ds`."""
    n_docs = min(len(ds), _UNK_EVAL_DOCS)
    texts = ds.select(range(n_docs)).select_columns(["text"])
    total = unk = 0
    for b in texts.iter(batch_size=_BATCH_DOCS):
        for enc in tok.backend_tokenizer.encode_batch(b["text"], add_special_tokens=False):
            total += len(enc.ids)
            unk += enc.ids.count(tok.unk_token_id)
    return {"unk_eval_split": split, "unk_eval_documents": n_docs,
            "unk_eval_tokens": total, "unk_tokens": unk, "unk_rate": round(unk / total, 6) if total else 0.0}


def _print_summary(m: dict[str, Any], out_dir: Path) -> None:
    c = m["counts"]
    print(f"vocab done in {m['wall_time_s']:.1f}s → {out_dir}\n"
          f"  {c['vocab_size']:,} tokens (size limit {m['config']['size']:,}): {c['specials']} specials + "
          f"{c['base']:,} punctuation/ASCII + {c['cjk_chars']:,} CJK chars + {c['pieces']:,} word pieces\n"
          f"  CJK: {c['cjk_chars']:,} of {c['cjk_chars_seen']:,} seen, covering {c['coverage']:.4%} of their "
          f"occurrences in {c['documents']:,} train documents ({c['chars']:,} chars)\n"
          f"  [UNK]: {c['unk_rate']:.4%} of {c['unk_eval_tokens']:,} tokens in {c['unk_eval_documents']:,} "
          f"{c['unk_eval_split']} documents\n"
          "  examples:\n" + "\n".join(f"    {e}" for e in m["examples"]))
