"""Multi-node pretraining, emulated on one machine with CPU processes (gloo), following the
recipes in configs/cluster/ (pretrain.sbatch: one torchrun per node; hostfile.example):

- two torchrun "nodes" (one process each, static rendezvous on 127.0.0.1) train, write
  checkpoints, are SIGKILLed and resume to the planned step; the resumed pass skips the
  batches already trained on by index (never read or collated);
- a checkpoint made by 2 processes resumes on 1: plain DDP keeps its optimizer state, and
  DeepSpeed ZeRO-2 (whose partitioned optimizer states DeepSpeed cannot re-partition) resumes
  from the fp32 master weights with fresh optimizer moments; both keep the global batch, so
  the learning-rate schedule runs on as if nothing happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from test_pretrain_deepspeed import _checkpoints, _free_port

pytestmark = pytest.mark.slow

MAX_STEPS = 40  # room between the first checkpoint (step 4) and the end, on a loaded machine too
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _args(run: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", f"run={run}", f"model={run / 'base-model'}", f"output={out}", f"max_steps={MAX_STEPS}",
            "save_steps=4", "eval_steps=20", "logging_steps=1", "batch_size=4", "lr=2e-3", "schedule=linear",
            "warmup_ratio=0.1", *extra]


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    # Its own session: SIGKILL to the group takes the launcher and its ranks down at once.
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _kill_at_first_checkpoint(procs: list[subprocess.Popen], ckpt_dir: Path, logs: list[Path]) -> int:
    """SIGKILL every launcher (and its ranks) once a checkpoint is complete; the step reached."""
    deadline = time.time() + 480
    while time.time() < deadline and all(p.poll() is None for p in procs) and not _checkpoints(ckpt_dir):
        time.sleep(0.05)
    tails = "\n".join(log.read_text()[-2000:] for log in logs)
    assert all(p.poll() is None for p in procs), "a launcher ended before the kill:\n" + tails
    assert _checkpoints(ckpt_dir), "no checkpoint in time:\n" + tails
    # torchrun starts its workers in sessions of their own: kill the whole tree, as a node
    # failure would, not just the launcher's process group.
    import psutil

    victims = [psutil.Process(p.pid) for p in procs]
    victims += [c for v in list(victims) for c in v.children(recursive=True)]
    for v in victims:
        try:
            v.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=60)
    for p in procs:
        p.wait(timeout=60)
    reached = max(_checkpoints(ckpt_dir))
    assert reached < MAX_STEPS
    return reached


def _torchrun_nodes(args: list[str], tmp_path: Path, tag: str) -> list[subprocess.Popen]:
    port = _free_port()
    return [_start([str(BIN / "torchrun"), "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
                    "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "workbench", *args],
                   tmp_path / f"{tag}-node{rank}.log") for rank in (0, 1)]


def _history(out: Path) -> list[dict]:
    return json.loads((out / "metrics.json").read_text())["log_history"]


def _assert_one_linear_schedule(out: Path) -> None:
    """Every step 1..MAX logged once, and after the warmup the learning rate falls by the same
    amount at every step: the resumed part continued the schedule of the first (a restarted
    warmup, or a step count that changed meaning with the process count, breaks the line)."""
    lr = {h["step"]: h["learning_rate"] for h in _history(out) if "learning_rate" in h}
    assert sorted(lr) == list(range(1, MAX_STEPS + 1))
    peak = max(lr, key=lr.get)
    drops = [lr[s] - lr[s + 1] for s in range(peak, MAX_STEPS)]
    assert lr[peak] == pytest.approx(2e-3, rel=1e-6)
    assert max(drops) - min(drops) < 1e-9 and min(drops) > 0, drops


def _load_and_fill_mask(out: Path) -> None:
    from transformers import AutoModelForMaskedLM, pipeline

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    top = pipeline("fill-mask", model=str(out), tokenizer=str(out), device="cpu")("这家酒店的[MASK]务很好", top_k=5)
    assert len(top) == 5 and all(0.0 <= t["score"] <= 1.0 and t["token_str"] for t in top)


def test_two_nodes_on_localhost_train_checkpoint_kill_and_resume(pretrain_chain, tmp_path):
    run, out, ckpt = pretrain_chain, tmp_path / "pretrain", tmp_path / "pretrain-checkpoints"
    first = _torchrun_nodes(_args(run, out), tmp_path, "first")
    reached = _kill_at_first_checkpoint(first, ckpt, [tmp_path / "first-node0.log", tmp_path / "first-node1.log"])
    assert not out.exists(), "a killed run must not leave a final output directory"

    second = _torchrun_nodes(_args(run, out), tmp_path, "second")
    for rank, p in enumerate(second):
        assert p.wait(timeout=900) == 0, (tmp_path / f"second-node{rank}.log").read_text()[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == MAX_STEPS
    assert manifest["processes"] == 2 and manifest["global_batch"] == 8
    resume = manifest["resume"]
    assert resume["step"] == reached and resume["processes_changed"] is None and resume["optimizer"] == "restored"
    # The resumed pass started after the trained batches by index: rank 0 collated only its
    # own batches of the remaining steps (+1: accelerate's loader reads one batch ahead to spot
    # the last); a replay would have collated the `reached` skipped ones too.
    assert resume["skipped"] == {"batches": reached, "how": "index"}
    assert MAX_STEPS - reached <= resume["collated_batches"] <= MAX_STEPS - reached + 1
    _assert_one_linear_schedule(out)
    _load_and_fill_mask(out)


@pytest.mark.parametrize("engine", ["ddp", "deepspeed-zero2"])
def test_a_two_process_checkpoint_resumes_on_one_process(pretrain_chain, tmp_path, engine):
    run, out, ckpt = pretrain_chain, tmp_path / "pretrain", tmp_path / "pretrain-checkpoints"
    ds = [f"deepspeed={REPO / 'configs' / 'deepspeed' / 'zero2.json'}"] if engine != "ddp" else []
    port = _free_port()
    if ds:
        first_cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(port), "--module",
                     "workbench", *_args(run, out, *ds)]
    else:
        first_cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(port), "-m",
                     "workbench", *_args(run, out)]
    reached = _kill_at_first_checkpoint([_start(first_cmd, tmp_path / "first.log")], ckpt, [tmp_path / "first.log"])
    if ds:
        # The killed ranks could not release DeepSpeed's /dev/shm segments: `workbench clean` does.
        from test_pretrain_deepspeed import _shm_segments

        from workbench.stages import clean

        leaked = _shm_segments(port)
        clean.run(clean.CleanupConfig(path=str(tmp_path / "nothing-here")))
        assert leaked and not any(p.exists() for p in leaked)
        # What the resume will load: the fp32 master weights rebuilt from the ZeRO partitions
        # fit the model and equal the whole module weights HF saved beside them.
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForMaskedLM

        from workbench.stages.pretrain import load_deepspeed_fp32

        model = AutoModelForMaskedLM.from_pretrained(run / "base-model")
        load_deepspeed_fp32(ckpt / f"checkpoint-{reached}", model)
        module = load_file(ckpt / f"checkpoint-{reached}" / "model.safetensors")
        state = model.state_dict()
        assert module and all(torch.equal(state[k], v) for k, v in module.items())
        assert not torch.equal(state["bert.embeddings.word_embeddings.weight"],
                               AutoModelForMaskedLM.from_pretrained(run / "base-model").state_dict()[
                                   "bert.embeddings.word_embeddings.weight"])  # trained, not the start

    if ds:
        second_cmd = [str(BIN / "deepspeed"), "--num_gpus", "1", "--master_port", str(_free_port()), "--module",
                      "workbench", *_args(run, out, *ds)]
    else:
        second_cmd = [sys.executable, "-m", "workbench", *_args(run, out)]
    proc = subprocess.run(second_cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    resume = manifest["resume"]
    assert manifest["counts"]["steps"] == MAX_STEPS and manifest["processes"] == 1
    # The global batch stays 8 blocks: 2 processes x 4 x 1 became 1 process x 4 x 2.
    assert manifest["global_batch"] == 8
    assert resume["processes_changed"] == {"from_processes": 2, "to_processes": 1, "global_batch": 8,
                                           "grad_accum": {"saved": 1, "now": 2}}
    assert resume["skipped"] == {"batches": 2 * reached, "how": "index"}
    assert 2 * (MAX_STEPS - reached) <= resume["collated_batches"] <= 2 * (MAX_STEPS - reached) + 1
    said = proc.stdout + proc.stderr
    assert "grad_accum 1 → 2 keeps the global batch at 8" in said
    if ds:
        assert resume["optimizer"].startswith("fresh") and "optimizer moments start from zero" in said
    else:
        assert resume["optimizer"] == "restored"
    _assert_one_linear_schedule(out)
    _load_and_fill_mask(out)


def test_resume_refuses_a_process_count_that_cannot_keep_the_global_batch(pretrain_chain, tmp_path):
    """3 processes cannot make a global batch of 8 blocks from batch_size 4: refused, with the
    counts that can, before any training."""
    from workbench.config import load_stage_config
    from workbench.errors import StageInputError
    from workbench.stages.pretrain import SHAPE_FILE, resume_shape

    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / SHAPE_FILE).write_text(json.dumps({"processes": 2, "batch_size": 4, "grad_accum": 1, "global_batch": 8}))
    cfg = load_stage_config("pretrain", None, [f"run={pretrain_chain}", "batch_size=4"])
    assert resume_shape(ckpt, cfg, 2) == (1, None)
    assert resume_shape(ckpt, cfg, 1)[0] == 2
    with pytest.raises(StageInputError, match=r"(?s)made by 2 processes.*global batch of 8.*resume on 1, 2 processes"):
        resume_shape(ckpt, cfg, 3)
