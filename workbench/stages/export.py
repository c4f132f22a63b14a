"""export: package a finetune output for use without zh-workbench.

    workbench export input=runs/demo/finetune-tagging output=runs/demo/export/tagging

The output is a ``save_pretrained`` directory that loads offline with plain transformers,
``pipeline("text-classification" | "token-classification", model=DIR)`` (QA: ``qa_inference.py``
beside it, tasks/qa.py; pooling / layer mix / adapters: ``modeling_bert_workbench.py`` beside
it and ``trust_remote_code=True``, said in the card), plus:
  - README.md   model card: base model, data (file hashes, counts, label distribution; no
                corpus text), metrics with per-class/per-entity tables, config, intended
                use, limits, how to load;
  - labels.json labels with train counts, id2label of the model's outputs (tags for NER);
  - CRF models: one BertCrfForTokenClassification (CRF inside model.safetensors) and its
                modeling_bert_crf.py; plain pipeline() refuses it, trust_remote_code=True
                decodes with the CRF (workbench/tasks/crf_export.py);
  - task.json, metrics.json copied from the finetune output;
  - manifest.json with hashes of every file.

Serving formats (workbench/serving.py), each also writing serving.json and a card section:
  format=onnx   + model.onnx, its logits checked against PyTorch on held-out inputs (<= 1e-4)
  format=int8   + model_quantized.onnx (onnxruntime dynamic quantisation): test-set metric
                delta and CPU latency speed-up measured
  format=fp16   model.safetensors in float16, metric delta measured
A CRF tagger exports as hf only (its Viterbi is not in those graphs).

A `pretrain` input exports the masked LM itself (workbench/pretrained_export.py): a
fill-mask directory whose card gives corpus size, budget, masking, base model and the
held-out MLM loss before / after continued pretraining.
"""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from workbench.config import ExportConfig
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, owns_output, read_manifest, require_stage_output,
                                write_manifest)
from workbench.report.model_card import model_card
from workbench.tasks.crf_export import package_tagging_export
from workbench.tasks.encoder import is_workbench_model
from workbench.tasks.encoder import loading_note as workbench_loading_note
from workbench.tasks.heads import load_task_model
from workbench.vocab.normalize import char_map_in_dir

# Files of a finetune output that are not part of the export (plots stay with the run;
# metrics.json is written without corpus text, below).
_SKIP = {MANIFEST, "metrics.json"}

# Keys of metrics.json that can hold corpus text (the raw strings behind [UNK]s, repaired
# lines): dropped from the export, their counts kept.
_CORPUS_TEXT_KEYS = ("top_unk", "repairs")


def public_metrics(value: Any) -> Any:
    """metrics.json without corpus text: `top_unk` / `repairs` lists become their lengths."""
    if isinstance(value, dict):
        return {(f"{k}_count" if k in _CORPUS_TEXT_KEYS and isinstance(v, list) else k):
                (len(v) if k in _CORPUS_TEXT_KEYS and isinstance(v, list) else public_metrics(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [public_metrics(v) for v in value]
    return value


@owns_output("export")
def run(cfg: ExportConfig) -> dict[str, Any]:
    started = time.time()
    src = cfg.input_path()
    if cfg.input_stage() == "pretrain":  # the continued-pretrained masked LM as a deliverable
        from workbench.pretrained_export import export_pretrained

        return export_pretrained(cfg, src, cfg.output_path())
    if cfg.input_stage() == "average" and (read_manifest(src) or {}).get("source_stage") == "pretrain":
        raise StageInputError(f"export: {src} is an average of pretrain checkpoints; the pretrained-model export "
                              "reads its corpus, budget and held-out losses from a pretrain manifest, which an "
                              "average does not have.\n  fix: export the pretrain output itself, or fine-tune from "
                              f"{src} and export that")
    # A task model: a finetune output, a distilled student, or an average of finetune snapshots.
    upstream = require_stage_output(src, ("finetune", "distil", "average"), needed_by="export")
    # The weights must load completely for the task's head, with the tokenizer, before the
    # export is announced as loadable (a random head would be served silently otherwise).
    model, _crf, tok, spec = load_task_model(src, needed_by="export")
    del _crf
    metrics = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    out = cfg.output_path()
    name = cfg.name or out.name
    with atomic_output_dir(out) as tmp:
        for p in sorted(src.iterdir()):
            if p.is_file() and p.name not in _SKIP and not p.name.endswith(".png"):
                shutil.copy2(p, tmp / p.name)
        (tmp / "metrics.json").write_text(json.dumps(public_metrics(metrics), ensure_ascii=False, indent=2) + "\n",
                                          encoding="utf-8")
        names = spec.output_labels()
        labels = {"task": spec.task, "labels": spec.labels, "counts": metrics.get("label_map", {}).get("counts", {}),
                  "id2label": {str(i): n for i, n in enumerate(names)}}
        if spec.task == "tagging":
            labels["scheme"] = spec.scheme
        (tmp / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        if spec.task == "tagging":  # CJK words without spaces; a CRF becomes part of the model (crf_export.py)
            package_tagging_export(tmp, spec)
        if spec.task == "qa":  # no QA pipeline in transformers 5: the decoder ships as qa_inference.py (tasks/qa.py)
            from workbench.tasks import qa

            qa.package_qa_export(tmp)
            # A layer mix / adapters (bert_workbench): the card's own section says that
            # qa_inference.py loads it with trust_remote_code, and why.
            card = qa.model_card(name, spec, metrics, upstream, custom=is_workbench_model(tmp))
        else:
            card = model_card(name, spec, metrics, upstream, char_map_in_dir(src))
            if is_workbench_model(tmp):  # pooling / layer mix / adapters: how to load the shipped modeling file
                card += "\n" + workbench_loading_note(spec.task)
        serving = None
        if cfg.format != "hf":  # ONNX / int8 / fp16 beside the transformers files, measured (workbench/serving.py)
            from workbench import serving as srv

            serving = srv.serving_export(cfg.format, tmp, model, tok, spec, upstream, eval_file=cfg.eval_file,
                                         max_records=cfg.eval_max_records, tolerance=cfg.parity_tolerance,
                                         rounds=cfg.latency_rounds)
            (tmp / "serving.json").write_text(json.dumps(serving, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            card += "\n" + srv.card_section(serving)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        manifest = write_manifest(
            tmp, stage="export", config=cfg.model_dump(mode="json"),
            inputs=[{"finetune": str(src), "created": upstream.get("created"),
                     "model_sha256": upstream.get("outputs", {}).get("model.safetensors")},
                    *[e for e in upstream.get("inputs", []) if "sha256" in e]],
            counts={k: v for k, v in upstream.get("counts", {}).items() if k in ("train", "valid", "test", "labels")},
            seed=upstream.get("seed", 0), started=started, finished=time.time(),
            extra={"task": spec.task, "pipeline": {"tagging": "token-classification", "qa": "question-answering"}.get(
                       spec.task, "text-classification"),
                   "format": cfg.format, **({"serving": serving} if serving else {})},
        )
    print(f"export → {out}: {spec.task} model, "
          + ("AutoModelForQuestionAnswering + qa_inference.py (transformers 5 has no question-answering pipeline)"
             if spec.task == "qa" else "pipeline-loadable")
          + (" with trust_remote_code=True (BERT + CRF, modeling_bert_crf.py)" if spec.crf else "")
          + (" with trust_remote_code=True (modeling_bert_workbench.py"
             + ("; qa_inference.py passes it for this model type)" if spec.task == "qa" else ")")
             if is_workbench_model(out) else ""))
    if serving:
        from workbench.serving import summary_line

        print(summary_line(serving))
    return manifest
