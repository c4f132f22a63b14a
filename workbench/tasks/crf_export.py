"""Packaging a tagging export for plain transformers: the CRF model and the tokenizer's decoder.

CRF. A finetune output keeps the CRF beside a plain ``BertForTokenClassification``
(``crf.safetensors``). Exported like that, ``pipeline("token-classification", model=DIR)``
loads the emission model alone and decodes by argmax: no error, far worse entities (on
Resume NER entity F1 0.881 with the CRF, 0.161 without). So ``package_crf_export`` turns
the export into ONE model, ``BertCrfForTokenClassification`` from ``modeling_bert_crf.py``
(shipped in the directory; torch + transformers only), whose ``logits`` are the CRF
max-marginals - their argmax is the Viterbi path, so the pipeline's own decoding gives the
CRF's tags. Its config has model_type ``bert_crf`` (not built into transformers) and an
``auto_map`` to that file, so:
  - plain ``pipeline(...)`` / ``AutoModelForTokenClassification`` refuse the directory with
    transformers' "contains custom code ... pass trust_remote_code=True" error (with
    model_type "bert" they would silently fall back to the emission model);
  - ``pipeline(..., trust_remote_code=True)`` runs the shipped file and gives the same
    entities as `workbench predict` (texts within max_length; longer ones are windowed
    differently);
  - zh-workbench itself (``load_task_model``) builds the class from its own copy of the
    file, never executing code from a model directory.

Tokenizer. The pipeline's entity ``word`` is ``convert_tokens_to_string`` of the tokens,
i.e. tokenizer.json's decoder; BERT's WordPiece decoder puts a space between every two
tokens, so Chinese entities came back as "北 京". ``install_tagging_decoder`` gives every
tagging export a decoder that joins CJK characters and punctuation without spaces (a
space stays only between two non-CJK tokens: "new york", "北京2008"); ids and offsets are
unchanged. transformers 5's ``BertTokenizer`` rebuilds its decoder on load, so the
tokenizer is saved as ``PreTrainedTokenizerFast`` (as the character folding already is).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from workbench.errors import StageInputError

MODELING_FILE = "modeling_bert_crf.py"
MODEL_TYPE = "bert_crf"
_CRF_KEYS = ("transitions", "start_scores", "end_scores", "allowed", "allowed_start", "allowed_end")

# Code points BERT splits into single-character tokens (CJK ideographs) plus CJK
# punctuation, kana and full-width forms: no space is put next to any of them.
_CJK = (r"\x{2E80}-\x{2FDF}\x{3000}-\x{303F}\x{3040}-\x{30FF}\x{3100}-\x{312F}\x{31A0}-\x{31FF}"
        r"\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{F900}-\x{FAFF}\x{FE30}-\x{FE4F}\x{FF00}-\x{FFEF}"
        r"\x{20000}-\x{2FA1F}")


def is_crf_export(directory: str | Path) -> bool:
    """True for a directory written by ``package_crf_export`` (config.json model_type bert_crf)."""
    cfg = Path(directory) / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE


def model_classes():
    """(BertCrfConfig, BertCrfForTokenClassification) from zh-workbench's own copy of the file."""
    from workbench.tasks.modeling_bert_crf import BertCrfConfig, BertCrfForTokenClassification

    return BertCrfConfig, BertCrfForTokenClassification


def crf_from_model(model):
    """The workbench ``CRF`` (training/decoding layer) holding a BertCrf model's CRF tensors."""
    import torch

    from workbench.tasks.crf import CRF

    layer = model.crf
    masks = (layer.allowed.bool().cpu(), layer.allowed_start.bool().cpu(), layer.allowed_end.bool().cpu())
    crf = CRF(layer.num_tags, masks)
    with torch.no_grad():
        crf.transitions.copy_(layer.transitions.float().cpu())
        crf.start_scores.copy_(layer.start_scores.float().cpu())
        crf.end_scores.copy_(layer.end_scores.float().cpu())
    return crf.to(layer.transitions.device)


def package_crf_export(directory: str | Path, tags: list[str]) -> None:
    """Turn an export directory holding a finetune output's plain emission model +
    ``crf.safetensors`` into one ``BertCrfForTokenClassification`` (config.json,
    model.safetensors with the CRF inside, modeling_bert_crf.py); crf.safetensors goes.

    Checks that the saved model reloads to the same emission scores and CRF as before."""
    import torch
    from transformers import BertForTokenClassification

    from workbench.tasks.heads import CRF_FILE, load_crf

    directory = Path(directory)
    config_cls, model_cls = model_classes()
    emission = BertForTokenClassification.from_pretrained(str(directory)).eval()
    crf, crf_tags = load_crf(directory)
    id2label = [emission.config.id2label[i] for i in range(emission.config.num_labels)]
    if not crf_tags == id2label == list(tags):
        raise StageInputError(f"export: the CRF's tags {crf_tags}, the model's id2label {id2label} and task.json's "
                              f"tags {list(tags)} differ; re-run `workbench finetune`")
    cfg = emission.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "auto_map"):
        cfg.pop(key, None)
    config = config_cls(**cfg)
    config.architectures = [model_cls.__name__]
    config.auto_map = {"AutoConfig": f"{MODELING_FILE[:-3]}.{config_cls.__name__}",
                       "AutoModelForTokenClassification": f"{MODELING_FILE[:-3]}.{model_cls.__name__}"}
    model = model_cls(config).to(emission.dtype).eval()
    state = {**emission.state_dict(), **{f"crf.{k}": v for k, v in crf.state_dict().items()}}
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise RuntimeError(f"export: building the CRF model: missing {result.missing_keys}, "
                           f"unexpected {result.unexpected_keys}")
    for name in ("config.json", "model.safetensors", CRF_FILE):
        (directory / name).unlink(missing_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    shutil.copy2(Path(__file__).with_name(MODELING_FILE), directory / MODELING_FILE)

    # The saved directory must give what the finetune output gave: same emissions, same CRF.
    reloaded = model_cls.from_pretrained(str(directory)).eval()
    probe = torch.arange(1, 9).remainder(emission.config.vocab_size).unsqueeze(0)
    with torch.no_grad():
        same = torch.allclose(reloaded.emissions(probe), emission(probe).logits, atol=1e-5)
    for key in _CRF_KEYS:
        saved = getattr(reloaded.crf, key).cpu()
        same = same and torch.equal(saved, getattr(crf, key).cpu().to(saved.dtype))
    if not same:
        raise RuntimeError(f"export: {directory} does not reload to the fine-tuned model and CRF")


def cjk_decoder():
    """A tokenizers decoder: BERT's WordPiece decoding, then no spaces next to CJK characters."""
    from tokenizers import Regex, decoders

    return decoders.Sequence([
        decoders.WordPiece(prefix="##", cleanup=True),
        decoders.Fuse(),
        decoders.Replace(Regex(f"(?<=[{_CJK}]) | (?=[{_CJK}])"), ""),
    ])


def install_tagging_decoder(directory: str | Path) -> None:
    """Re-save the tokenizer in `directory` with ``cjk_decoder`` (everything else unchanged:
    normalizer with any character folding, vocabulary, specials, model_max_length), as
    ``PreTrainedTokenizerFast``; checks that it encodes a probe text exactly as before."""
    from tokenizers import Tokenizer

    from workbench.vocab.folding_tokenizer import PreTrainedTokenizerFast
    from workbench.vocab.tokenizer import load_tokenizer

    directory = Path(directory)
    tok = load_tokenizer(str(directory), needed_by="export")
    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.decoder = cjk_decoder()
    special = {k: str(getattr(tok, k)) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
               if getattr(tok, k, None) is not None}
    new = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=tok.model_max_length,
                                  model_input_names=list(tok.model_input_names), **special)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (directory / name).unlink(missing_ok=True)
    new.save_pretrained(str(directory))
    probe = "新华社北京１２月３１日电 iPhone 6s在New York，“奥运”……[SEP] ab\u3000c"
    again = load_tokenizer(str(directory), needed_by="export")
    before = tok(probe, return_offsets_mapping=True)
    after = again(probe, return_offsets_mapping=True)
    if before["input_ids"] != after["input_ids"] or before["offset_mapping"] != after["offset_mapping"] \
            or again.model_max_length != tok.model_max_length:
        raise RuntimeError(f"export: the re-saved tokenizer in {directory} encodes differently")


def package_tagging_export(directory: str | Path, spec) -> None:
    """All of the above for a tagging export directory (a copy of the finetune output):
    the CJK-joining tokenizer decoder, and with a CRF the one-model CRF packaging."""
    if spec.crf:
        package_crf_export(directory, spec.tags)
    install_tagging_decoder(directory)
