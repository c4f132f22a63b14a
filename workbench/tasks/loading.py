"""Loading a model's weights completely, or not at all.

``from_pretrained`` fills any weight the checkpoint lacks with random values and only logs
it ("classifier.weight | MISSING"), and skips weights the model has no place for. For a
model that is served or evaluated that means predictions from a random head with exit code
0. Here every missing / unexpected / mismatched key is an error naming the directory, the
keys and the fix; only the keys a new head legitimately lacks may be listed as allowed
(fine-tuning a masked LM: a new classifier and pooler, the unused MLM head).
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import StageInputError

# Fine-tuning a BERT masked LM / pretraining checkpoint: what a task model may lack or leave.
NEW_HEAD_KEYS = ("classifier.", "bert.pooler.", "pooler.", "crf.")
UNUSED_PRETRAINING_KEYS = ("cls.", "bert.pooler.", "pooler.")


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key.startswith(p) or f".{p}" in f".{key}" for p in prefixes)


def load_complete(auto_cls, model: str | Path, *, needed_by: str, allow_missing: tuple[str, ...] = (),
                  allow_unexpected: tuple[str, ...] = (), **kwargs):
    """``auto_cls.from_pretrained(model, **kwargs)``, raising StageInputError when the
    weights do not load completely (keys missing / unexpected / of another shape, beyond the
    allowed prefixes) or the files cannot be read (truncated safetensors, ...)."""
    try:
        m, info = auto_cls.from_pretrained(str(model), output_loading_info=True, **kwargs)
    except Exception as e:  # SafetensorError (truncated file), OSError, ValueError (size mismatch) ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StageInputError(
            f"{needed_by}: cannot load the model weights in {model}: {type(e).__name__}: {first}\n"
            "  fix: the weights file is damaged or not a model of this kind; re-run the stage that wrote it "
            "(or pass model= a complete save_pretrained directory)") from None
    missing = sorted(k for k in info.get("missing_keys", []) if not _matches(k, allow_missing))
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if not _matches(k, allow_unexpected))
    mismatched = sorted(str(k[0] if isinstance(k, (tuple, list)) else k) for k in info.get("mismatched_keys", []))
    problems = []
    for name, keys in (("missing (would be random)", missing), ("unexpected (ignored)", unexpected),
                       ("of another shape", mismatched)):
        if keys:
            problems.append(f"{len(keys)} weight(s) {name}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
    if problems:
        raise StageInputError(
            f"{needed_by}: the weights in {model} do not fit a {auto_cls.__name__.replace('AutoModelFor', '')} model:\n"
            + "\n".join(f"    - {p}" for p in problems)
            + "\n  fix: point model= at the directory written for this task (a finetune/export output), or re-run "
              "the stage that wrote it; a model whose head does not load is never used with a random head")
    return m
