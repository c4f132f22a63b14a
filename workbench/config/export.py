"""Config of `export`."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from workbench.config._base import StageConfig


class ExportConfig(StageConfig):
    """Package a finetune output as a plain transformers directory with a model card and label maps (or as ONNX / int8 / fp16 serving exports), or a pretrain output as a fill-mask model with its card."""

    output_dir_name: typing.ClassVar[str] = "export"

    input: str | None = None
    """A `finetune` output directory (default `<run>/finetune-<task>` of the one finetune in the run), or a `pretrain` output (the masked LM as a fill-mask deliverable)."""
    name: str | None = None
    """Model name for the card's title; default the output directory's name."""
    format: Literal["hf", "onnx", "int8", "fp16"] = "hf"
    """hf: the transformers directory (fp32). onnx: plus `model.onnx`, its logits checked against PyTorch's on held-out inputs (<= parity_tolerance). int8: plus `model_quantized.onnx` (onnxruntime dynamic quantisation), with the accuracy delta on the test set and the CPU latency speed-up measured. fp16: `model.safetensors` in float16, accuracy delta measured. A `pretrain` input takes hf or fp16 (a fill-mask model); a CRF tagger only hf (Viterbi is not in the ONNX graph). Results go to serving.json and the card."""
    eval_file: str | None = None
    """onnx/int8/fp16: labelled file (in the finetune's data format) for the parity inputs and the accuracy delta; default the finetune's test file, else its valid file."""
    eval_max_records: int | None = None
    """onnx/int8/fp16: use only the first this many records of eval_file; null = all."""
    parity_tolerance: float = 1e-4
    """onnx/int8: largest allowed |logit difference| between the fp32 ONNX graph and PyTorch on the held-out inputs; more fails the export."""
    latency_rounds: int = 20
    """onnx/int8/fp16: interleaved timing rounds per engine at batch 1 and 32 (medians reported); 0 = no latency."""
    mlm_eval: bool = True
    """pretrain input: score the base model and the pretrained one on the held-out blocks of the pretrain's segment input with pretrain's masks (the card's before/after); false: the card gives pretrain's own final eval loss only."""
    mlm_max_blocks: int | None = None
    """pretrain input with mlm_eval: score only the first this many held-out blocks; null = all."""

    def problems(self) -> list[str]:
        out = []
        if self.parity_tolerance <= 0:
            out.append("parity_tolerance: must be > 0")
        if self.latency_rounds < 0:
            out.append("latency_rounds: must be >= 0")
        for key in ("eval_max_records", "mlm_max_blocks"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                out.append(f"{key}: must be >= 1 (or null for all)")
        return out

    def input_stage(self) -> str | None:
        """The stage that wrote the input directory (finetune or pretrain), from its manifest."""
        import json

        try:
            return json.loads((self.input_path() / "manifest.json").read_text(encoding="utf-8")).get("stage")
        except (OSError, ValueError):
            return None

    def input_path(self) -> Path:
        if self.input:
            return Path(self.input)
        found = sorted(Path(self.run).glob("finetune-*"))
        return found[0] if len(found) == 1 else Path(self.run) / "finetune-classification"

    def output_path(self) -> Path:
        if self.output:
            return Path(self.output)
        base = "pretrain" if self.input_stage() == "pretrain" else self.input_path().name.removeprefix("finetune-")
        return Path(self.run) / "export" / (base if self.format == "hf" else f"{base}-{self.format}")
