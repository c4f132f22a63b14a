"""Config of `export`."""

from __future__ import annotations

import typing
from pathlib import Path

from workbench.config._base import StageConfig


class ExportConfig(StageConfig):
    """Package a finetune output as a plain transformers directory with a model card and label maps."""

    output_dir_name: typing.ClassVar[str] = "export"

    input: str | None = None
    """A `finetune` output directory; default `<run>/finetune-<task>` of the one finetune in the run."""
    name: str | None = None
    """Model name for the card's title; default the output directory's name."""

    def input_path(self) -> Path:
        if self.input:
            return Path(self.input)
        found = sorted(Path(self.run).glob("finetune-*"))
        return found[0] if len(found) == 1 else Path(self.run) / "finetune-classification"

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        return Path(self.run) / "export" / self.input_path().name.removeprefix("finetune-")
