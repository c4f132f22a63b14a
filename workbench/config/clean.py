"""Config of `clean` (leftovers of interrupted runs)."""

from __future__ import annotations

from workbench.config._base import Section


class CleanupConfig(Section):
    """List and remove what interrupted runs left behind (.<output>.tmp-* / .old-* beside stage outputs)."""

    path: str = "runs"
    """Directory searched recursively (e.g. runs, or one run directory)."""
    dry_run: bool = False
    """Only list the leftovers and their sizes; remove nothing."""


# Command name → config model. The stage's file, config section, CLI subcommand and make
# target share this name.
