"""Config of `verify`."""

from __future__ import annotations

from workbench.config._base import Section


class VerifyConfig(Section):
    """Check a stage output against its manifest (files, sizes, hashes, seal); accept="why" records a deliberate change."""

    input: str | None = None
    """A stage output directory (anything with a manifest.json written by the workbench)."""
    full: bool = True
    """Hash every file in full (false: files over 64 MiB by size and three sampled MiB, as stages do when they read)."""
    accept: str | None = None
    """Record the current files as intended, with this reason (who, when, which files changed), and re-seal the manifest; later stages log the reason each time they read the directory."""

    def problems(self) -> list[str]:
        out = []
        if not self.input:
            out.append("input: required; pass input=DIR (a stage output directory)")
        if self.accept is not None and not str(self.accept).strip():
            out.append("accept: give the reason for the change, e.g. accept=\"replaced valid with the 2024 sample\"")
        return out
