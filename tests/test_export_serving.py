"""export format=onnx|int8|fp16 of tiny fine-tuned models, checked from outside the workbench.

ONNX: the graph is loaded with plain onnxruntime in a fresh process and its logits are
compared with transformers' on texts the export never saw (classification and token
classification). int8: the quantised graph really is int8 (MatMulInteger) and runs; its
accuracy delta is the one recomputed here. fp16: the weights are float16. The parity check
fails an export whose tolerance the graph does not meet, and a CRF tagger is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from finetune_fixtures import (  # noqa: F401  (one_thread: autouse fixture)
    ner_sentences, one_thread, reviews, tiny_model, write_conll, write_tsv,
)

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000"]


def _fresh_python(code: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def cls_ft(tmp_path_factory):
    from workbench.cli import main

    d = tmp_path_factory.mktemp("serving")
    rows = reviews(150)
    write_tsv(d / "train.tsv", rows[:200])
    write_tsv(d / "valid.tsv", rows[200:240])
    write_tsv(d / "test.tsv", rows[240:300])
    (d / "unseen.txt").write_text("".join(t[:50] + "\n" for _, t in rows[:20]), encoding="utf-8")
    tiny_model(d / "base", [t for _, t in rows])
    assert main(["finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                 f"test={d / 'test.tsv'}", f"output={d / 'ft'}", "epochs=2", "max_length=48", *FAST]) == 0
    return d


@pytest.fixture(scope="module")
def int8_export(cls_ft):
    from workbench.cli import main

    assert main(["export", f"input={cls_ft / 'ft'}", f"output={cls_ft / 'int8'}", "format=int8",
                 "latency_rounds=3"]) == 0
    return cls_ft / "int8"


def test_onnx_matches_transformers_in_a_fresh_process(int8_export, cls_ft):
    info = json.loads((int8_export / "serving.json").read_text(encoding="utf-8"))
    assert info["parity"]["passed"] and info["parity"]["max_abs_logit_diff"] <= 1e-4
    assert info["eval"]["role"] == "test" and info["eval"]["records"] == 60
    out = _fresh_python(f"""
        import json, numpy as np, onnxruntime as ort, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        d = "{int8_export}"
        tok = AutoTokenizer.from_pretrained(d)
        texts = open("{cls_ft / 'unseen.txt'}", encoding="utf-8").read().split("\\n")[:20]
        enc = tok(texts, return_tensors="np", truncation=True, max_length=48, padding=True)
        feed = {{k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", "token_type_ids")}}
        onnx = ort.InferenceSession(d + "/model.onnx").run(["logits"], feed)[0]
        q = ort.InferenceSession(d + "/model_quantized.onnx").run(["logits"], feed)[0]
        ref = AutoModelForSequenceClassification.from_pretrained(d).eval()(
            **{{k: torch.from_numpy(v) for k, v in feed.items()}}).logits.detach().numpy()
        print(json.dumps({{"onnx": float(np.abs(onnx - ref).max()), "int8": float(np.abs(q - ref).max()),
                           "agree": float((q.argmax(1) == ref.argmax(1)).mean()), "shape": list(onnx.shape)}}))
    """)
    got = json.loads(out.strip().splitlines()[-1])
    assert got["shape"] == [20, 2]
    assert got["onnx"] <= 1e-4
    assert 0 < got["int8"] < 0.5 and got["agree"] >= 0.8  # quantised: close, not identical


def test_int8_is_quantised_and_its_figures_are_real(int8_export, cls_ft):
    import onnx

    from workbench.serving import onnx_task_model
    from workbench.tasks.heads import load_task_model
    from workbench.tasks.inference import evaluate_records
    from workbench.stages.finetune import read_records
    from workbench.config import TaskDataConfig
    import types

    ops = {n.op_type for n in onnx.load(str(int8_export / "model_quantized.onnx")).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    info = json.loads((int8_export / "serving.json").read_text(encoding="utf-8"))
    assert info["onnx_int8"]["size_mb"] < info["onnx_fp32"]["size_mb"]
    _, _, tok, spec = load_task_model(int8_export, needed_by="test")
    data = TaskDataConfig(**spec.data)
    records, _ = read_records(str(cls_ft / "test.tsv"), types.SimpleNamespace(task=spec.task, data=data), data)
    m, _ = evaluate_records(onnx_task_model(int8_export / "model_quantized.onnx"), None, tok, spec, records)
    assert m["accuracy"] == pytest.approx(info["onnx_int8"]["accuracy"])
    assert info["onnx_int8"]["delta"] == pytest.approx(info["onnx_int8"]["accuracy"] - info["pytorch_fp32"]["accuracy"])
    for batch in ("batch_1", "batch_32"):
        assert set(info["latency_ms"][batch]) == {"pytorch_fp32", "onnx_fp32", "onnx_int8"}
        assert all(v > 0 for v in info["latency_ms"][batch].values())
    card = (int8_export / "README.md").read_text(encoding="utf-8")
    assert "## Serving export" in card and "model_quantized.onnx" in card and "ONNX parity" in card
    manifest = json.loads((int8_export / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "int8" and "model_quantized.onnx" in manifest["files"]


def test_fp16_weights_and_card(cls_ft):
    from safetensors import safe_open

    from workbench.cli import main

    out = cls_ft / "fp16"
    assert main(["export", f"input={cls_ft / 'ft'}", f"output={out}", "format=fp16", "latency_rounds=0"]) == 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    info = json.loads((out / "serving.json").read_text(encoding="utf-8"))
    assert info["pytorch_fp16"]["size_mb"] < 0.6 * info["pytorch_fp16"]["fp32_size_mb"]
    assert abs(info["pytorch_fp16"]["delta"]) <= 0.05
    assert "PyTorch fp16" in (out / "README.md").read_text(encoding="utf-8")
    assert not (out / "model.onnx").exists()


def test_parity_failure_fails_the_export(cls_ft, cli):
    code, _, err = cli("export", f"input={cls_ft / 'ft'}", f"output={cls_ft / 'strict'}", "format=onnx",
                       "parity_tolerance=1e-15", "latency_rounds=0")
    assert code == 2 and "parity_tolerance=1e-15" in err and "fix:" in err
    assert not (cls_ft / "strict").exists()  # nothing half-made is left


def test_missing_test_file_is_named(cls_ft, cli, tmp_path):
    code, _, err = cli("export", f"input={cls_ft / 'ft'}", f"output={tmp_path / 'x'}", "format=onnx",
                       f"eval_file={tmp_path / 'nope.tsv'}")
    assert code == 2 and "nope.tsv" in err and "eval_file=" in err


def test_mean_pooled_workbench_model_exports_to_onnx(cls_ft, tmp_path):
    """A bert_workbench model (pooling=mean, its own modeling file) goes through the same
    exporter and parity check."""
    from workbench.cli import main

    assert main(["finetune", f"model={cls_ft / 'base'}", f"train={cls_ft / 'train.tsv'}", f"valid={cls_ft / 'valid.tsv'}",
                 f"test={cls_ft / 'test.tsv'}", f"output={tmp_path / 'ft'}", "max_steps=3", "max_length=48",
                 "pooling=mean", *FAST]) == 0
    assert main(["export", f"input={tmp_path / 'ft'}", f"output={tmp_path / 'onnx'}", "format=onnx",
                 "latency_rounds=0"]) == 0
    info = json.loads((tmp_path / "onnx" / "serving.json").read_text(encoding="utf-8"))
    assert info["parity"]["max_abs_logit_diff"] <= 1e-4 and info["onnx_fp32"]["delta"] == pytest.approx(0, abs=1e-9)


@pytest.mark.slow
def test_token_classification_onnx_and_crf_refused(tmp_path, cli):
    from workbench.cli import main

    sents = ner_sentences(140, max_chars=40)
    write_conll(tmp_path / "train.txt", sents[:100])
    write_conll(tmp_path / "valid.txt", sents[100:140])
    tiny_model(tmp_path / "base", ["".join(c for c, _ in s) for s in sents])
    common = [f"model={tmp_path / 'base'}", "task=tagging", f"train={tmp_path / 'train.txt'}",
              f"valid={tmp_path / 'valid.txt'}", "max_steps=6", "max_length=32", *FAST]
    assert main(["finetune", *common, f"output={tmp_path / 'ft'}"]) == 0
    assert main(["export", f"input={tmp_path / 'ft'}", f"output={tmp_path / 'onnx'}", "format=onnx",
                 "latency_rounds=2"]) == 0
    info = json.loads((tmp_path / "onnx" / "serving.json").read_text(encoding="utf-8"))
    assert info["eval"]["role"] == "valid"  # no test file: the valid one, said so
    assert info["parity"]["max_abs_logit_diff"] <= 1e-4 and info["onnx_fp32"]["delta"] == pytest.approx(0, abs=1e-9)
    assert main(["finetune", *common, "crf=true", f"output={tmp_path / 'crf'}"]) == 0
    code, _, err = cli("export", f"input={tmp_path / 'crf'}", f"output={tmp_path / 'crf-onnx'}", "format=onnx")
    assert code == 2 and "Viterbi" in err and "format=hf" in err
