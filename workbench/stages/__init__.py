"""Stage runners, one module per stage, imported only when that stage runs
(`workbench --help` stays fast and does not import torch or datasets)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

# command → "module:function"; the function takes the validated config.
RUNNERS = {
    "prepare": "workbench.stages.prepare:run",
    "segment": "workbench.stages.segment:run",
    "init-model": "workbench.stages.init_model:run",
    "vocab": "workbench.stages.vocab:run",
    "extend-vocab": "workbench.stages.extend_vocab:run",
    "pretrain": "workbench.stages.pretrain:run",
    "finetune": "workbench.stages.finetune:run",
    "export": "workbench.stages.export:run",
    "predict": "workbench.stages.predict:run",
    "evaluate": "workbench.stages.evaluate:run",
    "desensitise": "workbench.stages.desensitise:run",
    "remap": "workbench.stages.remap:run",
    "demo-data": "workbench.stages.demo_data:run",
    "report": "workbench.report.run_report:run",
    "verify": "workbench.stages.verify:run",
    "clean": "workbench.stages.clean:run",
    "experiment": "workbench.stages.experiment:run",
    "attention": "workbench.stages.attention:run",
    "average": "workbench.stages.average:run",
    "distil": "workbench.stages.distil:run",
}


def get_runner(command: str) -> Callable[[Any], Any]:
    module, func = RUNNERS[command].split(":")
    return getattr(importlib.import_module(module), func)
