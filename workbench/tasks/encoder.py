"""How a task uses the pretrained encoder: pooling, a learned layer mix, adapters, what trains.

The options (finetune config), and what each saves:

  option                         what trains                          saved as
  (defaults)                     everything                           stock BertFor<Task>
  freeze_layers=k (top-k)        the top k layers + head              stock
  freeze_encoder (= top-0)       head (+ pooler, mix, adapters)       stock unless another option below
  lora.r>0                       LoRA on the projections + head       stock (LoRA is merged into the weights)
  pooling=mean|max|first_last_avg   (as the other options say)        bert_workbench
  layer_mix                      + the mix's L+1 weights and gamma    bert_workbench
  adapter.kind=houlsby|pfeiffer  adapters + LayerNorms + head         bert_workbench

``bert_workbench`` is ``modeling_bert_workbench.py`` (torch + transformers only), copied into
the model directory with a config.json whose ``auto_map`` points at it: downstream code
loads it with ``trust_remote_code=True`` or by importing the shipped file (its docstring
says how); plain ``pipeline(...)`` refuses it with transformers' custom-code error instead
of silently loading a stock BERT without the pooling / mix / adapters. zh-workbench itself
always builds the classes from its own copy of the file, never from a model directory.

Why not AdapterHub's ``adapters``: 1.3.0 (the latest) pins transformers~=4.57 and does not
import with transformers 5.25 (``HfFolder`` is gone from huggingface_hub 1.x); its models
would also need the package downstream. The two bottleneck adapters are ~20 lines here.
Why adapters are not merged: h + up(act(down(h))) has a nonlinearity between the two
projections, so it is no linear map to fold into the output projection (LoRA's BA is).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import StageInputError

log = logging.getLogger("workbench.tasks")

MODELING_FILE = "modeling_bert_workbench.py"
MODEL_TYPE = "bert_workbench"
NEW_KEYS = ("layer_mix.", "adapter.", "qa_outputs.")  # what a base checkpoint lacks besides the head
# Auto class of each task's model, as named in config.json's auto_map.
_AUTO = {"classification": "AutoModelForSequenceClassification", "pair": "AutoModelForSequenceClassification",
         "multilabel": "AutoModelForSequenceClassification", "tagging": "AutoModelForTokenClassification",
         "qa": "AutoModelForQuestionAnswering"}


@dataclass(frozen=True)
class EncoderOptions:
    """The options that change the model's code (pooling, layer mix, adapters)."""

    pooling: str = "cls"
    layer_mix: bool = False
    adapter: str | None = None  # None | houlsby | pfeiffer
    adapter_reduction: int = 16

    @classmethod
    def from_config(cls, cfg) -> EncoderOptions:
        kind = cfg.adapter.kind
        return cls(cfg.pooling, bool(cfg.layer_mix), None if kind == "none" else kind, cfg.adapter.reduction)

    @property
    def custom(self) -> bool:
        """Whether the model needs ``bert_workbench`` (a stock head cannot express it)."""
        return self.pooling != "cls" or self.layer_mix or self.adapter is not None


def model_class(task: str):
    """The bert_workbench class of a task, from zh-workbench's own copy of the modeling file."""
    from workbench.tasks import modeling_bert_workbench as m

    if task == "tagging":
        return m.BertWorkbenchForTokenClassification
    if task == "qa":
        return m.BertWorkbenchForQuestionAnswering
    return m.BertWorkbenchForSequenceClassification


def is_workbench_model(directory: str | Path) -> bool:
    """True for a directory holding a ``bert_workbench`` model (config.json model_type)."""
    cfg = Path(directory) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE


def load_for_finetune(model: str, task: str, opts: EncoderOptions, *, needed_by: str = "finetune", **kwargs):
    """A bert_workbench model for `task` with `model`'s encoder weights (head, mix and
    adapters new). `kwargs`: num_labels, id2label, label2id, problem_type."""
    from transformers import AutoConfig

    from workbench.tasks.loading import NEW_HEAD_KEYS, UNUSED_PRETRAINING_KEYS, load_complete
    from workbench.tasks.modeling_bert_workbench import BertWorkbenchConfig

    base = AutoConfig.from_pretrained(str(model))
    if base.model_type not in ("bert", MODEL_TYPE):
        raise StageInputError(f"{needed_by}: pooling / layer_mix / adapters need a BERT model; {model} is a "
                              f"'{base.model_type}' model\n  fix: start from a BERT checkpoint, or leave these options "
                              "at their defaults")
    values = base.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map", "pooling", "layer_mix",
                "adapter", "adapter_reduction", "id2label", "label2id", "num_labels", "problem_type"):
        values.pop(key, None)
    config = BertWorkbenchConfig(pooling=opts.pooling, layer_mix=opts.layer_mix, adapter=opts.adapter,
                                 adapter_reduction=opts.adapter_reduction, **values, **kwargs)
    config.auto_map = {"AutoConfig": f"{MODELING_FILE[:-3]}.BertWorkbenchConfig",
                       _AUTO[task]: f"{MODELING_FILE[:-3]}.{model_class(task).__name__}"}
    return load_complete(model_class(task), model, needed_by=needed_by, config=config,
                         allow_missing=NEW_HEAD_KEYS + NEW_KEYS, allow_unexpected=UNUSED_PRETRAINING_KEYS)


def freeze(model, *, freeze_layers: int | None, freeze_encoder: bool, adapter: str | None) -> tuple[int, int]:
    """Set requires_grad for the options; returns (trainable, total) parameter counts.

    - adapters: the encoder is frozen except its adapters and LayerNorms (Houlsby et al.
      train the LayerNorms too); the head, pooler and mix train;
    - freeze_encoder (= freeze_layers 0): embeddings and every layer frozen;
    - freeze_layers k: embeddings and all but the top k layers frozen (with adapters: the top
      k layers train entirely, the rest only through their adapters)."""
    base = getattr(model, model.base_model_prefix)
    if adapter is not None:
        for module in (base.embeddings, base.encoder):
            for name, p in module.named_parameters():
                p.requires_grad_(".adapter." in f".{name}" or "LayerNorm" in name)
    keep = 0 if freeze_encoder else freeze_layers
    if keep is not None:
        layers = base.encoder.layer
        for module in [base.embeddings, *layers[: max(len(layers) - keep, 0)]]:
            for name, p in module.named_parameters():
                if adapter is None or not (".adapter." in f".{name}" or "LayerNorm" in name):
                    p.requires_grad_(False)
        for module in layers[max(len(layers) - keep, 0):]:
            for p in module.parameters():
                p.requires_grad_(True)
    return parameter_counts(model)


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters (a peft model's adapters included)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def ship_modeling_file(directory: str | Path) -> None:
    """Copy modeling_bert_workbench.py beside a saved bert_workbench model (config.json's
    auto_map points at it)."""
    shutil.copy2(Path(__file__).with_name(MODELING_FILE), Path(directory) / MODELING_FILE)


def loading_note(task: str) -> str:
    """The model card's paragraph on how to load a bert_workbench model."""
    cls = model_class(task).__name__
    pipe = {"tagging": "token-classification", "qa": "question-answering"}.get(task, "text-classification")
    return (
        "## Loading (custom head: bert_workbench)\n\n"
        "This model uses a head or encoder option that stock BERT classes do not have (pooling other than "
        "[CLS], a learned layer mix, or bottleneck adapters; see config.json `pooling`, `layer_mix`, `adapter`). "
        f"Its code is `{MODELING_FILE}` in this directory (torch + transformers only). Plain "
        f"`pipeline(\"{pipe}\", model=DIR)` refuses the directory rather than drop them. Load it with\n\n"
        f"```python\nfrom transformers import pipeline\np = pipeline(\"{pipe}\", model=DIR, trust_remote_code=True)\n```\n\n"
        "or, without trust_remote_code, import the file after reading it:\n\n"
        f"```python\nimport sys; sys.path.insert(0, DIR)\nfrom {MODELING_FILE[:-3]} import {cls}\n"
        f"model = {cls}.from_pretrained(DIR)\n```\n"
    )
