"""prepare's character folding, carried inside the tokenizer.

`prepare` folds characters before anything is tokenized: full-width letters and digits to
ASCII (``clean.fullwidth``, on by default: ＡＢ１２３ → AB123), optionally full-width
punctuation and “ ” ‘ ’ — – … (``clean.punct_to_ascii``). A vocabulary built from, or a
model pretrained on, that text has never seen the full-width forms. Fine-tuning data,
`predict` and a downstream ``pipeline()`` get raw text, so without the same folding
every full-width digit is [UNK] (People's Daily writes all its numbers that way: 56k
characters in January 1998).

So the context-free, character-by-character part of the cleaning becomes part of the
tokenizer itself: ``Replace`` normalizers (one per character) run before the
BertNormalizer, and are saved in tokenizer.json with every model the workbench writes.
The tokenizers library keeps offsets pointing into the raw text through them, so NER
spans stay right, and plain ``AutoTokenizer`` / ``pipeline()`` apply them with no
workbench code. ``segment`` installs the map of the prepare run it reads and records it in
its manifest; ``pretrain`` installs it into the model it saves; ``finetune`` and
``export`` keep the model's tokenizer as it is.

Not carried (they are not one-character, context-free maps): OpenCC traditional →
simplified, URL/mention/emoji-code removal, whitespace collapsing, PII masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.corpus.clean import char_map as clean_char_map
from workbench.vocab.tokenizer import tokenizer_spec


def char_map_for(clean: dict[str, Any] | None) -> dict[str, str]:
    """The one-character folding of a prepare `clean` config (a dict as in its manifest)."""
    from workbench.config import CleanConfig

    return clean_char_map(CleanConfig.model_validate(clean or {}))


def split_char_map(spec: dict) -> tuple[dict[str, str], dict]:
    """A normalizer spec → (installed character map, the normalizer behind it).

    `install_char_map` writes a Sequence of one-character Replace rules followed by the
    tokenizer's own normalizer; any other spec has no map: ({}, spec)."""
    parts = spec.get("normalizers", []) if spec.get("type") == "Sequence" else []
    rules = parts[:-1]
    if len(parts) < 2 or parts[-1].get("type") == "Replace" or not all(
            n.get("type") == "Replace" and len((n.get("pattern") or {}).get("String") or "") == 1 for n in rules):
        return {}, spec
    return {n["pattern"]["String"]: n["content"] for n in rules}, parts[-1]


def installed_char_map(tok) -> dict[str, str]:
    """The character map installed in `tok` by `install_char_map` ({} if none)."""
    return split_char_map(tokenizer_spec(tok).get("normalizer") or {})[0]


def char_map_in_dir(directory) -> dict[str, str]:
    """The character map in a saved tokenizer's tokenizer.json ({} if none), without loading it."""
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return {}
    return split_char_map(json.loads(path.read_text(encoding="utf-8")).get("normalizer") or {})[0]


def base_normalizer_spec(tok) -> dict:
    """The tokenizer's own normalizer spec (the BertNormalizer), with any map set aside."""
    return split_char_map(tokenizer_spec(tok).get("normalizer") or {})[1]


def install_char_map(tok, mapping: dict[str, str]):
    """`tok` with `mapping` (merged with any map already there) in front of its normalizer.

    Returns a new tokenizer (`tok` itself when there is nothing to add). transformers 5's
    ``BertTokenizer`` rebuilds its normalizer from do_lower_case & co. on every load and
    would drop the rules, so the result is a plain fast tokenizer over the same
    tokenizer.json pipeline (vocab, added tokens, [CLS]/[SEP] template, offsets), saved as
    ``PreTrainedTokenizerFast``: what ``AutoTokenizer`` (transformers 4 and 5) loads as-is.
    """
    from tokenizers import Tokenizer, normalizers

    have = installed_char_map(tok)
    merged = {**have, **mapping}
    if merged == have:
        return tok
    bad = sorted(set(merged) & set("".join(merged.values())))
    if bad:  # the rules run one after another: a target must not be another rule's source
        raise ValueError(f"character map is not one-step: {bad} are both replaced and produced")
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())  # a copy: `tok` stays as it was
    base = backend.normalizer
    if have:  # [rules..., base]: keep the base, the merged rules replace the old ones
        base = base[len(base) - 1]
    rules = [normalizers.Replace(src, dst) for src, dst in sorted(merged.items())]
    backend.normalizer = normalizers.Sequence(rules + ([base] if base is not None else []))
    special = {k: str(getattr(tok, k)) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
               if getattr(tok, k, None) is not None}
    from workbench.vocab.folding_tokenizer import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tok.model_max_length,
                                   model_input_names=list(tok.model_input_names), **special)
