"""Loading a BERT masked-LM checkpoint (hub id or local directory) with clear errors.

Used by every stage that continues a pretrained model (extend-vocab, pretrain). The MLM
head must come from the checkpoint: a BertModel-only checkpoint (no `cls.predictions.*`)
loads "fine" with a randomly initialised head, which silently wastes the first thousands of
steps; that is reported loudly and recorded in the manifest.
"""

from __future__ import annotations

import logging
import functools
import os
import re
from pathlib import Path, PurePath

from workbench.errors import StageInputError

log = logging.getLogger("workbench.modeling")

# model= ending like this names a file, never a hub repo (whose ids may hold dots: Qwen2.5-0.5B).
_FILE_SUFFIXES = (".bin", ".safetensors", ".txt", ".json", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack",
                  ".gguf", ".model", ".yaml", ".yml", ".zip", ".tar", ".gz")
_HUB_PROBE_TIMEOUT_S = 5.0


def check_model_path(model: str, *, needed_by: str) -> bool:
    """Whether `model` is a local directory (else a hub id). Raises StageInputError for a
    path that does not exist or a directory without config.json, before transformers tries
    the hub with it; see `resolve_model_source` for what counts as a path."""
    path = Path(model)
    local = resolve_model_source(model, needed_by=needed_by,
                                 what="a saved model: config.json + model.safetensors")
    if local and not (path / "config.json").is_file():
        raise StageInputError(f"{needed_by}: {path} has no config.json, so it is not a saved model "
                              f"(it has: {', '.join(sorted(p.name for p in path.iterdir())[:8]) or 'nothing'})\n"
                              "  fix: pass the directory written by save_pretrained / init-model / pretrain / finetune")
    return local


def resolve_model_source(model: str, *, needed_by: str, what: str) -> bool:
    """True when `model` is a local directory, False for a hub id that can be loaded; else
    StageInputError at once, with no network wait:

    - `model` looks like a local path (see `_local_path_reason`: ./ or / or ~ at the start,
      a backslash, 2+ slashes, a file suffix, or a first component that is a local folder,
      as in runs/pretrain) but does not exist: transformers would take runs/pretrain for a
      hub id and retry the hub for ~50 s before failing with a hub error;
    - a hub id not in the local HF cache while offline (HF_HUB_OFFLINE=1, or one HEAD request
      to the hub, without retries, fails). A cached hub model with the hub unreachable is
      loaded from the cache: the process switches to HF_HUB_OFFLINE (else every file
      transformers checks for waits through the retries).
    `what`: what a valid directory holds, for the messages."""
    path = Path(model)
    if path.is_dir():
        return True
    if path.exists():
        raise StageInputError(f"{needed_by}: model '{model}' is not a directory but a file; pass model=DIR ({what})")
    why, may_be_hub = _local_path_reason(model)
    if why is not None and not (may_be_hub and _hub_cached(model)):
        raise StageInputError(
            f"{needed_by}: model '{model}' is not a directory: {path.absolute()} does not exist ({why}, so it is "
            f"read as a local path, not as a Hugging Face hub id)\n"
            f"  fix: pass model= an existing directory ({what}); a relative path is relative to {Path.cwd()}")
    _check_hub_model(model, needed_by=needed_by, what=what)
    return False


def _local_path_reason(model: str) -> tuple[str | None, bool]:
    """(why `model` must be a local path, or None if it may be a hub id; whether it may still
    be a hub id, when its only path-like trait is a first component that exists locally)."""
    if model.startswith((".", "/", "~")):
        return "it starts like a path", False
    if "\\" in model:
        return "it contains a backslash", False
    if model.endswith(("/", os.sep)):
        return "it ends with a path separator", False
    if re.match(r"[A-Za-z]:", model):
        return "it starts with a drive letter", False
    if model.count("/") > 1:
        return "it has more than one '/', and a hub id is NAME or OWNER/NAME", False
    suffix = PurePath(model).suffix.lower()
    if suffix in _FILE_SUFFIXES:
        return f"it names a {suffix} file", False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return "it is not a valid hub id", False
    first = model.split("/", 1)[0]
    if "/" in model and Path(first).is_dir():
        return f"'{first}' is a local directory", True
    return None, True


def _hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds files of the hub model `repo_id`."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(repo_id, f), str)
                   for f in ("config.json", "tokenizer_config.json", "vocab.txt", "tokenizer.json"))
    except Exception:  # an id the cache layout cannot hold
        return False


@functools.lru_cache(maxsize=None)  # tokenizer and model loads of one stage ask once, not twice
def _hub_unreachable(repo_id: str) -> str | None:
    """None when the hub answers about `repo_id` (even "not found": from_pretrained then says so
    at once), else why not. One HEAD request, no retries, a short timeout."""
    import inspect

    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    kwargs = {"retry_on_errors": False} if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters else {}
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=_HUB_PROBE_TIMEOUT_S, **kwargs)
    except HfHubHTTPError:
        return None
    except Exception as e:  # no DNS, connection refused, timeout, offline mode ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{type(e).__name__}: {first}" if first else type(e).__name__
    return None


def _check_hub_model(model: str, *, needed_by: str, what: str) -> None:
    from huggingface_hub import constants

    cached = _hub_cached(model)
    offline = constants.HF_HUB_OFFLINE
    problem = None if offline else _hub_unreachable(model)
    if cached:
        if problem is not None:
            log.warning("%s: the Hugging Face hub cannot be reached (%s): loading model '%s' from the local HF "
                        "cache only (HF_HUB_OFFLINE=1 from here on in this process)", needed_by, problem, model)
            constants.HF_HUB_OFFLINE = True
        return
    if not offline and problem is None:
        return  # the hub answers: from_pretrained downloads it (or says it does not exist)
    reason = ("HF_HUB_OFFLINE=1 forbids downloading it" if offline
              else f"the hub cannot be reached from here ({problem})")
    raise StageInputError(
        f"{needed_by}: model '{model}' is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and "
        f"{reason}; nor is it a local directory ({Path(model).absolute()} does not exist)\n"
        f"  fix: pass model= a local directory ({what}), e.g. one written by init-model / pretrain / "
        f"save_pretrained; or download the model once where there is network (`hf download {model}`) and copy "
        f"the HF cache here (HF_HOME / HF_HUB_CACHE)")


def _load_with_heads(cls, model: str, *, needed_by: str, what: str, fix: str):
    """`cls.from_pretrained(model)` with its loading info, and the MLM head's missing keys
    (warned about: a new head means pretraining starts from a random one). Raises
    StageInputError for a missing path, a directory without config.json, or weights that do
    not load."""
    local = check_model_path(model, needed_by=needed_by)
    try:
        m, info = cls.from_pretrained(model, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as e:
        where = "the directory" if local else "the hub (no network here?) or a local directory of that name"
        raise StageInputError(f"{needed_by}: cannot load {what} '{model}' from {where}: "
                              f"{str(e).splitlines()[0]}\n  fix: {fix}") from None
    missing = info.get("missing_keys", [])
    head_missing = sorted(k for k in missing if "cls.predictions" in k)
    if head_missing:
        log.warning("%s: model '%s' has no MLM head weights (%s ...): the head was NEWLY INITIALISED, so "
                    "pretraining starts from a random head. Use a checkpoint saved with its MLM head (BertForMaskedLM/"
                    "BertForPreTraining).", needed_by, model, ", ".join(head_missing[:3]))
    return m, head_missing, missing


def load_masked_lm(model: str, *, needed_by: str):
    """(model, head_missing_keys); see `_load_with_heads`."""
    from transformers import AutoModelForMaskedLM

    m, head_missing, _ = _load_with_heads(
        AutoModelForMaskedLM, model, needed_by=needed_by, what="a masked-LM model",
        fix="pass model=DIR with config.json and model.safetensors (or pytorch_model.bin) of a BERT")
    return m, head_missing


def load_masked_lm_with_pair_head(model: str, *, needed_by: str):
    """(BertForPreTraining, head_missing_keys, pair_head_new): the MLM head continued as in
    `load_masked_lm`, plus the sentence-pair head (NSP, reused for SOP). A checkpoint without
    it (every BertForMaskedLM) gets a new one, which is logged, not an error."""
    from transformers import BertForPreTraining

    m, head_missing, missing = _load_with_heads(
        BertForPreTraining, model, needed_by=needed_by, what="a BERT with pretraining heads",
        fix="pass model=DIR with config.json and the weights of a BERT")
    pair_new = any("seq_relationship" in k or "pooler" in k for k in missing)
    if pair_new:
        log.info("%s: model '%s' has no sentence-pair head (or pooler): a new one is trained from scratch", needed_by, model)
    return m, head_missing, pair_new


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
        Without labels (inference, fill-mask) it is the plain forward. Evaluation with labels
        (the Trainer's MLM loss on valid blocks) takes the sparse path too: the same mean loss,
        logits only where they are scored."""

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, labels=None, **kwargs):
            if labels is None:
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
