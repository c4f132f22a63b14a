"""A linear-chain CRF layer for tagging heads (BERT + CRF).

Why our own: ``pytorch-crf`` is unmaintained since 2019, and the layer is ~100 lines.
A CRF scores a whole tag sequence y for emissions E (B, L, T):

    score(y) = start[y_0] + sum_i E[i, y_i] + sum_{i>0} trans[y_{i-1}, y_i] + end[y_last]

The loss is the negative log-likelihood  log Z - score(gold), with log Z summed over all
T^L sequences by the forward algorithm; ``decode`` finds the best sequence by Viterbi.

Masks (B, L), batch first: positions where mask is False are left out of the chain
entirely - they may be anywhere ([CLS] at 0, padding at the end, non-first word pieces),
the kept positions are chained in order. A sequence with no kept position has loss 0
and decodes to [].

Constraints: ``transition_constraints(tags)`` forbids transitions a BIO/BIOES tag list
never allows (O → I-X, B-X → I-Y, in BIOES B-X → O, ...); forbidden scores are pinned
to -10000 (finite, so a gold sequence that breaks a rule gives a large loss, not inf/NaN),
and Viterbi never picks them.

Saving: a finetune output keeps this layer's tensors in ``crf.safetensors`` beside the
emission model (heads.save_crf); an export puts them, under the same names (``crf.*``),
inside one ``BertCrfForTokenClassification`` (modeling_bert_crf.py, see crf_export.py),
whose forward returns this CRF's max-marginals so that a plain argmax gives ``decode``'s paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workbench.tasks.tags import parse_tag, scheme_of_tag_list

FORBIDDEN = -10000.0

Constraints = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # allowed (T, T) [from, to], start (T,), end (T,)


def transition_constraints(tags: Sequence[str]) -> Constraints:
    """Allowed transitions, start tags and end tags for a BIO or BIOES tag list."""
    scheme = scheme_of_tag_list(tags)
    parsed = [parse_tag(t) for t in tags]  # (prefix, type)
    n = len(tags)
    allowed = torch.ones(n, n, dtype=torch.bool)
    start = torch.ones(n, dtype=torch.bool)
    end = torch.ones(n, dtype=torch.bool)
    for j, (pj, tj) in enumerate(parsed):
        continues = pj in ("I", "E")  # needs a B-/I- of its type right before it
        start[j] = not continues
        if scheme == "bioes":
            end[j] = pj in ("O", "E", "S")
        for i, (pi, ti) in enumerate(parsed):
            open_before = pi in ("B", "I")  # an entity is open after B-/I- (in BIO it may just end)
            if continues:
                allowed[i, j] = open_before and ti == tj
            elif scheme == "bioes":
                allowed[i, j] = not open_before  # O / B- / S- only after O, E-, S-
    return allowed, start, end


class CRF(nn.Module):
    """Linear-chain CRF: ``forward`` gives the NLL, ``decode`` the Viterbi paths."""

    def __init__(self, num_tags: int, constraints: Constraints | None = None):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))  # [from, to]
        self.start_scores = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_scores = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        if constraints is None:
            constraints = (torch.ones(num_tags, num_tags, dtype=torch.bool), torch.ones(num_tags, dtype=torch.bool),
                           torch.ones(num_tags, dtype=torch.bool))
        allowed, start, end = constraints
        if allowed.shape != (num_tags, num_tags) or start.shape != (num_tags,) or end.shape != (num_tags,):
            raise ValueError(f"constraints must be ({num_tags}, {num_tags}), ({num_tags},), ({num_tags},)")
        self.register_buffer("allowed", allowed.clone())
        self.register_buffer("allowed_start", start.clone())
        self.register_buffer("allowed_end", end.clone())

    @classmethod
    def for_tags(cls, tags: Sequence[str], *, constrained: bool = True) -> CRF:
        return cls(len(tags), transition_constraints(tags) if constrained else None)

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Transition (T, T), start (T,), end (T,) scores with forbidden entries pinned."""
        pin = torch.tensor(FORBIDDEN, device=self.transitions.device)
        return (torch.where(self.allowed, self.transitions, pin),
                torch.where(self.allowed_start, self.start_scores, pin),
                torch.where(self.allowed_end, self.end_scores, pin))

    def _left_align(self, emissions: torch.Tensor, mask: torch.Tensor | None, tags: torch.Tensor | None = None):
        """Move kept positions to the front (order kept): (emissions, tags, mask, lengths)."""
        if emissions.dim() != 3 or emissions.size(-1) != self.num_tags:
            raise ValueError(f"emissions must be (batch, length, {self.num_tags}), got {tuple(emissions.shape)}")
        batch, length, _ = emissions.shape
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=emissions.device)
        mask = mask.bool()
        order = torch.sort((~mask).to(torch.int32), dim=1, stable=True).indices  # (B, L) kept first
        emissions = emissions.gather(1, order.unsqueeze(-1).expand(-1, -1, self.num_tags)).float()
        lengths = mask.sum(dim=1)  # (B,)
        mask = torch.arange(length, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
        if tags is not None:
            tags = tags.gather(1, order).masked_fill(~mask, 0).clamp(min=0)  # -100 etc. at dropped positions
        return emissions, tags, mask, lengths

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        """Negative log-likelihood of `tags` (B, L) given `emissions` (B, L, T).

        reduction: 'mean' over sequences, 'sum', 'token_mean' (per kept token) or 'none' (B,).
        """
        em, tags, mask, lengths = self._left_align(emissions, mask, tags)
        trans, start, end = self._scores()
        maskf = mask.float()
        # score of the gold path, (B,)
        gold = start[tags[:, 0]] + (em.gather(2, tags.unsqueeze(-1)).squeeze(-1) * maskf).sum(1)
        gold = gold + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        gold = gold + end[last]
        # log partition by the forward algorithm; alpha[b, t] = log-sum of paths ending in t
        alpha = start + em[:, 0]  # (B, T)
        for i in range(1, em.size(1)):
            step = torch.logsumexp(alpha.unsqueeze(2) + trans, dim=1) + em[:, i]  # (B, T)
            alpha = torch.where(mask[:, i : i + 1], step, alpha)
        log_z = torch.logsumexp(alpha + end, dim=1)  # (B,)
        nll = torch.where(lengths > 0, log_z - gold, torch.zeros_like(gold))
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        if reduction == "token_mean":
            return nll.sum() / lengths.sum().clamp(min=1)
        raise ValueError(f"reduction must be mean, sum, token_mean or none, not '{reduction}'")

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The best tag sequence of each item, one tag per KEPT position (length = mask.sum())."""
        em, _, mask, lengths = self._left_align(emissions, mask)
        trans, start, end = self._scores()
        score = start + em[:, 0]  # (B, T) best score of a path ending in each tag
        history = []  # per step i >= 1: (B, T) best previous tag
        for i in range(1, em.size(1)):
            best, prev = (score.unsqueeze(2) + trans).max(dim=1)  # over the previous tag
            history.append(prev)
            score = torch.where(mask[:, i : i + 1], best + em[:, i], score)
        last = (score + end).argmax(dim=1).tolist()
        hist = torch.stack(history).tolist() if history else []  # (L-1, B, T)
        paths = []
        for b, n in enumerate(lengths.tolist()):
            if n == 0:
                paths.append([])
                continue
            path = [last[b]]
            for i in range(n - 1, 0, -1):
                path.append(hist[i - 1][b][path[-1]])
            paths.append(path[::-1])
        return paths
