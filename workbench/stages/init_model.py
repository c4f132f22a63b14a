"""init-model: a new BERT masked-LM for a tokenizer, saved as a plain transformers directory.

    workbench init-model run=runs/demo                       # tokenizer from <run>/vocab
    workbench init-model tokenizer=DIR layers=12 hidden=768 heads=12 output=models/base

The hub (bert-base-chinese) is unreachable here, so the demo and the tests start from a
small randomly initialised BERT shaped like Google's (same vocabulary layout, same
architecture, fewer/narrower layers). The output loads with
``AutoModelForMaskedLM.from_pretrained(dir)`` and ``AutoTokenizer.from_pretrained(dir)``,
weights in safetensors, and its manifest records the tokenizer's vocabulary hash, which
``pretrain`` compares with the segmented data's.
"""

from __future__ import annotations

import time
from typing import Any

from workbench.config import InitModelConfig
from workbench.manifest import atomic_output_dir, owns_output, verify_model_dir, write_manifest
from workbench.vocab.tokenizer import load_tokenizer, vocab_fingerprint
from workbench.modeling import cap_model_max_length


@owns_output("init-model")
def run(cfg: InitModelConfig) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    started = time.time()
    verify_model_dir(cfg.tokenizer_source(), needed_by="init-model")
    tok = load_tokenizer(cfg.tokenizer_source(), needed_by="init-model")
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.intermediate or 4 * cfg.hidden,
        max_position_embeddings=cfg.max_position,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    model = BertForMaskedLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        cap_model_max_length(tok, model.config)
        tok.save_pretrained(str(tmp))
        manifest = write_manifest(
            tmp, stage="init-model", config=cfg.model_dump(mode="json"),
            inputs=[{"tokenizer": cfg.tokenizer_source()}],
            counts={"parameters": n_params, "vocab_size": len(tok), "layers": cfg.layers, "hidden": cfg.hidden},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"tokenizer": {"vocab_size": len(tok), "vocab_sha256": vocab_fingerprint(tok)}},
        )
    print(f"init-model → {out}: BERT {cfg.layers} layers x {cfg.hidden} hidden x {cfg.heads} heads, "
          f"vocab {len(tok):,}, {n_params / 1e6:.1f} M parameters (random init, seed {cfg.seed})")
    return manifest
