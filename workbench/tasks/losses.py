"""Losses for imbalanced labels: class weights and focal loss, for classification and tagging.

Why: in NER nearly every token is O, and many classification sets have a rare class that
plain cross-entropy learns last (or never, in a short run). Two standard remedies:

  - class weights w_c: each example's loss is multiplied by the weight of its gold class.
    ``balanced`` weights are  n / (C * n_c)  over the train labels (scikit-learn's
    definition: a class seen half as often weighs twice as much); or the user gives them.
  - focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"): with p_y the
    probability of the gold class,   FL = -w_y (1 - p_y)^gamma log p_y,   which shrinks the
    loss of examples the model already gets right, so the rare/hard ones dominate.

Shapes and reductions, so that gamma = 0 gives *exactly* torch's weighted cross-entropy:
  single-label  logits (N, C), labels (N,)          loss = sum_i w_{y_i} fl_i / sum_i w_{y_i}
  tagging       logits (B, L, T), labels (B, L)     the same over positions with label != -100
  multi-label   logits (N, C), multi-hot (N, C)     sigmoid form, mean over all N x C entries:
                -[pw_c y (1-p)^g log p + (1-y) p^g log(1-p)]   (pw = BCE's pos_weight)
With a CRF the loss is the sequence likelihood, to which neither applies; the config
refuses the combination.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from workbench.errors import ConfigError
from workbench.tasks.tags import parse_tag

IGNORE_INDEX = -100


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """n / (C * n_c) for classes with n_c > 0, over the C classes that occur; 0.0 for a class
    with no example (it is never a target, so its weight never counts)."""
    seen = [c for c in counts if c > 0]
    if not seen:
        raise ValueError("no class has any example")
    n, k = sum(seen), len(seen)
    return [n / (k * c) if c > 0 else 0.0 for c in counts]


def pos_weights(positives: Sequence[int], total: int) -> list[float]:
    """Multi-label BCE pos_weight per label: negatives / positives (1.0 for a label never positive)."""
    return [(total - p) / p if p > 0 else 1.0 for p in positives]


def given_weights(given: Mapping[str, float], names: Sequence[str], *, tagging: bool = False) -> list[float]:
    """Weights in the model's output order from a {name: weight} map; unnamed outputs weigh 1.

    Tagging: a key is a tag ("B-PER"), an entity type ("PER": all of its tags) or "O"; a tag
    key wins over its type's key. An unknown key is a ConfigError listing the valid ones."""
    valid = set(names)
    types = {parse_tag(t)[1] for t in names if t != "O"} if tagging else set()
    unknown = sorted(k for k in given if k not in valid and k not in types)
    if unknown:
        hint = f"tags {list(names)} or entity types {sorted(types)}" if tagging else f"labels {list(names)}"
        raise ConfigError([f"class_weights: {unknown} are not among the train {hint}"])
    out = []
    for name in names:
        typ = parse_tag(name)[1] if tagging and name != "O" else None
        out.append(float(given.get(name, given.get(typ, 1.0) if typ else 1.0)))
    return out


def label_counts(task: str, labels: Iterable, num_outputs: int) -> list[int]:
    """Per-output counts of train targets: class ids (N,), tag-id lists (-100 ignored), or
    multi-hot rows (positives per label)."""
    counts = [0] * num_outputs
    if task == "multilabel":
        for row in labels:
            for j, v in enumerate(row):
                counts[j] += int(v > 0.5)
        return counts
    c = Counter()
    for y in labels:
        if isinstance(y, int):
            c[y] += 1
        else:
            c.update(t for t in y if t != IGNORE_INDEX)
    for k, v in c.items():
        counts[k] = v
    return counts


def focal_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, gamma: float = 0.0,
                        weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Weighted focal loss over the last dimension of `logits` (..., C) for integer `labels` (...);
    positions labelled `ignore_index` are left out. gamma 0 = F.cross_entropy(weight=...)."""
    logits = logits.reshape(-1, logits.size(-1)).float()
    labels = labels.reshape(-1)
    keep = labels != ignore_index
    logits, labels = logits[keep], labels[keep]
    if labels.numel() == 0:
        return logits.sum() * 0.0  # keeps the graph (a batch of windows with no label at all)
    logp = F.log_softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)  # (n,) log p_y
    loss = -logp
    if gamma:
        loss = loss * (1.0 - logp.exp()).clamp(min=0.0).pow(gamma)
    w = weight.to(logits.device, torch.float32)[labels] if weight is not None else torch.ones_like(loss)
    return (w * loss).sum() / w.sum().clamp(min=torch.finfo(torch.float32).tiny)


def focal_binary(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 0.0,
                 pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Sigmoid focal loss, mean over all entries; gamma 0 = F.binary_cross_entropy_with_logits(pos_weight=...)."""
    logits, targets = logits.float(), targets.float()
    log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)  # log p, log (1 - p), stable
    pos, neg = -log_p * targets, -log_q * (1.0 - targets)
    if gamma:
        pos = pos * (1.0 - log_p.exp()).pow(gamma)
        neg = neg * log_p.exp().pow(gamma)
    if pos_weight is not None:
        pos = pos * pos_weight.to(logits.device, torch.float32)
    return (pos + neg).mean()


class TaskLoss:
    """The training loss of a task model from its logits: ``loss(logits, labels)``.

    Built by ``for_task`` from the config; ``describe()`` is what the manifest records."""

    def __init__(self, task: str, kind: str, gamma: float, weights: list[float] | None, names: Sequence[str]):
        self.task, self.kind, self.gamma, self.names = task, kind, gamma if kind == "focal" else 0.0, list(names)
        self.weights = torch.tensor(weights, dtype=torch.float32) if weights is not None else None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.task == "multilabel":
            return focal_binary(logits, labels, gamma=self.gamma, pos_weight=self.weights)
        return focal_cross_entropy(logits, labels, gamma=self.gamma, weight=self.weights)

    def describe(self) -> dict:
        out = {"loss": self.kind, "gamma": self.gamma if self.kind == "focal" else None}
        if self.weights is not None:
            key = "pos_weight" if self.task == "multilabel" else "class_weights"
            out[key] = {n: round(float(w), 6) for n, w in zip(self.names, self.weights.tolist())}
        return out

    @classmethod
    def for_task(cls, task: str, loss: str, gamma: float, class_weights, names: Sequence[str],
                 train_labels: Sequence) -> TaskLoss | None:
        """None when the config asks for plain (unweighted) cross-entropy: the model's own loss is used.

        `names`: the model's outputs in id order (labels, or tags for tagging); `train_labels`:
        the train features' labels (class ids, tag-id lists or multi-hot rows)."""
        if loss == "ce" and class_weights == "none":
            return None
        weights = None
        if class_weights == "balanced":
            counts = label_counts(task, train_labels, len(names))
            weights = pos_weights(counts, len(train_labels)) if task == "multilabel" else balanced_weights(counts)
        elif isinstance(class_weights, Mapping):
            weights = given_weights(class_weights, names, tagging=task == "tagging")
        return cls(task, loss, gamma, weights, names)
