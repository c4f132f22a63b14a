"""Label maps: which labels (or entity types) a model predicts, and their ids.

The map is inferred from the train file only, sorted so that the same data always gives
the same ids (numerically when every label is an integer, so "10" comes after "9").
Dev and test are then checked against it: a label the model never saw in train cannot be
predicted, so by default it is an error naming the file and line. Two opt-in policies:
  - ``unknown="map"``: replace it by `map_to` (a train label, e.g. "other");
  - ``unknown="drop"``: drop it, counted. A single-label record is dropped; in a
    multi-label record only that label goes; a tagging entity is removed (its characters
    become O).
For tagging, the map holds entity types; ``tags.tag_list`` expands them to model tags.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from workbench.errors import ConfigError, InputError
from workbench.tasks.data import TaggedRecord, TextRecord, parse_json_line, read_lines

R = TypeVar("R", TextRecord, TaggedRecord)
UNKNOWN_POLICIES = ("error", "map", "drop")


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Distinct labels sorted: as integers when all are integers ('2' < '10'), else as strings."""
    distinct = set(labels)
    if distinct and all(_is_int(x) for x in distinct):
        return sorted(distinct, key=lambda x: (int(x), x))
    return sorted(distinct)


def _is_int(x: str) -> bool:
    try:
        int(x)
        return True
    except ValueError:
        return False


def _labels_in(record: TextRecord | TaggedRecord) -> list[str]:
    if isinstance(record, TaggedRecord):
        return [t for _, _, t in record.spans]
    return list(record.labels)


@dataclass(frozen=True)
class LabelMap:
    """Labels in id order, with how often each occurs in the data it was built from."""

    labels: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"duplicate labels in {list(self.labels)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: str) -> bool:
        return label in self.label2id

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        """As transformers' ``config.id2label`` wants it."""
        return dict(enumerate(self.labels))

    def encode(self, labels: Sequence[str]) -> list[int]:
        lookup = self.label2id
        return [lookup[x] for x in labels]

    def multi_hot(self, labels: Sequence[str]) -> list[float]:
        """(num_labels,) 0/1 vector for a multi-label record."""
        row = [0.0] * len(self.labels)
        for i in self.encode(labels):
            row[i] = 1.0
        return row

    def table(self) -> list[tuple[int, str, int]]:
        """(id, label, count) rows, for reports."""
        return [(i, label, self.counts.get(label, 0)) for i, label in enumerate(self.labels)]

    def to_json(self) -> str:
        return json.dumps({"labels": list(self.labels), "counts": self.counts}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LabelMap:
        obj = json.loads(text)
        return cls(tuple(obj["labels"]), dict(obj.get("counts", {})))


def infer_label_map(train: Sequence[TextRecord | TaggedRecord], *, order: Sequence[str] | None = None) -> LabelMap:
    """The labels (entity types for tagging) of the train records with their counts.

    `order` fixes the ids explicitly (e.g. from a labels.json); a train label missing from
    it is an error, an `order` label missing from train is kept with count 0.
    """
    counts = Counter(label for r in train for label in _labels_in(r))
    if order is None:
        return LabelMap(tuple(sort_labels(counts)), dict(counts))
    extra = sort_labels(set(counts) - set(order))
    if extra:
        first = next(r for r in train if set(_labels_in(r)) & set(extra))
        raise InputError(first.source, f"train labels {extra} are not in the given label list {list(order)}",
                         "add them to the label list, or remove them from train", line=first.line)
    return LabelMap(tuple(order), {label: counts.get(label, 0) for label in order})


def read_label_names(path: str | Path) -> dict[str, str]:
    """label → description from a CLUE-style labels.json (one object per line, e.g.
    ``{"label": "0", "label_desc": "neutral"}``); keys kept in file order."""
    path = Path(path)
    names: dict[str, str] = {}
    for line_no, line in enumerate(read_lines(path), 1):
        if line.strip():
            obj = parse_json_line(path, line_no, line)
            if "label" not in obj:
                raise InputError(path, f"no key 'label' (keys: {list(obj)})", 'write {"label": ..., "label_desc": ...}', line=line_no)
            names[str(obj["label"])] = str(obj.get("label_desc", obj["label"]))
    return names


@dataclass
class LabelCheck:
    """What ``check_labels`` found in one file."""

    path: str
    unknown: dict[str, int] = field(default_factory=dict)  # label → occurrences not in the map
    mapped: int = 0  # occurrences replaced by map_to
    dropped_records: int = 0  # single-label records dropped
    dropped_labels: int = 0  # labels / entities removed from records that were kept

    def unknown_text(self) -> str:
        """'foo×10, bar×2', most frequent first."""
        return ", ".join(f"{k}×{v}" for k, v in sorted(self.unknown.items(), key=lambda kv: (-kv[1], kv[0])))

    def summary(self) -> str:
        if not self.unknown:
            return f"{self.path}: all labels known"
        return (f"{self.path}: labels not in train: {self.unknown_text()}; mapped {self.mapped}, dropped "
                f"{self.dropped_records} record(s) and {self.dropped_labels} label(s)/entities")


def check_labels(records: Sequence[R], label_map: LabelMap, *, unknown: str = "error",
                 map_to: str | None = None, multilabel: bool = False) -> tuple[list[R], LabelCheck]:
    """Records of a dev/test file made consistent with the train label map.

    `unknown`: 'error' (default; InputError at the first unknown label, with the count of
    all of them), 'map' (to `map_to`, which must be a train label) or 'drop' (see the
    module docstring). Returns the records to use and what was done, for the manifest.
    """
    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError([f"unknown_labels: '{unknown}' is not one of {UNKNOWN_POLICIES}"])
    if unknown == "map" and map_to not in label_map:
        raise ConfigError([f"unknown_label_to: '{map_to}' is not a train label ({list(label_map.labels)}); "
                           + "unknown labels can only be mapped to a label the model has"])
    path = records[0].source if records else ""
    check = LabelCheck(path, dict(Counter(x for r in records for x in _labels_in(r) if x not in label_map)))
    if not check.unknown:
        return list(records), check
    if unknown == "error":
        first, label = next((r, x) for r in records for x in _labels_in(r) if x not in label_map)
        line = first.line_of(next(s for s, _, t in first.spans if t == label)) if isinstance(first, TaggedRecord) else first.line
        raise InputError(first.source, f"label '{label}' is not among the train labels {list(label_map.labels)} "
                         f"(labels of this file not in train: {check.unknown_text()})",
                         "add the label to train, or set unknown_labels=map (with unknown_label_to=LABEL) or unknown_labels=drop",
                         line=line)
    out: list[R] = []
    for r in records:
        if isinstance(r, TaggedRecord):
            spans = []
            for s, e, t in r.spans:
                if t in label_map:
                    spans.append((s, e, t))
                elif unknown == "map":
                    spans.append((s, e, map_to))
                    check.mapped += 1
                else:
                    check.dropped_labels += 1
            out.append(dataclasses.replace(r, spans=spans) if spans != r.spans else r)
            continue
        known = [x for x in r.labels if x in label_map]
        if len(known) == len(r.labels):
            out.append(r)
        elif unknown == "map":
            check.mapped += len(r.labels) - len(known)
            out.append(dataclasses.replace(r, labels=tuple(dict.fromkeys(x if x in label_map else map_to for x in r.labels))))
        elif multilabel:
            check.dropped_labels += len(r.labels) - len(known)
            out.append(dataclasses.replace(r, labels=tuple(known)))
        else:
            check.dropped_records += 1
    return out, check
