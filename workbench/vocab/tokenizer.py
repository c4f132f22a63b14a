"""Loading a model's tokenizer safely, from a local directory or a hub id.

transformers 5 has two traps for Chinese BERT vocabularies:
  - ``BertTokenizer(vocab_file="vocab.txt")`` / ``BertTokenizerFast(vocab_file=...)``
    silently build a 5-token vocabulary (every character becomes [UNK]);
  - ``AutoTokenizer.from_pretrained(dir)`` fails on a directory that has only a vocab.txt.
``load_tokenizer`` goes through ``from_pretrained`` (which reads vocab.txt correctly) and
then checks the size it got against vocab.txt and the model's config.json, so a wrong
tokenizer stops the stage instead of training on [UNK]s.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from workbench.errors import StageInputError


def _vocab_lines(directory: Path) -> int | None:
    vocab = directory / "vocab.txt"
    if not vocab.is_file():
        return None
    with open(vocab, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _tokenizer_class(path: Path) -> str | None:
    """tokenizer_config.json's tokenizer_class; "BertTokenizer" for a directory with only a
    vocab.txt; None otherwise."""
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class") or ""
    return "BertTokenizer" if (path / "vocab.txt").is_file() else None


def load_tokenizer(model: str, *, needed_by: str, lengths_handled: bool = False):
    """The fast BERT tokenizer of `model` (a directory, a hub id, or a bare vocab.txt file), size-checked.

    `lengths_handled`: the caller truncates or windows long texts itself (finetune, predict),
    so the saved `model_max_length` (kept for plain pipeline() users) is lifted here; else
    transformers warns on every long text it is merely asked to tokenize."""
    tok = _load_tokenizer(model, needed_by=needed_by)
    if lengths_handled:
        tok.model_max_length = int(1e30)
    return tok


def _load_tokenizer(model: str, *, needed_by: str):
    from transformers import BertTokenizer

    path = Path(model)
    if path.is_file() and path.suffix == ".txt":
        # A bare BERT vocab.txt (e.g. Google's bert-base-chinese vocab): one token a line.
        with open(path, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        tok = BertTokenizer(vocab=vocab)
        if len(tok) != len(vocab):
            raise StageInputError(f"{needed_by}: {path} has duplicate tokens ({len(vocab)} distinct lines, "
                                  f"tokenizer has {len(tok)}); fix the vocab file")
        return tok
    # A missing local-looking path (runs/pretrain) or an uncached hub id while offline fails
    # here at once, instead of after transformers' hub retries (~50 s).
    from workbench.modeling import resolve_model_source

    local = resolve_model_source(model, needed_by=needed_by, what="a saved model with vocab.txt or tokenizer.json")
    try:
        saved_class = _tokenizer_class(path) if local else None
        if saved_class and saved_class.startswith("BertTokenizer"):
            # Not AutoTokenizer: it imports torch (~1.5 s) and fails on a bare vocab.txt dir.
            tok = BertTokenizer.from_pretrained(model)
        elif saved_class == "PreTrainedTokenizerFast":
            # A tokenizer with prepare's character folding (workbench/vocab/normalize.py):
            # loaded as our subclass so that saving it again keeps its class name and vocab.txt.
            from workbench.vocab.folding_tokenizer import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(model)
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(model)
    except OSError as e:
        where = "the directory" if local else "the hub (no network here?) or a local directory of that name"
        raise StageInputError(
            f"{needed_by}: cannot load a tokenizer for model '{model}' from {where}: {str(e).splitlines()[0]}\n"
            "  fix: pass model=DIR, a directory with vocab.txt (or tokenizer.json) and config.json"
        ) from None
    if not getattr(tok, "is_fast", False):
        raise StageInputError(f"{needed_by}: model '{model}' gave a slow tokenizer ({type(tok).__name__}); "
                              "offsets need a fast (tokenizers-backed) one: add tokenizer.json or vocab.txt")
    size = len(tok)
    problems = []
    if local:
        lines = _vocab_lines(path)
        if lines is not None and lines != size:
            problems.append(f"vocab.txt has {lines} lines but the tokenizer has {size} tokens")
        cfg_file = path / "config.json"
        if cfg_file.is_file():
            vocab_size = json.loads(cfg_file.read_text(encoding="utf-8")).get("vocab_size")
            if vocab_size is not None and vocab_size < size:
                problems.append(f"config.json vocab_size={vocab_size} is smaller than the tokenizer ({size} tokens): "
                                "ids beyond the embedding matrix")
    if size < 100:
        problems.append(f"the tokenizer has only {size} tokens (a BERT vocab.txt was probably not read)")
    if problems:
        raise StageInputError(f"{needed_by}: tokenizer/model mismatch for '{model}': " + "; ".join(problems)
                              + "\n  fix: make vocab.txt, tokenizer.json and config.json come from the same model")
    return tok


def tokenizer_spec(tok) -> dict:
    """The fast tokenizer's pipeline as tokenizer.json has it (normalizer, pre_tokenizer, model, ...)."""
    return json.loads(tok.backend_tokenizer.to_str())


def vocab_fingerprint(tok) -> str:
    """sha256 over the (token, id) pairs: later stages refuse data made with another vocab."""
    items = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    h = hashlib.sha256()
    for token, idx in items:
        h.update(f"{idx}\t{token}\n".encode("utf-8"))
    return h.hexdigest()


def unk_report(texts: list[str], tok, top: int = 10) -> dict:
    """How much of `texts` the tokenizer turns into [UNK], and the raw text behind the most
    frequent [UNK]s (from the offsets), e.g. {"tokens": 51234, "unk": 870, "unk_rate": 0.017,
    "top_unk": [["１", 412], ["…", 98], ...]}."""
    from collections import Counter

    unk_id, n_tokens, seen = tok.unk_token_id, 0, Counter()
    for i in range(0, len(texts), 1000):
        batch = texts[i:i + 1000]
        for text, enc in zip(batch, tok.backend_tokenizer.encode_batch(batch, add_special_tokens=False)):
            n_tokens += len(enc.ids)
            seen.update(text[a:b] for t, (a, b) in zip(enc.ids, enc.offsets) if t == unk_id)
    n_unk = sum(seen.values())
    return {"tokens": n_tokens, "unk": n_unk, "unk_rate": round(n_unk / n_tokens, 6) if n_tokens else 0.0,
            "top_unk": [[t, c] for t, c in seen.most_common(top)]}
