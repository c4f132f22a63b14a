"""Config of `experiment`: arms x seeds through the other stages."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Union

from pydantic import ValidationError, field_validator

from workbench.config._base import Section, StageConfig, _as_list
from workbench.config.pretrain import MaskingConfig


class ExperimentArm(Section):
    """One custom arm: continued pretraining on a named corpus with a masking (the budget is the experiment's)."""

    name: str
    """The arm's name in the table (letters, digits, - _ + .)."""
    corpus: str | None = "domain"
    """The `corpora` entry it pretrains on; null: no pretraining (fine-tune `base` as it is)."""
    masking: MaskingConfig | None = None
    """Masking for this arm; default the shared `pretrain.masking`."""
    base: str | None = None
    """This arm's starting model (e.g. a `remap` output of a desensitised corpus), default the experiment's `base`; its corpora are segmented with its own tokenizer."""


class ProbeConfig(Section):
    """A cheap downstream probe during continued pretraining: frozen encoder + logistic regression."""

    every: int = 0
    """Probe every this many pretraining steps (a checkpoint is kept at each); 0 = no probes."""
    train_size: int = 2000
    """Texts of the fine-tune train file the probe fits on (the first ones, fixed)."""
    valid_size: int = 1000
    """Texts of the fine-tune valid file it is scored on (never test)."""


class ReplayConfig(Section):
    corpus: str = "general"
    """The corpus mixed into the domain text (a name under `corpora`)."""
    weight: float = 0.2
    """Its share of the pretraining blocks, in (0, 1) (0.2: 80% domain, 20% general)."""


class ExperimentConfig(StageConfig):
    """Does continued pretraining help the task, and which masking? Arms x seeds through the stages, one table with intervals."""

    output_dir_name: typing.ClassVar[str] = "experiment"

    base: str = "bert-base-chinese"
    """The model every arm starts from: a hub id, a save_pretrained dir, or `make base`'s runs/base/pretrain."""
    corpora: dict[str, dict[str, Any]] = {}
    """Named corpora, each a `prepare` section (input, read, clean, dedup, split). `domain` is what the masking arms pretrain on; `general` is the same-budget control's text and the forgetting check's held-out text."""
    segment: dict[str, Any] = {}
    """`segment` settings shared by every corpus (backend, max_seq_length, lexicons ...); model is `base`."""
    pretrain: dict[str, Any] = {}
    """`pretrain` settings shared by every pretraining arm: THE budget (max_steps x batch_size x max_seq_length) and the optimiser; model, input, seed and output are set per cell."""
    finetune: dict[str, Any] = {}
    """`finetune` settings shared by every arm (task, train, valid, test, steps, lr ...); model and seed are set per cell."""
    forgetting: dict[str, Any] | None = None
    """Optional general task (a `finetune` section, e.g. MSRA NER) fine-tuned from the base and from every pretrained arm: did domain pretraining cost general ability?"""
    arms: list[Union[str, ExperimentArm]] = ["none", "general_more", "whole_word"]
    """none (the base as is), general_more (same budget on `general`: the control), token | whole_word | entity_ngram | span | mixture (domain text, that masking), replay (domain text with `replay.weight` of `replay.corpus` mixed in, the shared masking), any of these + `+sop` (adds ALBERT's sentence-order objective on pair blocks of the same corpus, e.g. whole_word+sop), or {name, corpus, masking}."""
    seeds: list[int] = [0, 1, 2]
    """Fine-tune seeds: every arm is fine-tuned once per seed; arms are paired by seed."""
    pretrain_seeds: list[int] = [0]
    """Pretraining seeds (masks, data order): each pretraining arm is trained once per seed."""
    forgetting_seeds: list[int] | None = None
    """Seeds of the forgetting task's fine-tunes; default `seeds`."""
    mlm_blocks: int = 1000
    """Held-out blocks scored for the MLM loss before/after (fixed masks, the same for every model)."""
    probe: ProbeConfig = ProbeConfig()
    """Probes at checkpoints during pretraining (classification and pair tasks)."""
    max_epochs: float = 10.0
    """Warn when a pretraining arm would pass over its corpus more often than this (tiny corpus for the budget)."""
    confidence: float = 0.95
    """Level of the paired t intervals."""
    replay: ReplayConfig = ReplayConfig()
    """The `replay` arm: domain text with this share of another corpus mixed in (pretrain `mix`), the same budget."""
    controls: list[str] = ["none", "general_more"]
    """Arms every other arm is compared with (paired by seed), those of them that are in `arms`; the first one present gives the verdict."""

    BUILTIN_ARMS: typing.ClassVar[tuple[str, ...]] = ("none", "general_more", "token", "whole_word", "entity_ngram",
                                                       "span", "mixture", "replay")
    # Keys of the shared sections that the experiment sets per cell.
    OWNED: typing.ClassVar[dict[str, tuple[str, ...]]] = {
        "corpora": ("output", "run", "seed"),
        "segment": ("model", "input", "output", "run", "seed"),
        "pretrain": ("model", "input", "output", "run", "seed", "mix"),
        "finetune": ("model", "seed", "seeds", "output", "run"),
        "forgetting": ("model", "seed", "seeds", "output", "run"),
    }

    @field_validator("seeds", "pretrain_seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        return _as_list(v)

    def arm_specs(self) -> list[ExperimentArm | str]:
        return list(self.arms)

    def problems(self) -> list[str]:
        out: list[str] = []
        sections = {"segment": self.segment, "pretrain": self.pretrain, "finetune": self.finetune}
        if self.forgetting is not None:
            sections["forgetting"] = self.forgetting
        for name, section in sections.items():
            out += [f"{name}.{k}: set per cell by the experiment; drop it" for k in self.OWNED[name] if k in section]
        for name, section in self.corpora.items():
            if not isinstance(section, dict):
                out.append(f"corpora.{name}: must be a prepare section (input, read, clean ...)")
                continue
            out += [f"corpora.{name}.{k}: set by the experiment; drop it" for k in self.OWNED["corpora"] if k in section]
            out += _section_problems("prepare", section, f"corpora.{name}.", drop=self.OWNED["corpora"])
            if not section.get("input"):
                out.append(f"corpora.{name}.input: required (the corpus files)")
        out += _section_problems("segment", self.segment, "segment.", drop=self.OWNED["segment"])
        out += _section_problems("pretrain", self.pretrain, "pretrain.", drop=self.OWNED["pretrain"],
                                 fill={"model": self.base})
        for name in ("finetune", "forgetting"):
            section = sections.get(name)
            if section is None:
                continue
            out += _section_problems("finetune", section, f"{name}.", drop=self.OWNED[name], fill={"model": self.base})
        if not self.finetune:
            out.append("finetune: required (task, train, valid, test ...): the task the arms are compared on")
        names: list[str] = []
        for arm in self.arms:
            if isinstance(arm, str):
                base_name = arm.removesuffix("+sop")
                if base_name not in self.BUILTIN_ARMS:
                    close = difflib.get_close_matches(arm, self.BUILTIN_ARMS, n=1)
                    out.append(f"arms: unknown arm '{arm}'" + (f" (did you mean '{close[0]}'?)" if close else
                               f"; built-in arms are {', '.join(self.BUILTIN_ARMS)}, or give {{name, corpus, masking}}"))
                    continue
                if arm == "none+sop":
                    out.append("arms: 'none+sop': `none` does not pretrain; drop '+sop'")
                if arm.endswith("+sop") and (self.pretrain.get("objective") or "mlm") != "mlm":
                    out.append(f"arms: '{arm}' sets the objective itself; drop pretrain.objective")
                if base_name == "replay":
                    if self.replay.corpus not in self.corpora:
                        out.append(f"replay.corpus: '{self.replay.corpus}' is not a corpus under corpora "
                                   f"({', '.join(self.corpora) or 'none defined'})")
                    elif self.replay.corpus == "domain":
                        out.append("replay.corpus: the corpus mixed in must not be `domain` itself")
                    if not 0.0 < self.replay.weight < 1.0:
                        out.append(f"replay.weight: {self.replay.weight} must be in (0, 1)")
                needs = {"none": None, "general_more": "general"}.get(base_name, "domain")
                names.append(arm)
            else:
                needs = arm.corpus
                names.append(arm.name)
                if arm.corpus is None and arm.masking is not None:
                    out.append(f"arms: '{arm.name}' has corpus null (no pretraining) but a masking; drop one")
                if arm.name in self.BUILTIN_ARMS or not re.fullmatch(r"[\w.+-]+", arm.name):
                    out.append(f"arms: custom arm name '{arm.name}' must be new and use letters, digits, - _ + . only")
                if arm.masking is not None:
                    out += [f"arms.{arm.name}.masking.{p}" for p in arm.masking.problems()]
            if needs and needs not in self.corpora:
                out.append(f"arms: '{names[-1]}' pretrains on corpora.{needs}, which is not defined")
        missing = [c for c in self.controls if c not in names]
        if len(missing) == len(self.controls):
            out.append(f"controls: none of {self.controls} is an arm; list one of them in arms (or set controls to "
                       "the arm to compare with)")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            out.append(f"arms: listed twice: {', '.join(dup)}")
        for key in ("seeds", "pretrain_seeds"):
            values = getattr(self, key)
            if not values or len(set(values)) != len(values):
                out.append(f"{key}: give one or more distinct seeds (got {values})")
        if self.mlm_blocks < 1 or self.max_epochs <= 0 or not 0.5 < self.confidence < 1:
            out.append("mlm_blocks must be >= 1, max_epochs > 0 and 0.5 < confidence < 1")
        if self.probe.every < 0 or self.probe.train_size < 2 or self.probe.valid_size < 1:
            out.append("probe: every must be >= 0, train_size >= 2, valid_size >= 1")
        if self.probe.every and self.finetune.get("task", "classification") not in ("classification", "pair"):
            out.append(f"probe.every: probes fit a linear classifier, so they need a classification or pair task "
                       f"(finetune.task is {self.finetune.get('task')}); set probe.every=0")
        return out


def _section_problems(command: str, section: dict, prefix: str, *, drop: tuple[str, ...] = (),
                      fill: dict | None = None) -> list[str]:
    """Problems of `section` as `command`'s config (type errors, unknown keys, contradictions),
    prefixed with where it sits in the experiment config. Keys in `drop` are ignored (the
    experiment sets them); `fill` supplies required values the experiment will set."""
    data = {**(fill or {}), **{k: v for k, v in section.items() if k not in drop}}
    cfg, problems = check_section(command, data, prefix)
    if cfg is None:
        return problems
    return [p for p in problems if not p.startswith(tuple(f"{prefix}{k}:" for k in (fill or {})))]


def check_section(command: str, data: dict, prefix: str) -> tuple[Section | None, list[str]]:
    """`data` validated as `command`'s config: (the config or None, its problems: type errors,
    unknown keys with did-you-mean, contradictions), each problem prefixed with `prefix`."""
    from workbench.config import COMMANDS, _format_errors  # the registry imports this module

    model = COMMANDS[command]
    try:
        cfg = model.model_validate(data)
    except ValidationError as e:
        return None, [p.replace(f"{command}.", prefix, 1) for p in _format_errors(f"{command}.", model, e)]
    return cfg, [prefix + p for p in cfg.problems()]
