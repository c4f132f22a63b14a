"""DeepSpeed ZeRO-2 with 2 CPU processes (gloo): SIGKILL mid-run, resume, same final step,
and the final model loads with plain transformers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

MAX_STEPS = 16  # room between the kill (checkpoint >= 4 seen) and the end, on a loaded machine too


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(run: Path, out: Path, log: Path, zero: str = "zero2.json", steps: int = MAX_STEPS) -> subprocess.Popen:
    deepspeed = Path(sys.executable).parent / "deepspeed"
    port = _free_port()
    cmd = [str(deepspeed), "--num_gpus", "2", "--master_port", str(port), "--module", "workbench",
           "pretrain", f"run={run}", f"model={run / 'base-model'}", f"output={out}", f"max_steps={steps}",
           "save_steps=2", "eval_steps=4", "logging_steps=1", "batch_size=4",
           f"deepspeed={REPO / 'configs' / 'deepspeed' / zero}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # A new session: SIGKILL to the group takes the launcher and both ranks down at once.
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.port = port
    return proc


def _shm_segments(port: int) -> list[Path]:
    """DeepSpeed's CPU allreduce segments of the run on `port` (workbench/deepspeed_shm.py)."""
    return sorted(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))


def _checkpoints(ckpt_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists())


def test_kill_and_resume_with_two_processes(pretrain_chain, tmp_path):
    run, out = pretrain_chain, tmp_path / "pretrain"
    ckpt_dir = tmp_path / "pretrain-checkpoints"

    proc = _launch(run, out, tmp_path / "first.log")
    deadline = time.time() + 480  # the first deepspeed run on a machine JIT-builds a comm op
    while time.time() < deadline and proc.poll() is None and not any(s >= 4 for s in _checkpoints(ckpt_dir)):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "first.log").read_text()[-3000:]
    assert any(s >= 4 for s in _checkpoints(ckpt_dir)), (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists(), "a killed run must not leave a final output directory"
    reached = max(_checkpoints(ckpt_dir))
    assert reached < MAX_STEPS
    # A killed run cannot release DeepSpeed's shared memory (66 MB of RAM per rank in
    # /dev/shm); `workbench clean` removes what no live process maps.
    leaked = _shm_segments(proc.port)
    assert len(leaked) == 2, "DeepSpeed's CPU allreduce made no /dev/shm segment: update deepspeed_shm.py's notes"
    from workbench.cli import main as cli_main

    assert cli_main(["clean", f"path={tmp_path / 'nothing-here'}"]) == 0
    assert not any(p.exists() for p in leaked)

    proc = _launch(run, out, tmp_path / "second.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert _shm_segments(proc.port) == [], "a finished run must release its /dev/shm segments"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == MAX_STEPS
    assert manifest["resumed_from"] and int(manifest["resumed_from"].rsplit("-", 1)[1]) >= 4

    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(["这家酒店的服务很好"], return_tensors="pt")
    assert model(**enc).logits.shape[-1] == len(tok)


def test_zero3_ends_in_a_normal_hf_checkpoint(pretrain_chain, tmp_path):
    """ZeRO-3 shards parameters across ranks; the final model must still be whole: no manual
    zero_to_fp32 step, every key and shape of the architecture, the trained values, and it
    fills a mask with plain transformers."""
    run, out = pretrain_chain, tmp_path / "pretrain"
    proc = _launch(run, out, tmp_path / "z3.log", zero="zero3.json", steps=2)
    assert proc.wait(timeout=600) == 0, (tmp_path / "z3.log").read_text()[-3000:]
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForMaskedLM, pipeline

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    emb = model.get_input_embeddings().weight
    assert emb.shape == (model.config.vocab_size, model.config.hidden_size) and float(emb.abs().sum()) > 0
    # Key/shape round trip: the saved model has every parameter of its architecture, whole.
    fresh = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(out)).state_dict()
    saved = model.state_dict()
    assert {k: tuple(v.shape) for k, v in saved.items()} == {k: tuple(v.shape) for k, v in fresh.items()}
    # ...and holds the trained values: those DeepSpeed's own zero_to_fp32 rebuilds from the
    # last checkpoint's partitions (fp32 on CPU, so exactly).
    master = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "pretrain-checkpoints" / "checkpoint-2"))
    for key, value in master.items():
        assert torch.equal(saved[key], value.to(saved[key].dtype)), key
    # Fill-mask sanity check with plain transformers.
    top = pipeline("fill-mask", model=str(out), tokenizer=str(out), device="cpu")("这家酒店的[MASK]务很好", top_k=5)
    assert len(top) == 5 and all(0.0 <= t["score"] <= 1.0 and t["token_str"] for t in top)


def test_the_learning_rate_schedule_is_the_same_with_and_without_deepspeed(pretrain_chain, tmp_path):
    """The shipped ZeRO configs leave the optimizer and schedule to the Trainer: a one-process
    DeepSpeed run logs the same learning rate at every step as a plain run (cosine, warmup),
    and trains to nearly the same loss."""
    run = pretrain_chain
    common = ["max_steps=12", "save_steps=12", "eval_steps=12", "logging_steps=1", "batch_size=4",
              "schedule=cosine", "warmup_ratio=0.25", "lr=1e-3"]
    plain = tmp_path / "plain"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, "-m", "workbench", "pretrain", f"run={run}", f"model={run / 'base-model'}",
                    f"output={plain}", *common], cwd=REPO, env=env, check=True, capture_output=True)
    ds_out = tmp_path / "ds"
    deepspeed = Path(sys.executable).parent / "deepspeed"
    proc = subprocess.run([str(deepspeed), "--num_gpus", "1", "--master_port", str(_free_port()), "--module",
                           "workbench", "pretrain", f"run={run}", f"model={run / 'base-model'}", f"output={ds_out}",
                           *common, f"deepspeed={REPO / 'configs' / 'deepspeed' / 'zero2.json'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    def curve(out):
        hist = json.loads((out / "metrics.json").read_text())["log_history"]
        return {h["step"]: h["learning_rate"] for h in hist if "learning_rate" in h}, \
            {h["step"]: h["loss"] for h in hist if "loss" in h}

    (lr_a, loss_a), (lr_b, loss_b) = curve(plain), curve(ds_out)
    assert sorted(lr_a) == sorted(lr_b) == list(range(1, 13))
    for step in lr_a:
        assert lr_b[step] == pytest.approx(lr_a[step], rel=1e-6, abs=1e-12), (step, lr_a, lr_b)
    assert max(lr_a.values()) == pytest.approx(1e-3, rel=0.05) and lr_a[12] < 1e-4  # warmed up, then decayed
    assert abs(loss_a[12] - loss_b[12]) < 0.05
