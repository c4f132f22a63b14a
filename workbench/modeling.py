"""Loading a BERT masked-LM checkpoint (hub id or local directory) with clear errors.

Used by every stage that continues a pretrained model (extend-vocab, pretrain). The MLM
head must come from the checkpoint: a BertModel-only checkpoint (no `cls.predictions.*`)
loads "fine" with a randomly initialised head, which silently wastes the first thousands of
steps; that is reported loudly and recorded in the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

from workbench.errors import StageInputError

log = logging.getLogger("workbench.modeling")


def load_masked_lm(model: str, *, needed_by: str):
    """(model, head_missing_keys). Raises StageInputError for a missing path, a directory
    without config.json, or weights that do not load."""
    from transformers import AutoModelForMaskedLM

    path = Path(model)
    local = path.is_dir()
    if not local and (path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise StageInputError(f"{needed_by}: model '{model}' is not a directory; pass model=DIR "
                              "(a saved model: config.json + model.safetensors) or a hub id such as bert-base-chinese")
    if local and not (path / "config.json").is_file():
        raise StageInputError(f"{needed_by}: {path} has no config.json, so it is not a saved model "
                              f"(it has: {', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'})\n"
                              "  fix: pass the directory written by save_pretrained / init-model / pretrain")
    try:
        m, info = AutoModelForMaskedLM.from_pretrained(model, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        where = "the directory" if local else "the hub (no network here?) or a local directory of that name"
        raise StageInputError(f"{needed_by}: cannot load a masked-LM model '{model}' from {where}: "
                              f"{str(e).splitlines()[0]}\n  fix: pass model=DIR with config.json and "
                              "model.safetensors (or pytorch_model.bin) of a BERT") from None
    head_missing = sorted(k for k in info.get("missing_keys", []) if "cls.predictions" in k)
    if head_missing:
        log.warning("%s: model '%s' has no MLM head weights (%s ...): the head was NEWLY INITIALISED, so "
                    "pretraining starts from a random head. Use a checkpoint saved with its MLM head (BertForMaskedLM/"
                    "BertForPreTraining).", needed_by, model, ", ".join(head_missing[:3]))
    return m, head_missing
