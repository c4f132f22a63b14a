"""The tokenizer class models with prepare's character folding are saved as (see normalize.py).

A module of its own so that importing workbench.vocab.normalize does not import transformers,
and so the class pickles by reference into datasets.map workers.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import PreTrainedTokenizerFast as _TokenizersBackend


class PreTrainedTokenizerFast(_TokenizersBackend):
    """A fast tokenizer saved under the name every transformers version loads as-is from
    tokenizer.json (transformers 5 writes its own class name, TokenizersBackend, which
    transformers 4 does not know). Also writes vocab.txt, like a BERT tokenizer."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        out = super().save_pretrained(save_directory, *args, **kwargs)
        cfg_path = Path(save_directory, "tokenizer_config.json")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        for key in ("is_local", "local_files_only"):  # how it was last loaded, not what it is
            cfg.pop(key, None)
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        rows = sorted(self.backend_tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
        Path(save_directory, "vocab.txt").write_text("".join(f"{t}\n" for t, _ in rows), encoding="utf-8")
        return out
