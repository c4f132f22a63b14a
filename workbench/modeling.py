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


def check_model_path(model: str, *, needed_by: str) -> bool:
    """Whether `model` is a local directory (else a hub id). Raises StageInputError for a
    path that does not exist or a directory without config.json, before transformers tries
    the hub with it."""
    path = Path(model)
    local = path.is_dir()
    if not local and (path.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise StageInputError(f"{needed_by}: model '{model}' is not a directory; pass model=DIR "
                              "(a saved model: config.json + model.safetensors) or a hub id such as bert-base-chinese")
    if local and not (path / "config.json").is_file():
        raise StageInputError(f"{needed_by}: {path} has no config.json, so it is not a saved model "
                              f"(it has: {', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'})\n"
                              "  fix: pass the directory written by save_pretrained / init-model / pretrain / finetune")
    return local


def load_masked_lm(model: str, *, needed_by: str):
    """(model, head_missing_keys). Raises StageInputError for a missing path, a directory
    without config.json, or weights that do not load."""
    from transformers import AutoModelForMaskedLM

    local = check_model_path(model, needed_by=needed_by)
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


def _sparse_head_class():
    """BertForMaskedLM whose forward, given labels, runs the MLM head only at labelled positions."""
    import torch
    from transformers import BertForMaskedLM
    from transformers.modeling_outputs import MaskedLMOutput

    class BertForMaskedLMSparseHead(BertForMaskedLM):
        """Same parameters and loss as BertForMaskedLM; cheaper forward when `labels` is given.

        BERT's MLM head (dense H x H + LayerNorm + decoder H x V, V = 21,128) is the largest
        single matmul of bert-base at seq 128 and runs on every position, though only the
        ~15% labelled ones enter the loss. Here the encoder output is gathered at
        labels != -100 first: logits are [N, V] for the N labelled tokens (row-major over the
        batch), not [B, L, V]. The loss is the same mean cross-entropy over those tokens.
        Without labels (inference, fill-mask) it is the plain forward."""

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, labels=None, **kwargs):
            if labels is None or not self.training:
                return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                       token_type_ids=token_type_ids, position_ids=position_ids,
                                       inputs_embeds=inputs_embeds, labels=labels, **kwargs)
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)[0]
            labelled = labels != -100                      # [B, L]
            logits = self.cls(hidden[labelled])             # [N, V]
            if logits.shape[0] == 0:  # no labelled token in the batch: zero loss, graph kept
                loss = logits.sum() + hidden.sum() * 0.0
            else:
                loss = torch.nn.functional.cross_entropy(logits.float(), labels[labelled])
            return MaskedLMOutput(loss=loss, logits=logits)

    return BertForMaskedLMSparseHead


def set_sparse_mlm_head(model, on: bool) -> None:
    """Switch a BertForMaskedLM between the plain class and the sparse-head subclass in place
    (no weights change: the subclass adds only a forward). Switched back before saving, so
    the checkpoint's config names BertForMaskedLM and loads anywhere."""
    from transformers import BertForMaskedLM

    if not isinstance(model, BertForMaskedLM):
        if on:
            log.warning("sparse MLM head: %s is not a BertForMaskedLM; using its own forward", type(model).__name__)
        return
    model.__class__ = _sparse_head_class() if on else BertForMaskedLM


def cap_model_max_length(tok, config) -> None:
    """Set the tokenizer's model_max_length to the model's position embeddings when it is
    unset (BERT vocab.txt tokenizers come with 1e30), so a plain pipeline(..., truncation=True)
    cuts long texts instead of failing past position 512."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and (tok.model_max_length is None or tok.model_max_length > positions):
        tok.model_max_length = positions
