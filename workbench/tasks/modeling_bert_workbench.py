"""BERT task models with the encoder-use options of zh-workbench: pooling, a learned layer
mix, bottleneck adapters. Shipped inside every model directory that uses one of them.

This file needs only torch and transformers (no zh-workbench). The parameter names are
those of the stock transformers BERT models (``bert.*``, ``classifier.*``,
``qa_outputs.*``), plus:

  - ``layer_mix.weights`` (L+1,) and ``layer_mix.gamma`` (1,): a learned scalar mix of the
    embeddings and every layer's output (Peters et al. 2018, ELMo):
        mixed = gamma * sum_j softmax(weights)_j * hidden_states[j]        (B, S, H)
    used by the head instead of the last layer;
  - ``bert.encoder.layer.N.output.adapter.{down,up}.*`` (and, for Houlsby adapters,
    ``...attention.output.adapter.*``): bottleneck adapters
        h <- h + up(act(down(h)))          H -> H / reduction -> H
    after the output projection (and its dropout) of the feed-forward block (Pfeiffer et al.
    2021) or of both the attention and the feed-forward blocks (Houlsby et al. 2019), before
    the residual + LayerNorm. The nonlinearity keeps them from being merged into the
    projections, so they stay modules.

The sentence vector of the sequence-classification model (``config.pooling``):
  cls             with no layer mix, BERT's pooler (dense + tanh on [CLS]): the stock head;
                  with the layer mix, the mixed [CLS] vector;
  mean / max      over the attended tokens ([CLS] and [SEP] included) of the last layer
                  (or the mix);
  first_last_avg  the mean over the attended tokens of (first layer + last layer) / 2
                  (hidden_states[1] and hidden_states[-1]; the embeddings are not a layer).
Then dropout and one linear layer, as in ``BertForSequenceClassification``.

Load it in one of these ways (config.json maps the Auto classes to this file):

    from transformers import pipeline
    clf = pipeline("text-classification", model=DIR, trust_remote_code=True)

    # or without trust_remote_code, after reading this file: import it yourself
    import sys; sys.path.insert(0, DIR)
    from modeling_bert_workbench import BertWorkbenchForSequenceClassification
    model = BertWorkbenchForSequenceClassification.from_pretrained(DIR)

Plain ``pipeline(..., model=DIR)`` refuses the directory (its model type ``bert_workbench``
is not built into transformers) rather than load it as a stock BERT and silently drop the
pooling, the mix or the adapters. A QA model (``BertWorkbenchForQuestionAnswering``, a layer
mix and/or adapters; transformers 5 has no question-answering pipeline) is run by the export's
``qa_inference.py``, which loads it with ``AutoModelForQuestionAnswering`` and
``trust_remote_code=True`` because config.json says ``bert_workbench``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers import BertConfig
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import (
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

POOLINGS = ("cls", "mean", "max", "first_last_avg")
ADAPTERS = (None, "houlsby", "pfeiffer")
# AdapterHub's defaults: Pfeiffer (seq_bn) ReLU, Houlsby (double_seq_bn) swish.
ADAPTER_ACTIVATION = {"houlsby": "silu", "pfeiffer": "relu"}


class BertWorkbenchConfig(BertConfig):
    """A BertConfig with the encoder-use options, under its own model type so transformers
    cannot mistake the model for a stock BERT and drop them."""

    model_type = "bert_workbench"

    def __init__(self, pooling: str = "cls", layer_mix: bool = False, adapter: str | None = None,
                 adapter_reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        if adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, not {adapter!r}")
        self.pooling = pooling
        self.layer_mix = bool(layer_mix)
        self.adapter = adapter
        self.adapter_reduction = int(adapter_reduction)


class ScalarMix(nn.Module):
    """gamma * sum_j softmax(weights)_j * h_j over L+1 hidden states (B, S, H)."""

    def __init__(self, num_states: int):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_states))  # softmax(0) = a plain average at the start
        self.gamma = nn.Parameter(torch.ones(1))

    def forward(self, hidden_states) -> torch.Tensor:
        stacked = torch.stack(tuple(hidden_states), dim=0)  # (L+1, B, S, H)
        w = torch.softmax(self.weights.float(), dim=0).to(stacked.dtype)
        return self.gamma.to(stacked.dtype) * torch.einsum("l,lbsh->bsh", w, stacked)


class BottleneckAdapter(nn.Module):
    """h + up(act(down(h))); `up` starts at zero, so a new adapter is the identity."""

    def __init__(self, hidden_size: int, bottleneck: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        self.act = ACT2FN[activation]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class OutputWithAdapter(nn.Module):
    """BertSelfOutput / BertOutput (same parameter names) with an adapter before the residual."""

    def __init__(self, in_features: int, config: BertWorkbenchConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        bottleneck = max(1, config.hidden_size // config.adapter_reduction)
        self.adapter = BottleneckAdapter(config.hidden_size, bottleneck, ADAPTER_ACTIVATION[config.adapter])

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden = self.adapter(self.dropout(self.dense(hidden_states)))
        return self.LayerNorm(hidden + input_tensor)


def install_adapters(bert: BertModel, config: BertWorkbenchConfig) -> None:
    """Replace the output blocks of every layer by ones with an adapter (weights load by name)."""
    if config.adapter is None:
        return
    for layer in bert.encoder.layer:
        layer.output = OutputWithAdapter(config.intermediate_size, config)
        if config.adapter == "houlsby":
            layer.attention.output = OutputWithAdapter(config.hidden_size, config)


class BertWorkbenchPreTrainedModel(BertPreTrainedModel):
    config_class = BertWorkbenchConfig
    config: BertWorkbenchConfig

    def _build_encoder(self, config: BertWorkbenchConfig, *, pooler: bool) -> None:
        """`self.bert` with its adapters, and `self.layer_mix` when the config mixes layers
        (the attribute names are the checkpoint's key prefixes)."""
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=pooler)
        install_adapters(self.bert, config)
        if config.layer_mix:
            self.layer_mix = ScalarMix(config.num_hidden_layers + 1)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ScalarMix):
            init.zeros_(module.weights)
            init.ones_(module.gamma)
        elif isinstance(module, BertWorkbenchPreTrainedModel):
            # The adapters sit inside `self.bert`, a BertModel, whose own _init_weights
            # (stock: normal init) transformers applies to its submodules; the new adapters'
            # `up` is zeroed here, after it (weights loaded from a checkpoint are left alone).
            for sub in module.modules():
                if isinstance(sub, BottleneckAdapter):
                    init.zeros_(sub.up.weight)
                    init.zeros_(sub.up.bias)

    def _encode(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, **kwargs):
        """(BERT outputs with every hidden state, token states for the head (B, S, H))."""
        kwargs.pop("output_hidden_states", None)
        kwargs.pop("return_dict", None)
        outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, output_hidden_states=True,
                            return_dict=True, **kwargs)
        states = self.layer_mix(outputs.hidden_states) if self.config.layer_mix else outputs.last_hidden_state
        return outputs, states


def _mask_of(attention_mask, states: torch.Tensor) -> torch.Tensor:
    if attention_mask is None:
        return torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
    return attention_mask.bool()


def pool(config: BertWorkbenchConfig, outputs, states: torch.Tensor, attention_mask) -> torch.Tensor:
    """(B, H) sentence vectors; see the module docstring."""
    mask = _mask_of(attention_mask, states).unsqueeze(-1)  # (B, S, 1)
    if config.pooling == "cls":
        return states[:, 0] if config.layer_mix else outputs.pooler_output
    if config.pooling == "first_last_avg":
        states = (outputs.hidden_states[1] + outputs.hidden_states[-1]) / 2
    if config.pooling == "max":
        return states.masked_fill(~mask, torch.finfo(states.dtype).min).max(dim=1).values
    return (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class BertWorkbenchForSequenceClassification(BertWorkbenchPreTrainedModel):
    """Sequence classification (single-label, multi-label or regression, as
    ``BertForSequenceClassification``) over the pooled vector of ``config.pooling``."""

    def __init__(self, config: BertWorkbenchConfig):
        super().__init__(config)
        self._build_encoder(config, pooler=config.pooling == "cls" and not config.layer_mix)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        outputs, states = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(pool(self.config, outputs, states, attention_mask)))
        loss = None
        if labels is not None:
            problem = self.config.problem_type
            if problem is None:
                problem = ("regression" if self.num_labels == 1 else "single_label_classification"
                           if labels.dtype in (torch.long, torch.int) else "multi_label_classification")
            if problem == "regression":
                loss = MSELoss()(logits.squeeze(), labels.squeeze().to(logits.dtype))
            elif problem == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class BertWorkbenchForTokenClassification(BertWorkbenchPreTrainedModel):
    """Token classification (``BertForTokenClassification``) over the last layer or the mix."""

    def __init__(self, config: BertWorkbenchConfig):
        super().__init__(config)
        self._build_encoder(config, pooler=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs) -> TokenClassifierOutput:
        _, states = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        logits = self.classifier(self.dropout(states))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
        return TokenClassifierOutput(loss=loss, logits=logits)


class BertWorkbenchForQuestionAnswering(BertWorkbenchPreTrainedModel):
    """Extractive QA (``BertForQuestionAnswering``: start / end logits) over the last layer or the mix."""

    def __init__(self, config: BertWorkbenchConfig):
        super().__init__(config)
        self._build_encoder(config, pooler=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, **kwargs) -> QuestionAnsweringModelOutput:
        _, states = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, **kwargs)
        start_logits, end_logits = self.qa_outputs(states).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.size(1)
            fct = CrossEntropyLoss(ignore_index=ignored)
            loss = (fct(start_logits, start_positions.clamp(0, ignored)) + fct(end_logits, end_positions.clamp(0, ignored))) / 2
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits)
