"""The model card (README.md) of an exported fine-tuned model.

Built only from the finetune output's metrics.json, task.json, labels.json and manifest:
counts, label distributions, file names and hashes, metrics and the config - never any
text from the corpus (no examples), so a card can be published with a model trained on
private data.
"""

from __future__ import annotations

from typing import Any

from workbench.tasks.heads import TaskSpec
from workbench.tasks.metrics import format_table

_PIPELINE = {"tagging": "token-classification"}


def _examples(char_map: dict[str, str], n: int = 3) -> list[tuple[str, str]]:
    """A few visible rules spread over the map (e.g. ０→0, Ｚ→Z, ｚ→z)."""
    items = [(a, b) for a, b in sorted(char_map.items()) if not a.isspace()]
    return [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(min(n, len(items)))]


def _metric_lines(m: dict | None, task: str) -> list[str]:
    if not m:
        return ["(none)"]
    keys = ("precision", "recall", "f1", "macro_f1") if task == "tagging" else (
        ("micro_f1", "macro_f1", "exact_match") if task == "multilabel" else ("accuracy", "macro_f1", "weighted_f1"))
    return [f"- {k}: {m[k]:.4f}" for k in keys if k in m]


def model_card(name: str, spec: TaskSpec, metrics: dict[str, Any], finetune_manifest: dict[str, Any],
               char_map: dict[str, str] | None = None) -> str:
    """`char_map`: the character folding the tokenizer carries (workbench/vocab/normalize.py)."""
    task = spec.task
    cfg = finetune_manifest.get("config", {})
    counts = finetune_manifest.get("counts", {})
    pipeline_task = _PIPELINE.get(task, "text-classification")
    lines = [f"# {name}", ""]
    what = {"classification": "text classification", "pair": "sentence-pair classification",
            "multilabel": "multi-label text classification", "tagging": "Chinese character tagging (NER)"}[task]
    lines += [f"A BERT fine-tuned by zh-workbench for {what}"
              + (f" with a CRF ({spec.scheme.upper()} tags)" if spec.crf else "") + ".", ""]

    lines += ["## Base model", "", f"- `{spec.base_model}`", ""]

    lines += ["## Data", "", "No text from the training data is reproduced in this card.", ""]
    lines += ["| split | file | sha256 | records |", "|---|---|---|---|"]
    for entry in finetune_manifest.get("inputs", []):
        if "sha256" in entry:
            role = entry["role"]
            lines.append(f"| {role} | `{entry['path'].rsplit('/', 1)[-1]}` | `{entry['sha256'][:16]}…` | {counts.get(role, '')} |")
    label_counts = metrics.get("label_map", {}).get("counts", {})
    unit = "entities" if task == "tagging" else "records"
    total = sum(label_counts.values()) or 1
    lines += ["", f"Label distribution in train ({unit}):", "", "| label | count | share |", "|---|---|---|"]
    for label in spec.labels:
        c = label_counts.get(label, 0)
        lines.append(f"| {label} | {c} | {c / total:.1%} |")
    length = metrics.get("length", {})
    train_len = length.get("train", {})
    unk = train_len.get("unk")
    if unk:
        lines += ["", f"[UNK] tokens in the train text: {unk['unk']:,} of {unk['tokens']:,} ({unk['unk_rate']:.2%})."]
    if task == "tagging":
        lines += ["", f"Long sentences are cut into windows of {spec.max_length} tokens sharing {spec.overlap()} "
                  f"(train: {train_len.get('texts_split', 0)} of {train_len.get('texts', 0)} sentences split, "
                  f"{train_len.get('lost_entities', 0)} entities not learnable because no token starts in them); "
                  "predictions are stitched so that every character gets a tag."]
        rep = metrics.get("repairs", {})
        repaired = {k: v.get("repaired", 0) for k, v in rep.items() if v.get("repaired")}
        if repaired:
            lines += ["", f"Invalid tag sequences repaired when reading: {repaired}."]
    else:
        lines += ["", f"Texts longer than {spec.max_length} tokens are truncated ({spec.truncation}); train: "
                  f"{train_len.get('truncated', 0)} of {train_len.get('texts', 0)} truncated."]
    lines.append("")

    lines += ["## Metrics", "", f"Best epoch chosen by valid `{metrics.get('metric')}`"
              f" (seed {metrics.get('seed')}, epoch {metrics.get('best_epoch')}).", ""]
    for split in ("valid", "test"):
        m = metrics.get(split)
        lines += [f"**{split}**", ""] + _metric_lines(m, task) + [""]
        table = (m or {}).get("per_type" if task == "tagging" else "per_class")
        if table:
            lines += ["```", format_table(table), "```", ""]
    seeds = metrics.get("seeds")
    if seeds:
        lines += [f"Across seeds {seeds['seeds']}:", ""]
        for key, v in seeds.items():
            if isinstance(v, dict) and "mean" in v:
                lines.append(f"- {key}: {v['mean']:.4f} ± {v['std']:.4f} (sample std)")
        lines.append("")

    lines += ["## Training config", "", "```yaml"]
    for key in ("task", "max_length", "scheme", "crf", "epochs", "max_steps", "batch_size", "lr", "crf_lr",
                "weight_decay", "warmup_ratio", "freeze_layers", "early_stopping_patience", "seed", "seeds", "threshold"):
        if key in cfg and not (key in ("scheme", "crf", "crf_lr") and task != "tagging") \
                and not (key == "threshold" and task != "multilabel"):
            lines.append(f"{key}: {cfg[key]}")
    lines += ["```", ""]

    lines += ["## Intended use", "",
              f"{what.capitalize()} of Chinese text like the training data above. Evaluate on your own data before relying on it.", ""]
    lines += ["## Limits", "",
              "- Scores are for the splits above only; other domains, registers and time periods will score lower.",
              f"- Inputs longer than {spec.max_length} tokens (the tokenizer's `model_max_length`) are "
              + ("windowed by `workbench predict`; give the plain pipeline `stride=16` to window them too."
                 if task == "tagging"
                 else "truncated: the end of long texts is not seen (plain pipeline: pass `truncation=True`)."),
              (f"- The tokenizer folds {len(char_map)} characters before tokenizing ("
               + ", ".join(f"{a}→{b}" for a, b in _examples(char_map))
               + " ...), as `prepare` cleaned the pretraining text; nothing else is cleaned (URLs, @mentions, "
               "traditional → simplified ...): give texts in the form the training data had."
               if char_map else
               "- Texts are not cleaned or normalised before prediction; give them in the form the training data had."),
              "- Only [CLS] pooling was used (no mean pooling, adapters or LoRA)."]
    if spec.crf:
        lines.append("- The plain pipeline decodes the emission scores by argmax, which may give invalid tag "
                     "sequences; the CRF decode (below) is how the model was trained and evaluated.")
    lines.append("")

    lines += ["## How to load", "", "```python", "from transformers import pipeline", "",
              f'nlp = pipeline("{pipeline_task}", model="PATH/TO/THIS/DIR"'
              + (', aggregation_strategy="simple")' if task == "tagging" else (", top_k=None)" if task == "multilabel" else ")")),
              'nlp("今天天气不错"' + (", stride=16)" if task == "tagging" else ", truncation=True)"), "```", ""]
    if spec.crf:
        lines += ["With the CRF (needs only torch + safetensors besides transformers; `crf_decode.py` is in this "
                  "directory):", "", "```python",
                  "from transformers import AutoModelForTokenClassification, AutoTokenizer",
                  "from crf_decode import load_crf, predict", "",
                  'tok = AutoTokenizer.from_pretrained("PATH")',
                  'model = AutoModelForTokenClassification.from_pretrained("PATH").eval()',
                  'crf = load_crf("PATH")',
                  'predict("新华社北京电", model, tok, crf)  # [{start, end, type, text}, ...]', "```", ""]
    lines += ["Or with zh-workbench (long texts windowed, CRF applied): "
              "`workbench predict model=PATH input=texts.txt output=preds.jsonl`.", ""]
    lines += ["## Files", "", "- `config.json`, `model.safetensors`, tokenizer files: the transformers model"
              + (" (emission scores)" if spec.crf else ""),
              "- `labels.json`: labels with train counts, and the model's output ids",
              "- `task.json`: how zh-workbench runs the model (task, max_length, windows, scheme)",
              "- `metrics.json`: full metrics, per-class tables, length statistics"]
    if spec.crf:
        lines += ["- `crf.safetensors`: CRF transition/start/end scores and allowed-transition masks; tag names in its metadata",
                  "- `crf_decode.py`: standalone Viterbi decoding"]
    lines += ["- `manifest.json`: file hashes, inputs and versions", ""]
    return "\n".join(lines)
