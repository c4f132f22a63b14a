"""The model card (README.md) of an exported fine-tuned model.

Built only from the finetune output's metrics.json, task.json, labels.json and manifest:
counts, label distributions, file names and hashes, metrics and the config - never any
text from the corpus (no examples), so a card can be published with a model trained on
private data. Every user string (labels, names, file names, config values) is escaped
(workbench/report/escape.py; the config block gets a fence longer than any backtick run in it),
so a label such as `a|b`, `a\nb` or `<img src=x onerror=...>` neither breaks a table nor
becomes HTML where the card is rendered.
"""

from __future__ import annotations

import re
from typing import Any

from workbench.report.escape import md_cell, md_code, md_text
from workbench.tasks.heads import TaskSpec

_PIPELINE = {"tagging": "token-classification"}


def _examples(char_map: dict[str, str], n: int = 3) -> list[tuple[str, str]]:
    """A few visible rules spread over the map (e.g. ０→0, Ｚ→Z, ｚ→z)."""
    items = [(a, b) for a, b in sorted(char_map.items()) if not a.isspace()]
    return [items[round(i * (len(items) - 1) / max(n - 1, 1))] for i in range(min(n, len(items)))]


def _printable(value: object) -> str:
    """One line of plain text: control characters and line breaks shown as escapes."""
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(value))


def _code_block(lines: list[str], lang: str = "") -> list[str]:
    """A fenced code block around user text: each line made printable, and a fence longer
    than any backtick run inside, so nothing in it can close the block (HTML in a code block
    is shown, not rendered)."""
    body = [_printable(line) for line in lines]
    longest = max((len(run) for line in body for run in re.findall("`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + lang, *body, fence]


def _metric_lines(m: dict | None, task: str) -> list[str]:
    if not m:
        return ["(none)"]
    keys = ("precision", "recall", "f1", "macro_f1") if task == "tagging" else (
        ("micro_f1", "macro_f1", "exact_match") if task == "multilabel" else ("accuracy", "macro_f1", "weighted_f1"))
    return [f"- {k}: {m[k]:.4f}" for k in keys if k in m]


def _crf_section() -> list[str]:
    """How to load a BERT + CRF export and why plain loading refuses it (tasks/crf_export.py)."""
    return [
        "## The CRF", "",
        "This tagger is BERT plus a CRF: the CRF scores whole tag sequences and the best one (Viterbi) is the "
        "prediction; that is how it was trained and how the metrics above were measured. BERT's per-token "
        "scores alone (argmax, what a plain `BertForTokenClassification` would give) are a different, much "
        "worse tagger: invalid tag sequences, lost and broken entities.", "",
        "So the directory declares its own model type, `bert_crf`, with the code in `modeling_bert_crf.py`, and "
        "plain `pipeline(\"token-classification\", model=PATH)` / `AutoModelForTokenClassification` refuse to "
        "load it instead of silently dropping the CRF. In a script (no terminal to ask) you get:", "",
        "```text",
        "ValueError: The repository PATH contains custom code which must be executed to correctly load the model. "
        "You can inspect the repository content at /absolute/PATH .",
        " You can inspect the repository content at https://hf.co/PATH.",
        "Please pass the argument `trust_remote_code=True` to allow custom code to be run.",
        "```", "",
        "(in an interactive session transformers first asks `Do you wish to run the custom code? [y/N]`; "
        "answering `y` is the same as `trust_remote_code=True`). Supported ways, all giving the CRF's tags:", "",
        "1. `trust_remote_code=True`: runs `modeling_bert_crf.py` from this directory (about 200 lines, torch + "
        "transformers only, no downloads; read it first). The model's `logits` are the CRF max-marginals: for "
        "each token and tag, the score of the best tag sequence through that tag minus the best sequence's "
        "score. Their argmax is exactly the Viterbi path, so the pipeline's own decoding gives the CRF's "
        "entities, and `score` (a softmax over them) says how close the runner-up sequence is.", "",
        "   ```python",
        "   from transformers import pipeline",
        "",
        '   ner = pipeline("token-classification", model="PATH", trust_remote_code=True, aggregation_strategy="simple")',
        '   ner("新华社北京电")  # [{"entity_group": "LOC", "word": "北京", "start": 3, "end": 5, ...}]',
        "   ```", "",
        "2. Without `trust_remote_code`: import the class from the file yourself (same results):", "",
        "   ```python",
        "   import sys",
        '   sys.path.insert(0, "PATH")',
        "   from modeling_bert_crf import BertCrfForTokenClassification",
        "   from transformers import PreTrainedTokenizerFast, pipeline",
        "",
        '   model = BertCrfForTokenClassification.from_pretrained("PATH")',
        '   tok = PreTrainedTokenizerFast.from_pretrained("PATH")',
        '   ner = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="simple")',
        "   # model.decode(**tok(texts, return_tensors=\"pt\", padding=True)): Viterbi tag ids per text",
        "   ```", "",
        "3. zh-workbench: `workbench predict model=PATH input=texts.txt output=preds.jsonl` (also windows "
        "texts longer than the model's length and stitches them, as in evaluation).", "",
        "For texts up to the model's max length the three give the same entities. Longer texts: the pipeline "
        "with `stride=16` runs the CRF on each window and merges windows its own way, so entities near window "
        "edges can differ from `workbench predict`.", "",
    ]


def model_card(name: str, spec: TaskSpec, metrics: dict[str, Any], finetune_manifest: dict[str, Any],
               char_map: dict[str, str] | None = None) -> str:
    """`char_map`: the character folding the tokenizer carries (workbench/vocab/normalize.py)."""
    task = spec.task
    cfg = finetune_manifest.get("config", {})
    counts = finetune_manifest.get("counts", {})
    pipeline_task = _PIPELINE.get(task, "text-classification")
    lines = [f"# {md_text(name)}", ""]
    what = {"classification": "text classification", "pair": "sentence-pair classification",
            "multilabel": "multi-label text classification", "tagging": "Chinese character tagging (NER)"}[task]
    lines += [f"A BERT fine-tuned by zh-workbench for {what}"
              + (f" with a CRF ({spec.scheme.upper()} tags)" if spec.crf else "") + ".", ""]

    lines += ["## Base model", "", f"- {md_code(spec.base_model)}", ""]

    lines += ["## Data", "", "No text from the training data is reproduced in this card.", ""]
    lines += ["| split | file | sha256 | records |", "|---|---|---|---|"]
    for entry in finetune_manifest.get("inputs", []):
        if "sha256" in entry:
            role = entry["role"]
            lines.append(f"| {md_cell(role)} | {md_code(str(entry['path']).rsplit('/', 1)[-1])} | "
                         f"{md_code(str(entry['sha256'])[:16] + '…')} | {md_cell(counts.get(role, ''))} |")
    label_counts = metrics.get("label_map", {}).get("counts", {})
    unit = "entities" if task == "tagging" else "records"
    total = sum(label_counts.values()) or 1
    lines += ["", f"Label distribution in train ({unit}):", "", "| label | count | share |", "|---|---|---|"]
    for label in spec.labels:
        c = label_counts.get(label, 0)
        lines.append(f"| {md_cell(label)} | {c} | {c / total:.1%} |")
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
            lines += ["", f"Invalid tag sequences repaired when reading: {md_text(repaired)}."]
    else:
        lines += ["", f"Texts longer than {spec.max_length} tokens are truncated ({md_text(spec.truncation)}); train: "
                  f"{train_len.get('truncated', 0)} of {train_len.get('texts', 0)} truncated."]
    lines.append("")

    lines += ["## Metrics", "", f"Best epoch chosen by valid {md_code(metrics.get('metric'))}"
              f" (seed {md_text(metrics.get('seed'))}, epoch {md_text(metrics.get('best_epoch'))}).", ""]
    for split in ("valid", "test"):
        m = metrics.get(split)
        lines += [f"**{split}**", ""] + _metric_lines(m, task) + [""]
        table = (m or {}).get("per_type" if task == "tagging" else "per_class")
        if table:
            lines += [f"| {'entity' if task == 'tagging' else 'label'} | precision | recall | f1 | support |",
                      "|---|---|---|---|---|"]
            lines += [f"| {md_cell(k)} | {v['precision']:.4f} | {v['recall']:.4f} | {v['f1']:.4f} | {v['support']} |"
                      for k, v in table.items()]
            lines.append("")
    seeds = metrics.get("seeds")
    if seeds:
        lines += [f"Across seeds {md_text(seeds['seeds'])}:", ""]
        for key, v in seeds.items():
            if isinstance(v, dict) and "mean" in v:
                lines.append(f"- {md_text(key)}: {v['mean']:.4f} ± {v['std']:.4f} (sample std)")
        lines.append("")

    config_lines = []
    for key in ("task", "max_length", "scheme", "crf", "epochs", "max_steps", "batch_size", "lr", "crf_lr",
                "weight_decay", "warmup_ratio", "freeze_layers", "early_stopping_patience", "seed", "seeds", "threshold"):
        if key in cfg and not (key in ("scheme", "crf", "crf_lr") and task != "tagging") \
                and not (key == "threshold" and task != "multilabel"):
            config_lines.append(f"{key}: {cfg[key]}")
    lines += ["## Training config", "", *_code_block(config_lines, "yaml"), ""]

    lines += ["## Intended use", "",
              f"{what[0].upper() + what[1:]} of Chinese text like the training data above. Evaluate on your own data before relying on it.", ""]
    lines += ["## Limits", "",
              "- Scores are for the splits above only; other domains, registers and time periods will score lower.",
              f"- Inputs longer than {spec.max_length} tokens (the tokenizer's `model_max_length`) are "
              + ("windowed by `workbench predict`; give the plain pipeline `stride=16` to window them too."
                 if task == "tagging"
                 else "truncated: the end of long texts is not seen (plain pipeline: pass `truncation=True`)."),
              (f"- The tokenizer folds {len(char_map)} characters before tokenizing ("
               + ", ".join(f"{md_text(a)}→{md_text(b)}" for a, b in _examples(char_map))
               + " ...), as `prepare` cleaned the pretraining text; nothing else is cleaned (URLs, @mentions, "
               "traditional → simplified ...): give texts in the form the training data had."
               if char_map else
               "- Texts are not cleaned or normalised before prediction; give them in the form the training data had."),
              "- Only [CLS] pooling was used (no mean pooling, adapters or LoRA)."]
    if task == "tagging" and spec.scheme == "bioes":
        lines.append("- The pipeline's `aggregation_strategy=\"simple\"` groups B-/I- tags only: with these BIOES "
                     "tags an entity ending in E- comes back in two pieces. Use `aggregation_strategy=\"none\"` "
                     "and group the tags yourself, or `workbench predict`.")
    if spec.crf:
        lines.append("- Loading needs `trust_remote_code=True` (or importing `modeling_bert_crf.py` yourself): "
                     "see *The CRF* below. Plain loading fails on purpose.")
    lines.append("")

    lines += ["## How to load", "", "```python", "from transformers import pipeline", "",
              f'nlp = pipeline("{pipeline_task}", model="PATH/TO/THIS/DIR"'
              + (", trust_remote_code=True" if spec.crf else "")
              + (', aggregation_strategy="simple")' if task == "tagging" else (", top_k=None)" if task == "multilabel" else ")")),
              'nlp("今天天气不错"' + (", stride=16)" if task == "tagging" else ", truncation=True)"), "```", ""]
    if task == "tagging":
        lines += ["Each entity's `word` is the entity's tokens joined back together (Chinese without spaces, "
                  "lower-cased and character-folded as the tokenizer sees them); `start`/`end` are character "
                  "offsets into your text, so `text[start:end]` is the exact original.", ""]
    lines += ["Or with zh-workbench (long texts windowed" + (", CRF applied" if spec.crf else "") + "): "
              "`workbench predict model=PATH input=texts.txt output=preds.jsonl`.", ""]
    if spec.crf:
        lines += _crf_section()
    lines += ["## Files", "", "- `config.json`, `model.safetensors`, tokenizer files: the transformers model"
              + (" (BERT + CRF: model type `bert_crf`, the CRF's scores are in `model.safetensors`)" if spec.crf else ""),
              "- `labels.json`: labels with train counts, and the model's output ids",
              "- `task.json`: how zh-workbench runs the model (task, max_length, windows, scheme)",
              "- `metrics.json`: full metrics, per-class tables, length statistics"]
    if spec.crf:
        lines += ["- `modeling_bert_crf.py`: the model's code (torch + transformers only), run by "
                  "`trust_remote_code=True`"]
    lines += ["- `manifest.json`: file hashes, inputs and versions", ""]
    return "\n".join(lines)
