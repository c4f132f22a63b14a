"""Config of `report`."""

from __future__ import annotations

from workbench.config._base import Section


class ReportConfig(Section):
    """Summarise a run directory: what ran, counts, metrics, where outputs are."""

    run: str = "runs/default"
    """Run directory to summarise."""
