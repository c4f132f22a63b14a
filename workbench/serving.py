"""Serving exports of a task model: ONNX (fp32), ONNX int8, fp16 safetensors.

Used by `workbench export format=onnx|int8|fp16` (workbench/stages/export.py) and by
benchmarks/bench_serving.py. What each gives and how it is checked:

  onnx   `model.onnx`: torch.onnx's torch.export-based ("dynamo") exporter, batch and
         sequence axes dynamic. At export time PyTorch and onnxruntime run the same
         held-out batches; the largest |logit difference| must be <= the tolerance
         (default 1e-4) or the export fails. The legacy TorchScript exporter
         (dynamo=False) gives the same parity on BERT, but it is deprecated in torch 2.9+,
         so the maintained path is used.
  int8   `model_quantized.onnx` (optimum's name for it) next to `model.onnx`:
         onnxruntime's dynamic quantisation (`quantize_dynamic`, int8 weights of every
         MatMul, activations quantised per batch at run time). optimum is not used: its
         releases pin transformers < 5.
  fp16   `model.safetensors` in float16 (config `dtype: float16`): half the size; on a
         CPU it is slower than fp32 (it is meant for GPUs), its accuracy is measured anyway.

Accuracy deltas run the workbench's own evaluation (tasks.inference.evaluate_records:
truncation, windows, metrics) with the ONNX session in place of the PyTorch model
(``OnnxTaskModel``), so the figures are the ones `workbench evaluate` would give.
Latency: medians of interleaved rounds (every engine once per round, in rotating order),
batch 1 and batch 32 of real held-out texts, the same threads for torch and onnxruntime.
"""

from __future__ import annotations

import statistics
import time
import types
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from workbench.errors import StageInputError

ONNX_FILE = "model.onnx"
INT8_FILE = "model_quantized.onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
PARITY_TOLERANCE = 1e-4


class ParityError(StageInputError):
    """The ONNX graph's logits differ from PyTorch's by more than the tolerance."""


def onnx_task_model(path: str | Path, *, threads: int | None = None):
    """An onnxruntime session behind the interface tasks.inference uses of a PyTorch model:
    ``model(**batch).logits``, ``.eval()``, ``.training``, ``.parameters()`` (the device)."""
    import torch

    class _OnnxTaskModel(torch.nn.Module):
        def __init__(self, session):
            super().__init__()
            self.session = session
            self._device_anchor = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # CPU
            self._inputs = [i.name for i in session.get_inputs()]

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
            feed = {"input_ids": input_ids, "attention_mask": attention_mask if attention_mask is not None
                    else torch.ones_like(input_ids),
                    "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
            out = self.session.run(None, {k: feed[k].cpu().numpy().astype(np.int64) for k in self._inputs})[0]
            return types.SimpleNamespace(logits=torch.from_numpy(out))

    return _OnnxTaskModel(session(path, threads=threads))


def session(path: str | Path, *, threads: int | None = None):
    """A CPU onnxruntime session with `threads` intra-op threads (default: torch's)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def export_onnx(model, path: str | Path, example: dict) -> dict[str, Any]:
    """Write `model` (a transformers sequence/token classification model) to `path` as ONNX,
    inputs input_ids / attention_mask / token_type_ids [batch, seq] (int64), output logits.
    `example`: a padded batch (>= 2 rows, >= 2 tokens, so no axis specialises to 1)."""
    import torch

    model.eval()
    args = tuple(example[k].to(torch.long) for k in INPUT_NAMES)
    if args[0].shape[0] < 2 or args[0].shape[1] < 2:
        raise ValueError("export_onnx: the example batch needs >= 2 rows and >= 2 tokens")
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")

    class _Logits(torch.nn.Module):  # a plain tensor out, named `logits`
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    started = time.time()
    import logging
    import warnings

    # The exporter's passes log every step at INFO (e.g. each deduplicated initializer).
    quiet = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export",
                                            "torch.onnx._internal.exporter._registration")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    quiet[-1].setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::..." x 3
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's axis-renaming notes
            program = torch.onnx.export(
                _Logits(model), args, input_names=list(INPUT_NAMES), output_names=["logits"],
                dynamic_shapes=({0: batch, 1: seq},) * 3, dynamo=True, verbose=False)
            program.save(str(path))
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    import onnx

    return {"exporter": "torch.onnx.export(dynamo=True)", "opset": int(onnx.load(str(path), load_external_data=False)
                                                                          .opset_import[0].version),
            "export_s": round(time.time() - started, 2), "torch": torch.__version__, "onnx": onnx.__version__}


def quantize_int8(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """onnxruntime dynamic quantisation: int8 weights (QInt8) for MatMul/Gemm."""
    import logging

    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" note on every call
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return {"quantizer": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
            "onnxruntime": onnxruntime.__version__}


def max_logit_diff(reference, candidate, batches: Sequence[dict]) -> float:
    """Largest |logit difference| of two models over `batches` (padded positions of
    token-level logits excluded: they are never read)."""
    import torch

    worst = 0.0
    with torch.no_grad():
        for b in batches:
            a = reference(**b).logits.float()
            c = candidate(**b).logits.float()
            diff = (a - c).abs()
            if diff.dim() == 3:
                diff = diff[b["attention_mask"].bool()]
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst


def held_out_batches(tok, spec, texts: Sequence[str], pairs: Sequence[str] | None, *, batch_size: int,
                     limit: int | None = None) -> list[dict]:
    """Padded batches of `texts` encoded as the task model sees them (truncation / windows)."""
    from workbench.tasks.inference import pad_batch
    from workbench.tasks.windows import encode_chars, encode_classification, tagging_windows

    texts = list(texts)[:limit] if limit else list(texts)
    if spec.task == "tagging":
        encs = encode_chars(tok, texts)
        windows, _ = tagging_windows(encs, None, None, scheme=spec.scheme, max_length=spec.max_length,
                                     overlap=spec.overlap(), cls_id=tok.cls_token_id, sep_id=tok.sep_token_id)
        features = [{"input_ids": w.input_ids} for w in windows]
    else:
        pairs = list(pairs)[:len(texts)] if pairs is not None else None
        enc, _ = encode_classification(tok, texts, pairs, max_length=spec.max_length, strategy=spec.truncation,
                                       head=spec.head_tokens)
        features = [{"input_ids": a, "token_type_ids": t} for a, t in zip(enc["input_ids"], enc["token_type_ids"])]
    return [pad_batch(features[i:i + batch_size], tok.pad_token_id) for i in range(0, len(features), batch_size)]


def check_parity(reference, onnx_model, batches: Sequence[dict], tolerance: float, *, what: str) -> dict[str, Any]:
    diff = max_logit_diff(reference, onnx_model, batches)
    rows = sum(len(b["input_ids"]) for b in batches)
    if not diff <= tolerance:  # NaN fails too
        raise ParityError(
            f"export: {what}: ONNX logits differ from PyTorch's by up to {diff:.3g} on {rows} held-out inputs, more "
            f"than parity_tolerance={tolerance:g}; the ONNX graph does not compute this model\n"
            "  fix: report it with the versions in manifest.json; serve format=hf meanwhile (or raise "
            "parity_tolerance= if you accept the difference)")
    return {"max_abs_logit_diff": diff, "tolerance": tolerance, "inputs": rows, "passed": True}


def latency(engines: dict[str, Callable[[dict], Any]], batches: dict[str, dict], *, rounds: int,
            warmup: int = 2) -> dict[str, dict[str, float]]:
    """{batch name: {engine: median ms}} over `rounds` interleaved rounds: each round runs
    every engine once on the batch, the engine order rotating between rounds, so drifts of
    the machine's speed hit every engine alike."""
    import torch

    names = list(engines)
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for bname, batch in batches.items():
            times: dict[str, list[float]] = {n: [] for n in names}
            for r in range(warmup + rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for n in order:
                    t = time.perf_counter()
                    engines[n](batch)
                    if r >= warmup:
                        times[n].append((time.perf_counter() - t) * 1e3)
            out[bname] = {n: statistics.median(v) for n, v in times.items()}
            out[bname + "_iqr"] = {n: float(np.subtract(*np.percentile(v, [75, 25]))) for n, v in times.items()}
    return out


def save_fp16(model, directory: Path) -> None:
    """`model` saved to `directory` in float16 (config.json `dtype: float16`)."""
    import copy

    import torch

    copy.deepcopy(model).to(torch.float16).save_pretrained(str(directory))  # `model` stays fp32


def file_mb(path: str | Path) -> float:
    return round(Path(path).stat().st_size / 2**20, 2)


# --------------------------------------------------------------------------- export format=onnx|int8|fp16
_MAIN_METRIC = {"tagging": "f1", "multilabel": "micro_f1"}


def main_metric(task: str) -> str:
    return _MAIN_METRIC.get(task, "accuracy")


def eval_records(eval_file: str | None, finetune_manifest: dict, spec, *, max_records: int | None,
                 needed_by: str = "export") -> tuple[list, dict[str, Any]]:
    """The held-out records for parity and accuracy: `eval_file`, else the finetune's test
    file, else its valid file (read in the model's data format); and where they came from."""
    from workbench.config import TaskDataConfig
    from workbench.manifest import sha256_file
    from workbench.stages.finetune import read_records

    roles = {e.get("role"): e for e in finetune_manifest.get("inputs", []) if e.get("role") in ("test", "valid")}
    if eval_file:
        path, role = eval_file, "eval_file"
    else:
        entry = roles.get("test") or roles.get("valid")
        if entry is None:
            raise StageInputError(f"{needed_by}: the finetune output has no test or valid file to measure the serving "
                                  "export on\n  fix: pass eval_file=FILE (a labelled file in the model's data format)")
        path, role = entry["path"], entry["role"]
    if not Path(path).is_file():
        raise StageInputError(f"{needed_by}: the {role} file {path} (recorded by finetune) is not there; the serving "
                              "export's parity and accuracy are measured on it\n"
                              "  fix: pass eval_file=FILE (a labelled file in the model's data format)")
    data = TaskDataConfig(**spec.data)
    records, _ = read_records(str(path), types.SimpleNamespace(task=spec.task, data=data), data)
    total = len(records)
    if max_records:
        records = records[:max_records]
    if not records:
        raise StageInputError(f"{needed_by}: {path} has no records\n  fix: pass eval_file= a labelled file")
    return records, {"role": role, "file": Path(path).name, "sha256": sha256_file(path), "records": len(records),
                     "of": total}


def _texts(records, spec) -> tuple[list[str], list[str] | None]:
    return [r.text for r in records], ([r.text_pair or "" for r in records] if spec.task == "pair" else None)


def serving_export(fmt: str, directory: Path, model, tok, spec, finetune_manifest: dict, *, eval_file: str | None,
                   max_records: int | None, tolerance: float, rounds: int) -> dict[str, Any]:
    """Add format `fmt` (onnx | int8 | fp16) of the fp32 PyTorch `model` to the export
    `directory` (which already holds the fp32 transformers files); measure it against
    `model` on held-out records. Returns the serving record (serving.json)."""
    import torch

    from workbench.tasks.inference import evaluate_records

    if spec.task not in ("classification", "pair", "multilabel", "tagging"):
        raise StageInputError(f"export: format={fmt} is made for classification, pair, multilabel and tagging models, "
                              f"not {spec.task}\n  fix: export format=hf")
    if spec.crf:
        raise StageInputError(
            f"export: format={fmt} of a CRF tagger: the CRF's Viterbi decoding is not part of an ONNX / fp16 serving "
            "graph, and its emissions alone are a different, much worse tagger (see the model card's CRF section)\n"
            "  fix: export format=hf (BERT + CRF in one model, trust_remote_code=True), or fine-tune with crf=false "
            "for an ONNX / int8 tagger")
    records, source = eval_records(eval_file, finetune_manifest, spec, max_records=max_records)
    texts, pairs = _texts(records, spec)
    key = main_metric(spec.task)
    info: dict[str, Any] = {"format": fmt, "task": spec.task, "eval": source, "metric": key,
                            "threads": torch.get_num_threads(), "torch": torch.__version__}
    model = model.float().eval()
    ref_metrics, _ = evaluate_records(model, None, tok, spec, records, batch_size=32)
    info["pytorch_fp32"] = {key: ref_metrics[key], "size_mb": file_mb(directory / "model.safetensors")}
    parity_batches = held_out_batches(tok, spec, texts, pairs, batch_size=16, limit=64)
    engines: dict[str, Callable[[dict], Any]] = {"pytorch_fp32": lambda b: model(**b)}
    if fmt in ("onnx", "int8"):
        example = held_out_batches(tok, spec, texts, pairs, batch_size=2, limit=2)[0]
        if example["input_ids"].shape[0] < 2:  # one record: repeat it
            example = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in example.items()}
        info["onnx"] = export_onnx(model, directory / ONNX_FILE, example)
        onnx_model = onnx_task_model(directory / ONNX_FILE)
        info["parity"] = check_parity(model, onnx_model, parity_batches, tolerance, what=ONNX_FILE)
        m, _ = evaluate_records(onnx_model, None, tok, spec, records, batch_size=32)
        info["onnx_fp32"] = {key: m[key], "delta": m[key] - ref_metrics[key], "size_mb": file_mb(directory / ONNX_FILE),
                             "file": ONNX_FILE}
        engines["onnx_fp32"] = lambda b: onnx_model(**b)
    if fmt == "int8":
        info["int8"] = quantize_int8(directory / ONNX_FILE, directory / INT8_FILE)
        q_model = onnx_task_model(directory / INT8_FILE)
        info["int8"]["max_abs_logit_diff"] = max_logit_diff(model, q_model, parity_batches)
        m, _ = evaluate_records(q_model, None, tok, spec, records, batch_size=32)
        info["onnx_int8"] = {key: m[key], "delta": m[key] - ref_metrics[key], "size_mb": file_mb(directory / INT8_FILE),
                             "file": INT8_FILE}
        engines["onnx_int8"] = lambda b: q_model(**b)
    if fmt == "fp16":
        fp32_mb = info["pytorch_fp32"]["size_mb"]
        save_fp16(model, directory)  # replaces model.safetensors and config.json
        from transformers import AutoConfig

        half = type(model).from_pretrained(str(directory), dtype=torch.float16).eval()
        if AutoConfig.from_pretrained(str(directory)).dtype not in ("float16", torch.float16):
            raise RuntimeError("fp16 export: config.json does not say float16")
        m, _ = evaluate_records(half, None, tok, spec, records, batch_size=32)
        info["pytorch_fp16"] = {key: m[key], "delta": m[key] - ref_metrics[key],
                                "size_mb": file_mb(directory / "model.safetensors"), "fp32_size_mb": fp32_mb,
                                "file": "model.safetensors", "computed_in": "float16 on the CPU"}
        engines["pytorch_fp16"] = lambda b: half(**b)
    if rounds:
        lat_batches = {}
        for n in (1, 32):
            got = held_out_batches(tok, spec, texts, pairs, batch_size=n, limit=n)
            if got and len(got[0]["input_ids"]) == n:
                lat_batches[f"batch_{n}"] = got[0]
        info["latency_ms"] = latency(engines, lat_batches, rounds=rounds)
        info["latency_rounds"] = rounds
        info["speedup_vs_pytorch_fp32"] = {
            b: {e: round(v["pytorch_fp32"] / v[e], 3) for e in v if e != "pytorch_fp32"}
            for b, v in info["latency_ms"].items() if not b.endswith("_iqr")}
    return info


def card_section(info: dict[str, Any]) -> str:
    """The model card's "Serving export" section (figures only, no text)."""
    from workbench.report.escape import md_code

    key = info["metric"]
    ev = info["eval"]
    lines = ["## Serving export", "",
             f"Format `{info['format']}`. Measured at export time on the {ev['records']:,} records of the "
             f"{ev['role']} file {md_code(ev['file'])} (sha256 {md_code(ev['sha256'][:16] + '…')}), "
             f"{info['threads']} CPU thread(s), torch {info['torch']}.", ""]
    if "parity" in info:
        p = info["parity"]
        lines += [f"- ONNX parity: largest |logit difference| from PyTorch {p['max_abs_logit_diff']:.2e} on "
                  f"{p['inputs']} held-out inputs (tolerance {p['tolerance']:g}); exporter "
                  f"{info['onnx']['exporter']}, opset {info['onnx']['opset']}."]
    if "int8" in info:
        lines += [f"- int8: {info['int8']['quantizer']} ({info['int8']['weight_type']} weights); largest |logit "
                  f"difference| from fp32 {info['int8']['max_abs_logit_diff']:.3g}."]
    lines += ["", f"| model | file | MB | {key} | delta vs PyTorch fp32 |", "|---|---|---|---|---|",
              f"| PyTorch fp32 | `model.safetensors` (format=hf) | {info['pytorch_fp32']['size_mb']} | "
              f"{info['pytorch_fp32'][key]:.4f} | |"]
    for name, label in (("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX int8"), ("pytorch_fp16", "PyTorch fp16")):
        if name in info:
            r = info[name]
            lines.append(f"| {label} | `{r['file']}` | {r['size_mb']} | {r[key]:.4f} | {r['delta']:+.4f} |")
    if "latency_ms" in info:
        lat = {b: v for b, v in info["latency_ms"].items() if not b.endswith("_iqr")}
        engines = list(next(iter(lat.values())))
        lines += ["", f"CPU latency, median ms of {info['latency_rounds']} interleaved rounds (speed-up vs PyTorch fp32):",
                  "", "| batch | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
        for b, v in lat.items():
            cells = [f"{v[e]:.1f}" + ("" if e == "pytorch_fp32" else f" ({v['pytorch_fp32'] / v[e]:.2f}x)") for e in engines]
            lines.append(f"| {b.removeprefix('batch_')} | " + " | ".join(cells) + " |")
    if "pytorch_fp16" in info:
        lines += ["", "fp16 halves the file; on a CPU it runs slower than fp32 (it is meant for GPUs: load with "
                  "`dtype=torch.float16` and move to `cuda`)."]
    if info["format"] in ("onnx", "int8"):
        f = INT8_FILE if info["format"] == "int8" else ONNX_FILE
        lines += ["", "Load with onnxruntime (inputs `input_ids`, `attention_mask`, `token_type_ids`, int64 "
                  "[batch, seq]; output `logits`; tokenize with this directory's tokenizer, truncating to the "
                  "model's max length):", "", "```python", "import onnxruntime as ort",
                  "from transformers import AutoTokenizer", "",
                  'tok = AutoTokenizer.from_pretrained("PATH")',
                  f'sess = ort.InferenceSession("PATH/{f}", providers=["CPUExecutionProvider"])',
                  'enc = tok(["今天天气不错"], return_tensors="np", truncation=True, padding=True)',
                  'logits = sess.run(["logits"], {k: enc[k].astype("int64") for k in ("input_ids", "attention_mask", '
                  '"token_type_ids")})[0]', "```"]
    return "\n".join(lines) + "\n"


def summary_line(info: dict[str, Any]) -> str:
    """One line for the terminal: parity, metric deltas, speed-ups at batch 1 / 32."""
    key = info["metric"]
    parts = [f"  {info['format']}: {key} PyTorch fp32 {info['pytorch_fp32'][key]:.4f}"]
    if "parity" in info:
        parts.append(f"ONNX parity max |Δlogit| {info['parity']['max_abs_logit_diff']:.1e}")
    for name in ("onnx_fp32", "onnx_int8", "pytorch_fp16"):
        if name in info:
            parts.append(f"{name} {info[name][key]:.4f} ({info[name]['delta']:+.4f})")
    for b, v in (info.get("speedup_vs_pytorch_fp32") or {}).items():
        parts.append(f"{b} speed-up " + ", ".join(f"{e} {x:.2f}x" for e, x in v.items()))
    return "; ".join(parts)
