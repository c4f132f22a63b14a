"""`export` of a pretrain output: the continued-pretrained masked LM as a deliverable.

    workbench export input=runs/base/pretrain output=runs/base/export/pretrain

The output is a `fill-mask`-ready save_pretrained directory (BertForMaskedLM: an NSP/SOP
head of an mlm+nsp / mlm+sop run is left out, the fill-mask pipeline does not use it),
checked at export time by running ``pipeline("fill-mask", model=DIR)`` on it, plus:

  README.md     model card: base model, corpus size (documents, blocks, tokens; source file
                names, sizes and hashes; no text), budget (steps, batch, tokens seen, epochs,
                wall time), masking, and the held-out MLM loss / perplexity / masked accuracy
                of the base model and of this one on the same blocks with the same masks;
  metrics.json  pretrain's final metrics and the before/after MLM scores (numbers only);
  manifest.json file hashes, inputs, versions.

Before/after: `evaluate`'s MLM scoring (stages/evaluate.score_mlm) of the base model and
of the pretrained model on the valid blocks of pretrain's segment input, masked by
pretrain's own evaluation collator with pretrain's masking, seed and batch size, so the
"after" loss is pretrain's final eval_loss re-measured (loss_batch_mean; recorded beside it)
and "before" is the base model on exactly the same masked positions. When the base model
or the blocks cannot be read (a hub id offline, a deleted run), the card says so and gives
pretrain's own final eval loss only.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError, WorkbenchError
from workbench.manifest import (MANIFEST, atomic_output_dir, read_manifest, require_stage_output, scratch_dir,
                                write_manifest)
from workbench.report.escape import md_code, md_text

log = logging.getLogger("workbench.export")

# Files of a pretrain output that are not copied (the model is re-saved; plots and the
# training log stay with the run).
_MODEL_FILES = {"config.json", "model.safetensors", "pytorch_model.bin", "generation_config.json"}
_SKIP = {MANIFEST, "metrics.json", *_MODEL_FILES}

# A sentence of our own for the fill-mask check at export time (no corpus text).
CHECK_SENTENCE = "北京是中国的首[MASK]。"


def export_pretrained(cfg, src: Path, out: Path) -> dict[str, Any]:
    import torch

    started = time.time()
    upstream = require_stage_output(src, "pretrain", needed_by="export")
    if cfg.format not in ("hf", "fp16"):
        raise ConfigError([f"format: {cfg.format} is a serving format of a task model; {src} is a `pretrain` output "
                           "(a masked LM): export it with format=hf or format=fp16, or fine-tune it first"])
    from workbench.stages.evaluate import _load_masked_lm_with_head

    model = _load_masked_lm_with_head(str(src)).float().eval()  # BertForMaskedLM; errors if the head is missing
    mlm = _before_after(cfg, upstream, src, out) if cfg.mlm_eval else {"measured": False, "reason": "mlm_eval=false"}
    name = cfg.name or out.name
    with atomic_output_dir(out) as tmp:
        for p in sorted(src.iterdir()):
            if p.is_file() and p.name not in _SKIP and not p.name.endswith(".png"):
                shutil.copy2(p, tmp / p.name)  # tokenizer files as pretrain saved them (char map included)
        dtype = torch.float16 if cfg.format == "fp16" else torch.float32
        import copy

        copy.deepcopy(model).to(dtype).save_pretrained(str(tmp))
        check = fill_mask_check(tmp)
        metrics = {"pretrain": (read_json(src / "metrics.json") or {}).get("final", upstream.get("metrics")),
                   "mlm_before_after": mlm, "fill_mask_check": check, "format": cfg.format}
        (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        facts = pretrain_facts(upstream, src)
        from workbench.vocab.normalize import char_map_in_dir

        facts["char_map_size"] = len(char_map_in_dir(src) or {})
        (tmp / "README.md").write_text(pretrained_card(name, facts, mlm, cfg.format), encoding="utf-8")
        manifest = write_manifest(
            tmp, stage="export", config=cfg.model_dump(mode="json"),
            inputs=[{"pretrain": str(src), "created": upstream.get("created"),
                     "model_sha256": upstream.get("outputs", {}).get("model.safetensors")}],
            counts={k: upstream.get("counts", {}).get(k) for k in ("steps", "train_blocks", "eval_blocks", "tokens_seen")},
            seed=upstream.get("seed", 0), started=started, finished=time.time(),
            extra={"task": "fill-mask", "pipeline": "fill-mask", "format": cfg.format, "mlm_before_after": mlm},
        )
    print(f"export → {out}: masked LM ({cfg.format}), pipeline('fill-mask')-loadable"
          + (f"; held-out MLM loss {mlm['before']['loss']:.4f} → {mlm['after']['loss']:.4f} "
             f"(perplexity {mlm['before']['perplexity']:.1f} → {mlm['after']['perplexity']:.1f})"
             if mlm.get("measured") else f"; before/after not measured ({mlm.get('reason')})"))
    return manifest


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fill_mask_check(directory: Path) -> dict[str, Any]:
    """Run the plain transformers fill-mask pipeline on the export (no workbench code)."""
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(directory), device="cpu")
    got = fill(CHECK_SENTENCE, top_k=5)
    return {"sentence": CHECK_SENTENCE, "candidates": len(got), "pipeline": "fill-mask"}


def _before_after(cfg, upstream: dict, src: Path, out: Path) -> dict[str, Any]:
    """Held-out MLM loss of the base model and of the pretrained model, same blocks and masks."""
    from workbench.config import EvaluateConfig, MaskingConfig
    from workbench.stages.evaluate import score_mlm

    pc = upstream.get("config") or {}
    seg = next((i.get("path") for i in upstream.get("inputs", []) if i.get("stage") == "segment"), None)
    base = pc.get("model")
    if not seg or not base:
        return {"measured": False, "reason": "the pretrain manifest names no segment input or base model"}
    if pc.get("mix"):
        log.info("export: pretrain mixed other inputs in; the held-out blocks are those of %s", seg)
    result: dict[str, Any] = {"measured": True, "segment": seg, "base_model": base, "split": "valid",
                              "masking": pc.get("masking"), "seed": pc.get("seed", 0),
                              "batch_size": pc.get("batch_size"), "max_blocks": cfg.mlm_max_blocks}
    try:
        with scratch_dir(out) as work:
            for role, model in (("before", base), ("after", str(src))):
                ecfg = EvaluateConfig(model=model, input=seg, split="valid", masking=MaskingConfig(**pc["masking"]),
                                      seed=pc.get("seed", 0), batch_size=pc.get("batch_size") or 32,
                                      max_blocks=cfg.mlm_max_blocks, output=str(work / role))
                score_mlm(ecfg)
                m = read_json(work / role / "metrics.json") or {}
                result[role] = {k: m.get(k) for k in ("loss", "perplexity", "masked_accuracy", "loss_batch_mean",
                                                      "blocks", "labelled_tokens", "masks_sha256")}
    except (WorkbenchError, OSError, ValueError) as e:
        log.warning("export: before/after MLM scoring skipped: %s", str(e).splitlines()[0])
        return {"measured": False, "reason": str(e).splitlines()[0][:300]}
    if result["before"]["masks_sha256"] != result["after"]["masks_sha256"]:  # never expected: masks ignore the model
        return {"measured": False, "reason": "the two scorings drew different masks"}
    result["pretrain_eval_loss"] = (upstream.get("metrics") or {}).get("eval_loss")
    return result


def pretrain_facts(upstream: dict, src: Path) -> dict[str, Any]:
    """Corpus size, budget, masking and base model from the manifests of the chain (counts,
    file names, sizes and hashes; never text)."""
    pc = upstream.get("config") or {}
    counts = upstream.get("counts") or {}
    seg_path = next((i.get("path") for i in upstream.get("inputs", []) if i.get("stage") == "segment"), None)
    seg = _manifest(seg_path)
    prep_path = next((i.get("path") for i in (seg or {}).get("inputs", []) if i.get("stage") == "prepare"), None)
    prep = _manifest(prep_path)
    base = _manifest(pc.get("model"))
    config = read_json(src / "config.json") or {}
    sources = [{"file": str(e.get("path", "")).rsplit("/", 1)[-1], "bytes": e.get("bytes"),
                "sha256": e.get("sha256"), "rows": e.get("rows"), "kept": e.get("kept")}
               for e in (prep or {}).get("inputs", []) if "sha256" in e]
    sc = (seg or {}).get("counts") or {}
    return {
        "base_model": pc.get("model"), "base_stage": (base or {}).get("stage"),
        "base_inputs": [str(v).rsplit("/", 1)[-1] for e in (base or {}).get("inputs", []) for v in e.values()
                        if isinstance(v, str)],
        "architecture": {k: config.get(k) for k in ("model_type", "num_hidden_layers", "hidden_size",
                                                    "num_attention_heads", "intermediate_size", "vocab_size",
                                                    "max_position_embeddings")},
        "parameters": (base or {}).get("counts", {}).get("parameters"),
        "sources": sources,
        "documents": ((prep or {}).get("counts") or {}).get("splits"),
        "documents_in": ((prep or {}).get("counts") or {}).get("in"),
        "blocks": sc.get("blocks"), "tokens": sc.get("tokens"), "words": sc.get("words"),
        "max_seq_length": ((seg or {}).get("config") or {}).get("max_seq_length"),
        "budget": {"steps": counts.get("steps"), "batch_size": pc.get("batch_size"), "grad_accum": pc.get("grad_accum"),
                   "tokens_seen": counts.get("tokens_seen"), "epochs": counts.get("epochs"), "lr": pc.get("lr"),
                   "schedule": pc.get("schedule"), "warmup_ratio": pc.get("warmup_ratio"),
                   "precision": upstream.get("precision") or pc.get("precision"), "device": upstream.get("device"),
                   "wall_time_s": upstream.get("wall_time_s"),
                   "train_loss_first_last": (counts.get("first_train_loss"), counts.get("last_train_loss"))},
        "objective": pc.get("objective", "mlm"), "masking": pc.get("masking") or {},
        "final": upstream.get("metrics") or {}, "mix": pc.get("mix"),
    }


def _manifest(path: str | None) -> dict | None:
    if not path or not Path(path).is_dir():
        return None
    try:
        return read_manifest(path)
    except WorkbenchError:
        return None


def _n(v: Any, spec: str = ",") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "n/a"


def pretrained_card(name: str, f: dict[str, Any], mlm: dict[str, Any], fmt: str) -> str:
    arch = f["architecture"]
    lines = [f"# {md_text(name)}", "",
             f"A Chinese BERT masked language model ({_n(arch.get('num_hidden_layers'), '')} layers x "
             f"{_n(arch.get('hidden_size'), '')} hidden, {_n(arch.get('num_attention_heads'), '')} heads, vocabulary "
             f"{_n(arch.get('vocab_size'))}) continued-pretrained by zh-workbench; weights in "
             f"{'float16' if fmt == 'fp16' else 'float32'}. Ready for `pipeline(\"fill-mask\")`, and as the "
             "`model=` of `workbench finetune` or any transformers fine-tuning script.", ""]
    lines += ["## Base model", "", f"- {md_code(f['base_model'])}"
              + (f" (`{md_text(f['base_stage'])}` output" + (f" from {', '.join(md_code(x) for x in f['base_inputs'])}"
                                                            if f["base_inputs"] else "") + ")" if f["base_stage"] else ""),
              *( [f"- parameters: {_n(f['parameters'])}"] if f.get("parameters") else []), ""]
    lines += ["## Corpus", "", "No text from the corpus is reproduced in this card or directory.", ""]
    if f["sources"]:
        lines += ["| source file | bytes | sha256 | rows | kept |", "|---|---|---|---|---|"]
        lines += [f"| {md_code(s['file'])} | {_n(s['bytes'])} | {md_code(str(s['sha256'])[:16] + '…')} | "
                  f"{_n(s['rows'])} | {_n(s['kept'])} |" for s in f["sources"]]
        lines.append("")
    docs, blocks = f.get("documents") or {}, f.get("blocks") or {}
    lines += [f"- documents: {', '.join(f'{k} {_n(v)}' for k, v in docs.items()) or 'n/a'}"
              + (f" (of {_n(f['documents_in'])} read, after cleaning and deduplication)" if f.get("documents_in") else ""),
              f"- blocks of {_n(f.get('max_seq_length'), '')} tokens: {', '.join(f'{k} {_n(v)}' for k, v in blocks.items()) or 'n/a'}",
              f"- tokens: {_n(f.get('tokens'))}; words (jieba): {_n(f.get('words'))}", ""]
    if f.get("mix"):
        lines += [f"- mixed in during pretraining: {md_text(f['mix'])}", ""]
    b = f["budget"]
    lines += ["## Budget", "",
              f"- {_n(b['steps'])} steps of {_n(b['batch_size'], '')} blocks x {_n(b['grad_accum'], '')} accumulation; "
              f"{_n(b['tokens_seen'])} tokens seen ({_n(b['epochs'], '.3g')} epochs)",
              f"- lr {_n(b['lr'], 'g')}, {md_text(b['schedule'])} schedule, warmup {_n(b['warmup_ratio'], 'g')}; "
              f"{md_text(b['precision'])} on {md_text(b['device'])}, {_n(b['wall_time_s'], '.0f')} s wall time",
              f"- train loss {_n(b['train_loss_first_last'][0], '.3f')} at the first step → "
              f"{_n(b['train_loss_first_last'][1], '.3f')} at the last", ""]
    m = f["masking"]
    lines += ["## Masking", "", f"- objective: {md_code(f['objective'])}",
              f"- strategy {md_code(m.get('strategy'))}, mask_prob {_n(m.get('mask_prob'), 'g')} "
              f"({_n(m.get('replace_mask'), 'g')} [MASK] / {_n(m.get('replace_random'), 'g')} random / rest kept)"
              + (f", max_ngram {m.get('max_ngram')}" if m.get("strategy") in ("entity_ngram", "ngram") else "")
              + (f", max_span {m.get('max_span')}" if m.get("strategy") == "span" else "")
              + (f", mixture {md_text(m.get('mixture'))}" if m.get("mixture") else ""),
              "- masks are drawn anew each time a block is batched (dynamic masking); whole words and entities "
              "come from the stored jieba segmentation", ""]
    lines += ["## Held-out MLM loss", ""]
    if mlm.get("measured"):
        be, af = mlm["before"], mlm["after"]
        lines += [f"The base model and this model on the same {_n(af['blocks'])} held-out (valid) blocks with the same "
                  f"{_n(af['labelled_tokens'])} masked positions (pretrain's evaluation masks, seed {mlm['seed']}, "
                  f"batch {mlm['batch_size']}; masks sha256 {md_code(str(af['masks_sha256'])[:16] + '…')}). "
                  "Loss is the mean cross-entropy per masked token (nats), perplexity its exp.", "",
                  "| model | MLM loss | perplexity | masked accuracy |", "|---|---|---|---|",
                  f"| before: base model | {be['loss']:.4f} | {be['perplexity']:.1f} | {be['masked_accuracy']:.2%} |",
                  f"| after: this model | {af['loss']:.4f} | {af['perplexity']:.1f} | {af['masked_accuracy']:.2%} |", ""]
        if mlm.get("pretrain_eval_loss") is not None and mlm.get("max_blocks") is None:
            lines += [f"Pretrain's own final eval_loss was {mlm['pretrain_eval_loss']:.4f} (averaged per batch as the "
                      f"HF Trainer does; re-measured here: {af['loss_batch_mean']:.4f}).", ""]
    else:
        final = f["final"]
        lines += [f"Not measured against the base model ({md_text(mlm.get('reason'))}).", "",
                  f"Pretrain's own final evaluation: loss {_n(final.get('eval_loss'), '.4f')}, perplexity "
                  f"{_n(final.get('eval_perplexity'), '.1f')}, masked accuracy {_n(final.get('eval_masked_accuracy'), '.2%')}.", ""]
    lines += ["## How to load", "", "```python", "from transformers import pipeline", "",
              'fill = pipeline("fill-mask", model="PATH/TO/THIS/DIR")', f'fill("{CHECK_SENTENCE}")', "```", "",
              "Fine-tune: `workbench finetune model=PATH/TO/THIS/DIR train=... valid=...`"
              + (" (load fp16 weights with `dtype=torch.float16` on a GPU; fine-tune from them in float32)"
                 if fmt == "fp16" else "") + ".", ""]
    lines += ["## Limits", "",
              "- A masked LM: it fills in masked tokens; for classification or tagging fine-tune it first.",
              "- The loss above is on held-out text of the same corpus; other domains will score worse.",
              (f"- The tokenizer folds {f['char_map_size']} characters (full-width forms, curly quotes ...) as `prepare` "
               "cleaned the corpus; nothing else is normalised: give texts in the form the corpus had."
               if f.get("char_map_size") else
               "- Texts are not cleaned or normalised by the tokenizer: give them in the form the corpus had."), ""]
    if f.get("objective", "mlm") != "mlm":
        lines[-1:-1] = [f"- Pretrained with `{f['objective']}`: its sentence-pair head and the pooler it trained are not "
                        "in this fill-mask model (BertForMaskedLM has neither); fine-tune from the pretrain output "
                        "itself to start from them."]
    lines += ["## Files", "", "- `config.json`, `model.safetensors` (BertForMaskedLM), tokenizer files",
              "- `metrics.json`: pretrain's final metrics and the before/after scores",
              "- `manifest.json`: file hashes, inputs and versions", ""]
    return "\n".join(lines)
