"""Shared pieces of the typed configs: ``Section`` (a block of options with cross-field
checks), ``StageConfig`` (the keys every stage has) and size parsing. How configs are
loaded, the registry of commands and the docs generator: workbench/config/__init__.py;
each stage's models: workbench/config/<stage>.py."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A block of options. Subclasses override ``problems`` for cross-field checks."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        coerce_numbers_to_str=True,  # `text_field: 1` in YAML means column "1"
        validate_default=True,
    )

    def problems(self) -> list[str]:
        """Contradictions between fields, as ``dotted.key: message`` strings."""
        return []


def _as_list(value: Any) -> Any:
    """`input=corpus.txt` on the command line means a one-element list."""
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- stages
def shard_bytes(size: str) -> int:
    """'500MB' / '2GB' / '64KiB' / '1000000' → bytes (decimal units, KiB/MiB/GiB binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", size, flags=re.IGNORECASE)
    if not m:
        raise ValueError(size)
    units = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    return int(float(m.group(1)) * units[(m.group(2) or "B").lower()])


def _shard_size_problems(size: str) -> list[str]:
    try:
        n = shard_bytes(size)
    except ValueError:
        return [f"shard_size: '{size}' is not a size; write e.g. 500MB, 2GB or 256MiB"]
    return [] if n >= 1 else [f"shard_size: '{size}' must be at least 1 byte"]


class StageConfig(Section):
    """Keys every stage has. ``run`` and ``seed`` may also be set at the file's top level."""

    run: str = "runs/default"
    """Run directory. A stage's default input and output live under it (e.g. `<run>/prepared`)."""
    seed: int = 0
    """Seed for every random choice of the stage (splits, sampling, masking, init)."""
    output: str | None = None
    """Output directory; default `<run>/<stage dir>`. Written atomically (temp dir, then rename)."""

    # Name of the directory under `run` that this stage writes; set by each subclass.
    output_dir_name: typing.ClassVar[str] = ""

    # Directory under `run` that the stage reads when `input` is not given (the previous
    # stage's output_dir_name); stages whose input is not one directory leave it empty.
    input_dir_name: typing.ClassVar[str] = ""

    # Keys that decide how a stage runs but never what it writes (worker counts, engines):
    # left out of the fingerprints that decide whether an output can be reused.
    execution_keys: typing.ClassVar[frozenset[str]] = frozenset()

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.run) / self.output_dir_name

    def input_path(self) -> Path:
        given = getattr(self, "input", None)
        return Path(given) if given else Path(self.run) / self.input_dir_name
