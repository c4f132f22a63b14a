"""export: package a finetune output for use without zh-workbench.

    workbench export input=runs/demo/finetune-tagging output=runs/demo/export/tagging

The output is a ``save_pretrained`` directory that loads offline with plain transformers,
``pipeline("text-classification" | "token-classification", model=DIR)``, plus:
  - README.md   model card: base model, data (file hashes, counts, label distribution; no
                corpus text), metrics with per-class/per-entity tables, config, intended
                use, limits, how to load;
  - labels.json labels with train counts, id2label of the model's outputs (tags for NER);
  - crf_decode.py (CRF models) standalone Viterbi decoding (torch + safetensors); the
                plain emission model still loads in the pipeline (argmax decoding);
  - task.json, metrics.json, crf.safetensors copied from the finetune output;
  - manifest.json with hashes of every file.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from workbench.config import ExportConfig
from workbench.manifest import MANIFEST, atomic_output_dir, require_stage_output, write_manifest
from workbench.report.model_card import model_card
from workbench.tasks.heads import TaskSpec
from workbench.vocab.normalize import char_map_in_dir

# Files of a finetune output that are not part of the export (plots stay with the run).
_SKIP = {MANIFEST}


def run(cfg: ExportConfig) -> dict[str, Any]:
    started = time.time()
    src = cfg.input_path()
    upstream = require_stage_output(src, "finetune", needed_by="export")
    spec = TaskSpec.load(src)
    metrics = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    out = cfg.output_path()
    name = cfg.name or out.name
    with atomic_output_dir(out) as tmp:
        for p in sorted(src.iterdir()):
            if p.is_file() and p.name not in _SKIP and not p.name.endswith(".png"):
                shutil.copy2(p, tmp / p.name)
        names = spec.output_labels()
        labels = {"task": spec.task, "labels": spec.labels, "counts": metrics.get("label_map", {}).get("counts", {}),
                  "id2label": {str(i): n for i, n in enumerate(names)}}
        if spec.task == "tagging":
            labels["scheme"] = spec.scheme
        (tmp / "labels.json").write_text(json.dumps(labels, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        if spec.crf:
            shutil.copy2(Path(__file__).resolve().parents[1] / "tasks" / "crf_decode.py", tmp / "crf_decode.py")
        (tmp / "README.md").write_text(model_card(name, spec, metrics, upstream, char_map_in_dir(src)), encoding="utf-8")
        manifest = write_manifest(
            tmp, stage="export", config=cfg.model_dump(mode="json"),
            inputs=[{"finetune": str(src), "created": upstream.get("created"),
                     "model_sha256": upstream.get("outputs", {}).get("model.safetensors")},
                    *[e for e in upstream.get("inputs", []) if "sha256" in e]],
            counts={k: v for k, v in upstream.get("counts", {}).items() if k in ("train", "valid", "test", "labels")},
            seed=upstream.get("seed", 0), started=started, finished=time.time(),
            extra={"task": spec.task, "pipeline": "token-classification" if spec.task == "tagging" else "text-classification"},
        )
    print(f"export → {out}: {spec.task} model, pipeline-loadable" + (", with crf_decode.py" if spec.crf else ""))
    return manifest
