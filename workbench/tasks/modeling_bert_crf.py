"""BERT + linear-chain CRF for token classification (NER), as exported by zh-workbench.

This file ships inside every exported CRF model directory and needs only torch and
transformers (no zh-workbench). The model is BERT → dropout → a linear layer giving the
emission scores E (tokens x tags), as in ``BertForTokenClassification`` (same parameter
names), and a CRF on top that scores whole tag sequences y:

    score(y) = start[y_0] + sum_i E[i, y_i] + sum_{i>0} trans[y_{i-1}, y_i] + end[y_last]

with transitions a BIO/BIOES tag list never allows (O → I-X, B-X → I-Y, ...) pinned to
-10000. The model was trained and evaluated by decoding the best sequence (Viterbi); an
argmax over the emission scores alone is a different, worse tagger (invalid sequences,
lost entities). So ``forward`` returns as ``logits`` the CRF's max-marginals:

    logits[b, i, t] = (best score of a path with tag t at token i) - (best path score)

0 on the Viterbi path and < 0 elsewhere, so ``logits.argmax(-1)`` IS the Viterbi path and
a softmax over them is a confidence (how much worse the best path through another tag is).
The chain runs over the real tokens: the attended positions minus the first ([CLS]) and the
last ([SEP]) of each row, as the tokenizer makes them with special tokens (the
``token-classification`` pipeline does). At [CLS], [SEP] and padding, ``logits`` are the
plain emission scores (the pipeline drops those positions).

Load it in one of these ways (config.json maps the Auto classes to this file):

    from transformers import pipeline
    ner = pipeline("token-classification", model=DIR, trust_remote_code=True, aggregation_strategy="simple")

    # or without trust_remote_code, after reading this file: import it yourself
    import sys; sys.path.insert(0, DIR)
    from modeling_bert_crf import BertCrfForTokenClassification
    model = BertCrfForTokenClassification.from_pretrained(DIR)

Plain ``pipeline("token-classification", model=DIR)`` refuses to load the directory (its
model type ``bert_crf`` is not built into transformers): loading it as a plain BERT token
classifier would silently drop the CRF.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.bert.modeling_bert import BertModel, BertPreTrainedModel

FORBIDDEN = -10000.0  # score of a transition the tag scheme never allows (finite: no inf/NaN)


class BertCrfConfig(BertConfig):
    """A BertConfig under its own model type, so that transformers cannot mistake the model
    for a plain ``BertForTokenClassification`` and drop the CRF."""

    model_type = "bert_crf"


class CrfLayer(nn.Module):
    """The CRF's parameters: transitions (T, T) [from, to], start and end scores (T,), and
    the allowed-transition masks as buffers (forbidden entries are pinned to FORBIDDEN)."""

    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_scores = nn.Parameter(torch.zeros(num_tags))
        self.end_scores = nn.Parameter(torch.zeros(num_tags))
        self.register_buffer("allowed", torch.ones(num_tags, num_tags, dtype=torch.bool))
        self.register_buffer("allowed_start", torch.ones(num_tags, dtype=torch.bool))
        self.register_buffer("allowed_end", torch.ones(num_tags, dtype=torch.bool))

    def scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition (T, T), start (T,), end (T,) scores (float32) with forbidden entries pinned."""
        pin = torch.tensor(FORBIDDEN, device=self.transitions.device)
        return (torch.where(self.allowed.bool(), self.transitions.float(), pin),
                torch.where(self.allowed_start.bool(), self.start_scores.float(), pin),
                torch.where(self.allowed_end.bool(), self.end_scores.float(), pin))


def chain_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions the CRF runs over - attended, minus the first ([CLS]) and
    the last ([SEP]) attended position of each row."""
    attended = attention_mask.bool()
    length = attended.size(1)
    idx = torch.arange(length, device=attended.device).unsqueeze(0)
    first = torch.where(attended, idx, length).min(dim=1, keepdim=True).values
    last = torch.where(attended, idx, -1).max(dim=1, keepdim=True).values
    return attended & (idx != first) & (idx != last)


def _left_align(values: torch.Tensor, mask: torch.Tensor):
    """Kept positions moved to the front, order kept: (values, order (B, L), lengths (B,))."""
    order = torch.sort((~mask).to(torch.int32), dim=1, stable=True).indices
    index = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index), order, mask.sum(dim=1)


def max_marginals(emissions: torch.Tensor, mask: torch.Tensor, crf: CrfLayer) -> torch.Tensor:
    """(B, L, T): for each kept position i and tag t, the best score of a path through t at i
    minus the best path score (Viterbi forward + backward); emissions elsewhere."""
    em, order, lengths = _left_align(emissions.float(), mask)
    trans, start, end = crf.scores()
    batch, length, _ = em.shape
    steps = torch.arange(length, device=em.device)
    # alpha[:, i, t]: best score of a path over tokens 0..i ending in t (E at i included)
    alpha = [start + em[:, 0]]
    for i in range(1, length):
        step = (alpha[-1].unsqueeze(2) + trans).max(dim=1).values + em[:, i]
        alpha.append(torch.where((i < lengths).unsqueeze(1), step, alpha[-1]))
    # beta[:, i, t]: best score of the rest of the path after tag t at i (end score included)
    beta = [end.expand(batch, -1)]
    for i in range(length - 2, -1, -1):
        step = (trans.unsqueeze(0) + (em[:, i + 1] + beta[0]).unsqueeze(1)).max(dim=2).values
        beta.insert(0, torch.where((i < lengths - 1).unsqueeze(1), step, end.expand(batch, -1)))
    alpha_t, beta_t = torch.stack(alpha, 1), torch.stack(beta, 1)  # (B, L, T)
    last = (lengths - 1).clamp(min=0)
    best = (alpha_t[torch.arange(batch, device=em.device), last] + end).max(dim=1).values  # (B,)
    marg = alpha_t + beta_t - best.view(batch, 1, 1)
    kept = (steps.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
    out = emissions.float().clone()
    back = order.unsqueeze(2).expand_as(marg)
    out.scatter_(1, back, torch.where(kept, marg, out.gather(1, back)))
    return out.to(emissions.dtype)


def viterbi(emissions: torch.Tensor, mask: torch.Tensor, crf: CrfLayer) -> list[list[int]]:
    """The best tag ids of each row, one per kept position (mask.sum(1) of them)."""
    em, _, lengths = _left_align(emissions.float(), mask)
    trans, start, end = crf.scores()
    score, history = start + em[:, 0], []
    for i in range(1, em.size(1)):
        best, prev = (score.unsqueeze(2) + trans).max(dim=1)
        history.append(prev)
        score = torch.where((i < lengths).unsqueeze(1), best + em[:, i], score)
    last = (score + end).argmax(dim=1).tolist()
    hist = torch.stack(history).tolist() if history else []
    paths = []
    for b, n in enumerate(lengths.tolist()):
        path = [last[b]] if n else []
        for i in range(n - 1, 0, -1):
            path.append(hist[i - 1][b][path[-1]])
        paths.append(path[::-1])
    return paths


def crf_nll(emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, crf: CrfLayer) -> torch.Tensor:
    """Mean over rows of -log p(tags | emissions) over the kept positions (forward algorithm)."""
    em, order, lengths = _left_align(emissions.float(), mask)
    trans, start, end = crf.scores()
    length = em.size(1)
    kept = torch.arange(length, device=em.device).unsqueeze(0) < lengths.unsqueeze(1)
    tags = tags.gather(1, order).masked_fill(~kept, 0).clamp(min=0)
    keptf = kept.float()
    gold = start[tags[:, 0]] + (em.gather(2, tags.unsqueeze(-1)).squeeze(-1) * keptf).sum(1)
    gold = gold + (trans[tags[:, :-1], tags[:, 1:]] * keptf[:, 1:]).sum(1)
    gold = gold + end[tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)]
    alpha = start + em[:, 0]
    for i in range(1, length):
        step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + em[:, i]
        alpha = torch.where(kept[:, i:i + 1], step, alpha)
    log_z = torch.logsumexp(alpha + end, dim=1)
    return torch.where(lengths > 0, log_z - gold, torch.zeros_like(gold)).mean()


class BertCrfForTokenClassification(BertPreTrainedModel):
    """BERT emission scores + CRF; ``logits`` are the CRF max-marginals (argmax = Viterbi)."""

    config_class = BertCrfConfig
    config: BertCrfConfig

    def __init__(self, config: BertCrfConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.crf = CrfLayer(config.num_labels)
        self.post_init()

    def emissions(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, **kwargs) -> torch.Tensor:
        """(B, L, T) emission scores (what a plain BertForTokenClassification would return)."""
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                           position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True, **kwargs)[0]
        return self.classifier(self.dropout(hidden))

    @torch.no_grad()
    def decode(self, input_ids=None, attention_mask=None, **kwargs) -> list[list[int]]:
        """Viterbi tag ids of each row over its real tokens (no [CLS]/[SEP]/padding)."""
        ref = input_ids if input_ids is not None else kwargs["inputs_embeds"][..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        em = self.emissions(input_ids, attention_mask=attention_mask, **kwargs)
        return viterbi(em, chain_mask(attention_mask), self.crf)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs) -> TokenClassifierOutput:
        """``logits``: CRF max-marginals (B, L, T). With ``labels`` (B, L; -100 = not in the
        chain, as for [CLS]/[SEP]/padding), ``loss`` is the CRF negative log-likelihood."""
        ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        kwargs.pop("return_dict", None)
        em = self.emissions(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs)
        loss = None
        if labels is not None:
            loss = crf_nll(em, labels, labels != -100, self.crf)
        return TokenClassifierOutput(loss=loss, logits=max_marginals(em, chain_mask(attention_mask), self.crf))
