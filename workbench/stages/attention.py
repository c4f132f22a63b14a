"""attention: what a model attends to, for sentences you give.

    workbench attention model=runs/base/pretrain sentences=[今天天气不错,我在北京大学读书] output=runs/base/attention
    workbench attention model=runs/demo/export/classification input=my_sentences.txt screenshot=true

Reads a pretrain, finetune or export output (or any BERT save_pretrained directory) and
writes, atomically, to the output directory (default `<run>/attention`):

  attention.html       one self-contained page (no network): per sentence and layer,
                       bertviz-style lines from each token to the tokens it attends to, one
                       colour per head (hover a token for its lines), and a clickable grid of
                       every layer x head map (workbench/report/attention_view.py says why
                       not bertviz itself: its pages load d3/jQuery from a CDN)
  attention-NN.png     per sentence, the grid of layer x head maps (rows: attending token)
  attention.npz        the maps as arrays (sentence_NN: [layers, heads, tokens, tokens])
  tokens.json          per sentence: tokens, whether it was cut at max_length
  screenshot.png       (screenshot=true) the page in headless Chromium
  manifest.json        model (and its manifest's model hash), counts, versions

The sentences are the user's own text and are written into the outputs: do not point
input= at a private corpus file if the outputs are to be shared.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import AttentionConfig
from workbench.errors import InputError
from workbench.manifest import atomic_output_dir, owns_output, read_manifest, sha256_file, write_manifest
from workbench.report import attention_view as view


def read_sentences(cfg: AttentionConfig) -> list[str]:
    sentences = [s for s in cfg.sentences if s.strip()]
    if cfg.input:
        from workbench.tasks.data import read_lines

        sentences += [line.strip() for line in read_lines(Path(cfg.input)) if line.strip()]
    if not sentences:
        raise InputError(cfg.input or "sentences", "no non-blank sentence given",
                         "give sentences=[...] or an input file with one sentence per line")
    if len(sentences) > cfg.max_sentences:
        raise InputError(cfg.input or "sentences", f"{len(sentences)} sentences, more than max_sentences="
                         f"{cfg.max_sentences} (the page embeds every map of each)",
                         f"pass fewer sentences or max_sentences={len(sentences)}")
    return sentences


@owns_output("attention")
def run(cfg: AttentionConfig) -> dict[str, Any]:
    started = time.time()
    sentences = read_sentences(cfg)
    encoder, tok = view.load_encoder(cfg.model)
    items = view.attention_maps(encoder, tok, sentences, max_length=cfg.max_length)
    name = Path(cfg.model).name
    title = f"Attention of {name}"
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        (tmp / "attention.html").write_text(view.render_html(items, title=title, model_name=str(cfg.model)),
                                            encoding="utf-8")
        for i, it in enumerate(items, 1):
            view.plot_grid(it["tokens"], it["attention"], tmp / f"attention-{i:02d}.png",
                           title=f"{name}: sentence {i}, layers x heads (row: attending token)")
        np.savez_compressed(tmp / "attention.npz", **{f"sentence_{i:02d}": it["attention"]
                                                      for i, it in enumerate(items, 1)})
        (tmp / "tokens.json").write_text(json.dumps([{"text": it["text"], "tokens": it["tokens"],
                                                      "truncated": it["truncated"]} for it in items],
                                                    ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        stats = None
        if cfg.screenshot:
            view.screenshot(tmp / "attention.html", tmp / "screenshot.png")
            stats = view.image_stats(tmp / "screenshot.png")
        model_manifest = read_manifest(cfg.model) or {}
        layers, heads = items[0]["attention"].shape[:2]
        manifest = write_manifest(
            tmp, stage="attention", config=cfg.model_dump(mode="json"),
            inputs=[{"role": "model", "path": str(cfg.model), "stage": model_manifest.get("stage"),
                     "model_sha256": (model_manifest.get("outputs") or {}).get("model.safetensors")},
                    *([{"role": "input", "path": cfg.input, "sha256": sha256_file(cfg.input)}] if cfg.input else [])],
            counts={"sentences": len(items), "layers": int(layers), "heads": int(heads),
                    "tokens": [len(it["tokens"]) for it in items], "truncated": sum(it["truncated"] for it in items)},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"attn_implementation": "eager", **({"screenshot": stats} if stats else {})},
        )
    print(f"attention → {out}: {len(items)} sentence(s), {layers} layers x {heads} heads; open {out / 'attention.html'}")
    return manifest
