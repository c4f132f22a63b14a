"""Checking a DeepSpeed JSON config before any model is loaded.

DeepSpeed ignores unknown top-level keys: a typo such as "zero_optimisation" silently
trains without ZeRO (and runs out of memory an hour later). It also only parses the file
when the Trainer builds the engine, after the model is loaded. ``check_deepspeed_config``
reads the file first and reports, in one error: invalid JSON (line and column), top-level
keys DeepSpeed never reads (with the closest known key), unknown keys inside
``zero_optimization`` (checked against DeepSpeed's own pydantic model), and sections that
would replace the workbench's schedule or optimizer settings without a word (a `scheduler`
section; explicit optimizer values that differ from the stage's).

"Keys DeepSpeed reads" = every snake_case string literal in the installed deepspeed
package's Python source: a superset of its config keys, read from the version that will
run, so new DeepSpeed options never trip the check.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import lru_cache
from pathlib import Path

from workbench.errors import StageInputError

_LITERAL = re.compile(r"""["']([a-z][a-z0-9_]{1,60})["']""")


@lru_cache(maxsize=1)
def deepspeed_keys() -> frozenset[str]:
    import importlib.util

    spec = importlib.util.find_spec("deepspeed")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(next(iter(spec.submodule_search_locations)))
    found: set[str] = set()
    for py in root.rglob("*.py"):
        try:
            found.update(_LITERAL.findall(py.read_text(encoding="utf-8", errors="ignore")))
        except OSError:
            continue
    return frozenset(found)


def _zero_keys() -> set[str]:
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    keys = set()
    for name, field in DeepSpeedZeroConfig.model_fields.items():
        keys.add(name)
        if field.alias:
            keys.add(field.alias)
    return keys


def _contradictions(cfg: dict, settings: dict) -> list[str]:
    """Sections of the JSON that would replace the workbench's learning-rate schedule or
    optimizer settings. A `scheduler` always does (DeepSpeed's WarmupLR family warms up on a
    log curve by default, and its type is not checked against `schedule`); an `optimizer`
    may stay (e.g. for ZeRO-Offload's CPU Adam) when its values are "auto" or the workbench's."""
    out = []
    if "scheduler" in cfg:
        sched = cfg.get("scheduler") or {}
        out.append(f"scheduler ({sched.get('type', '?')}) replaces the workbench's learning-rate schedule "
                   f"(schedule={settings.get('schedule')}, warmup_ratio={settings.get('warmup_ratio')}); drop the "
                   "section: the Trainer then builds the same schedule with and without DeepSpeed")
    opt = cfg.get("optimizer")
    if isinstance(opt, dict):
        params = opt.get("params") or {}
        for key, ours in (("lr", "lr"), ("weight_decay", "weight_decay")):
            v = params.get(key, "auto")
            if v != "auto" and (not isinstance(v, (int, float)) or abs(float(v) - float(settings[ours])) > 1e-12):
                out.append(f"optimizer.params.{key} = {v!r} contradicts the workbench's {ours}={settings[ours]}; "
                           f"write \"auto\" (or set {ours} in the workbench config)")
        kind = str(opt.get("type", "")).lower()
        if kind and kind not in ("adamw", "adam", "fusedadam", "cpuadam", "deepspeedcpuadam"):
            out.append(f"optimizer.type {opt.get('type')!r}: the workbench trains with AdamW; drop the section or use "
                       "AdamW (torch's, or DeepSpeed's for ZeRO-Offload)")
    return out


def check_deepspeed_config(path: str | Path, *, needed_by: str, settings: dict | None = None) -> dict:
    """The parsed config, or StageInputError listing every problem with the fix. With
    `settings` (the stage's schedule, warmup_ratio, lr, weight_decay) it also refuses
    sections that would silently replace them."""
    path = Path(path)
    if not path.is_file():
        raise StageInputError(f"{needed_by}: deepspeed config {path} not found\n"
                              "  fix: pass deepspeed=configs/deepspeed/zero2.json (or zero3.json), or your own file")
    text = path.read_text(encoding="utf-8")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise StageInputError(f"{needed_by}: {path}, line {e.lineno} column {e.colno}: not valid JSON ({e.msg})\n"
                              "  fix: correct the JSON (no trailing commas, double quotes only)") from None
    if not isinstance(cfg, dict):
        raise StageInputError(f"{needed_by}: {path} holds a JSON {type(cfg).__name__}, not an object of DeepSpeed "
                              "settings; see configs/deepspeed/zero2.json")
    problems = []
    known = deepspeed_keys()
    if known:
        for key in cfg:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
                problems.append(f"top-level key '{key}' is not a DeepSpeed setting (DeepSpeed would ignore it)"
                                + (f"; did you mean '{close[0]}'?" if close else ""))
    zero = cfg.get("zero_optimization")
    if isinstance(zero, dict):
        try:
            allowed = _zero_keys()
        except ImportError:
            allowed = set()
        for key in zero if allowed else []:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                problems.append(f"zero_optimization.{key} is not a ZeRO setting"
                                + (f"; did you mean '{close[0]}'?" if close else ""))
        stage = zero.get("stage", 0)
        if stage not in (0, 1, 2, 3):
            problems.append(f"zero_optimization.stage must be 0, 1, 2 or 3 (got {stage!r})")
    if settings is not None:
        problems += _contradictions(cfg, settings)
    if problems:
        raise StageInputError(f"{needed_by}: {path} has {len(problems)} problem(s):\n"
                              + "\n".join(f"  - {p}" for p in problems)
                              + "\n  fix: correct the keys (reference: https://www.deepspeed.ai/docs/config-json/ "
                              "and configs/deepspeed/zero2.json)")
    return cfg
