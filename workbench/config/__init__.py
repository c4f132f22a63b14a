"""Typed configs: one model per stage, YAML files, dotted ``key=value`` overrides.

A config file holds shared keys (``run``, ``seed``) and one section per stage::

    # workbench prepare --config configs/demo.yaml
    run: runs/demo
    prepare:
      input: [corpora/demo/peoples_daily.txt]
      clean: {min_chars: 5}

``load_stage_config("prepare", path, ["clean.urls=false"])`` merges the shared keys into
the ``prepare`` section, applies the overrides and validates. Every problem found
(unknown key, wrong type, contradictory options) is collected and raised as ONE
``ConfigError`` so the user fixes them all in one go.

The models are pydantic ``BaseModel`` classes (typed dataclasses that validate and
collect all errors at once; pydantic is already required by deepspeed). Field docs are
attribute docstrings, so ``workbench <stage> --help`` and the README reference are made
from the code itself.

One module per stage (``workbench/config/<stage>.py``) holds its models; this module
holds the registry (COMMANDS), loading and the docs generator, and re-exports every model.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError

from workbench.config._base import Section, StageConfig, shard_bytes  # noqa: F401
from workbench.config.prepare import CleanConfig, DedupConfig, ExcludeConfig, PIIConfig, PrepareConfig, ReadConfig, SplitConfig  # noqa: F401
from workbench.config.segment import LexiconConfig, SegmentConfig  # noqa: F401
from workbench.config.vocab import VocabConfig  # noqa: F401
from workbench.config.init_model import InitModelConfig  # noqa: F401
from workbench.config.extend_vocab import ExtendVocabConfig  # noqa: F401
from workbench.config.pretrain import MaskingConfig, MixInput, PretrainConfig  # noqa: F401
from workbench.config.desensitise import DesensitiseConfig  # noqa: F401
from workbench.config.remap import DiscoveryConfig, RemapConfig, _SPECIAL  # noqa: F401
from workbench.config.demo_data import DemoDataConfig  # noqa: F401
from workbench.config.report import ReportConfig  # noqa: F401
from workbench.config.finetune import FinetuneConfig, LoraConfig, TaskDataConfig  # noqa: F401
from workbench.config.export import ExportConfig  # noqa: F401
from workbench.config.predict import PredictConfig  # noqa: F401
from workbench.config.evaluate import EvaluateConfig  # noqa: F401
from workbench.config.experiment import ExperimentArm, ExperimentConfig, ProbeConfig, ReplayConfig, _section_problems, check_section  # noqa: F401
from workbench.config.verify import VerifyConfig  # noqa: F401
from workbench.config.clean import CleanupConfig  # noqa: F401
from workbench.config.attention import AttentionConfig  # noqa: F401
from workbench.config.average import AverageConfig  # noqa: F401
from workbench.config.distil import DistilConfig  # noqa: F401
from workbench.errors import ConfigError


COMMANDS: dict[str, type[Section]] = {
    "prepare": PrepareConfig,
    "segment": SegmentConfig,
    "vocab": VocabConfig,
    "init-model": InitModelConfig,
    "extend-vocab": ExtendVocabConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "export": ExportConfig,
    "predict": PredictConfig,
    "evaluate": EvaluateConfig,
    "desensitise": DesensitiseConfig,
    "remap": RemapConfig,
    "demo-data": DemoDataConfig,
    "report": ReportConfig,
    "verify": VerifyConfig,
    "clean": CleanupConfig,
    "experiment": ExperimentConfig,
    "attention": AttentionConfig,
    "average": AverageConfig,
    "distil": DistilConfig,
}
SHARED_KEYS = ("run", "seed")


# --------------------------------------------------------------------------- loading
def parse_override(item: str) -> tuple[str, Any]:
    """`clean.urls=false` → ("clean.urls", False). Values are parsed as YAML scalars/lists."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override '{item}' is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # e.g. `input=a:b` — keep the literal string
    # YAML turns `2020-01-01` into a date and `0x10` into 16; paths and names stay strings.
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        value = raw
    return key.strip(), value


def _set_dotted(tree: dict, dotted: str, value: Any) -> str | None:
    """Set tree[a][b][c] = value for "a.b.c"; returns a problem string instead of raising."""
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return f"{'.'.join(parts[: i + 1])}: is a value, not a section; cannot set '{dotted}'"
        node = child
    node[parts[-1]] = value
    return None


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError([f"config file not found: {path}"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"not valid YAML at{where}: {getattr(e, 'problem', e)}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping of keys to values, got {type(data).__name__}"], str(path))
    return data


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Names of the fields valid at `loc` (a pydantic error location) inside `model`."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return list(model.model_fields)
        model = field.annotation
    return list(model.model_fields)


def _format_errors(prefix: str, model: type[BaseModel], err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            known = _field_names(model, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
            out.append(f"{key}: unknown key{hint}")
        else:
            out.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
    return out


def _collect(command: str, data: dict, overrides: list[str]) -> tuple[Section | None, list[str]]:
    """Validate one command's section (shared keys + section + overrides); never raises."""
    model = COMMANDS[command]
    problems: list[str] = []
    raw = data.get(command) or {}
    if not isinstance(raw, dict):
        problems.append(f"{command}: must be a mapping of keys to values, got {type(raw).__name__}")
        raw = {}
    section = {k: data[k] for k in SHARED_KEYS if k in data and k in model.model_fields}
    section.update(raw)  # the section's own value wins over the shared one
    for item in overrides:
        try:
            key, value = parse_override(item)
        except ValueError as e:
            problems.append(str(e))
            continue
        key = key.removeprefix(command + ".")
        problem = _set_dotted(section, key, value)
        if problem:
            problems.append(f"{command}.{problem}")
    try:
        cfg = model.model_validate(section)
    except ValidationError as e:
        return None, problems + _format_errors(f"{command}.", model, e)
    return cfg, problems + [f"{command}.{p}" for p in cfg.problems()]


def _unknown_top_level(data: dict) -> list[str]:
    out = []
    for key in data:
        if key not in COMMANDS and key not in SHARED_KEYS:
            close = difflib.get_close_matches(str(key), list(COMMANDS) + list(SHARED_KEYS), n=1)
            hint = (
                f" (did you mean '{close[0]}'?)"
                if close
                else f" (top-level keys are {', '.join(SHARED_KEYS)} or a stage name: {', '.join(COMMANDS)})"
            )
            out.append(f"{key}: unknown top-level key{hint}")
    return out


def load_stage_config(
    command: str,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
) -> Section:
    """The validated config for one command, from file + overrides, or ONE ConfigError."""
    source = str(config_path) if config_path else None
    data = _read_yaml(Path(config_path)) if config_path else {}
    problems = _unknown_top_level(data)
    # Type-check the other sections too: a typo there should not wait until that stage
    # runs. Their cross-field checks may depend on overrides given then, so skip those.
    for other in COMMANDS:
        if other != command and other in data:
            cfg, other_problems = _collect(other, data, [])
            if cfg is None:
                problems += other_problems
    cfg, own = _collect(command, data, list(overrides or []))
    problems += own
    if problems:
        raise ConfigError(problems, source)
    return cfg


def validate_config_file(path: str | Path) -> dict[str, Section]:
    """Validate every section of a config file as written (used by the tests on configs/)."""
    data = _read_yaml(Path(path))
    problems = _unknown_top_level(data)
    out = {}
    for command in COMMANDS:
        if command in data:
            cfg, section_problems = _collect(command, data, [])
            problems += section_problems
            out[command] = cfg
    if problems:
        raise ConfigError(problems, str(path))
    return out


# --------------------------------------------------------------------------- docs
def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if origin is list:
        (inner,) = typing.get_args(annotation) or (Any,)
        return f"list[{_type_name(inner)}]"
    return getattr(annotation, "__name__", str(annotation))


def iter_fields(model: type[BaseModel], prefix: str = ""):
    """Yield (dotted_name, type_name, default, doc) for every leaf field, sections flattened."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from iter_fields(ann, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        yield f"{prefix}{name}", _type_name(ann), default, (field.description or "").strip()


def _show_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


def fields_help(command: str) -> str:
    """Plain-text field list for `workbench <command> --help`."""
    lines = []
    for name, typ, default, doc in iter_fields(COMMANDS[command]):
        lines.append(f"  {name} = {_show_default(default)}   [{typ}]")
        if doc:
            lines.append(f"      {doc}")
    return "\n".join(lines)


def config_reference_markdown() -> str:
    """The README's config reference, generated from the models (kept in sync by a test)."""
    out = []
    for command, model in COMMANDS.items():
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        out.append(f"### `{command}`\n\n{doc}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for name, typ, default, fdoc in iter_fields(model):
            typ_md = typ.replace("|", "\\|")
            fdoc_md = fdoc.replace("|", "\\|")
            out.append(f"| `{name}` | {typ_md} | `{_show_default(default)}` | {fdoc_md} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


README_START = "<!-- config-reference:start (generated by `make docs` from workbench/config/) -->"
README_END = "<!-- config-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """`readme` with the text between the config-reference markers regenerated."""
    head, sep, rest = readme.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise ValueError(f"README has no {README_START} ... {README_END} block")
    return f"{head}{README_START}\n\n{config_reference_markdown()}\n{README_END}{tail}"

