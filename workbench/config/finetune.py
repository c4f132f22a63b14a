"""Config of `finetune`: task data, heads, LoRA and training."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from workbench.config._base import Section, StageConfig


class TaskDataConfig(Section):
    """How the finetune / evaluate stages read labelled files."""

    format: Literal["auto", "tsv", "csv", "jsonl", "conll"] = "auto"
    """File format. auto: .jsonl/.json → jsonl, .csv → csv; otherwise tsv for text tasks and CoNLL (`char tag` per line) for tagging."""
    text_column: str = "text"
    """Column (or JSON key) with the text; a 0-based index with `header: false`. Tagging JSONL (CLUENER): the text key."""
    text_pair_column: str = "text_b"
    """pair: column with the second text."""
    label_column: str = "label"
    """Column (or JSON key) with the label(s). Tagging JSONL: the key with the `{TYPE: {mention: [[s, e]]}}` entities."""
    header: bool = True
    """tsv/csv: the first line names the columns."""
    delimiter: str | None = None
    """tsv/csv field delimiter; default tab / comma (tsv may use a multi-character one such as `|,|`)."""
    label_delimiter: str = ","
    """multilabel: labels in one cell are split on this (a JSON list works too)."""
    repair: bool = False
    """Tagging: read invalid tag sequences (an I-X that continues nothing, an unclosed BIOES entity) as the nearest valid ones, counted in the manifest, instead of stopping. qa: move an answer_start that misses its text to the text's nearest occurrence, keep a reference absent from its context for the metric only and keep empty questions, counted."""
    encoding: str = "auto"
    """Text encoding of the files. auto: as `prepare` detects it (UTF-8 with or without BOM, else GB18030, which reads GBK and GB2312 too; the codec used is in the manifest); or a codec name such as utf-8, gbk, gb18030."""
    char_column: int | None = None
    """CoNLL files with more than two columns: the 0-based column with the character (null: a two-column `char tag` file). Fields are split on tabs, or on spaces when a line has no tab."""
    tag_column: int | None = None
    """CoNLL files with more than two columns: the 0-based column with the tag; -1 = the last (null: a two-column file)."""
    char_field: Literal["exact", "first"] = "exact"
    """CoNLL character field. exact: one character; first: its first character, the rest must be digits (Weibo NER's `char+position` field such as `美0`); any other extra text is an error, never dropped."""
    type_suffix: Literal["keep", "fold"] = "keep"
    """Entity types with a `.NAM` / `.NOM` suffix (Weibo NER: named vs nominal mentions). keep: `PER.NAM` and `PER.NOM` are separate types (the published 8-type task); fold: both read as `PER` (counted in the manifest)."""
    overlap: Literal["error", "longest", "first"] = "error"
    """CLUENER JSON with overlapping entities (flat tags hold one per character). error: stop at the first; longest: keep the longest of each overlapping group (ties: the leftmost); first: keep the leftmost (ties: the longer). Dropped entities are counted per file in the manifest."""


class LoraConfig(Section):
    """LoRA adapters (peft) on the encoder's attention projections instead of full fine-tuning."""

    r: int = 0
    """Rank of the low-rank updates; 0 = off (full fine-tuning)."""
    alpha: int = 16
    """Scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.1
    """Dropout on the LoRA branch."""
    target_modules: list[str] = ["query", "value"]
    """Linear layers of each encoder layer that get adapters (BERT names: query, key, value, dense)."""


class QAConfig(Section):
    """Extractive question answering (task=qa): windows over long contexts, span decoding, a held-out test split."""

    doc_stride: int | None = None
    """Context tokens shared by consecutive windows of a long context (transformers' doc_stride); null: min(max_length // 2, 128), the question-answering pipeline's default. An answer is a train target only in the windows that hold all of it."""
    max_answer_length: int = 30
    """Longest answer span the decoder returns, in tokens (CJK characters are one token each)."""
    n_best: int = 20
    """Best spans each window offers (every span within max_answer_length is scored); spans of a question with the same text add their probabilities. 20 ranks as transformers 4.x's question-answering pipeline with top_k=5 (it keeps 2 x top_k + 10 per window)."""
    test_articles: float = 0.0
    """Hold out this fraction of the train file's articles (SQuAD `data[]` entries, never split) as the test set, drawn with `split_seed` (CMRC 2018: dev split into train/test, trial as valid); the two halves are written to the output's split/train.json and split/test.json for `workbench evaluate`. 0: off (test= a file)."""
    split_seed: int = 0
    """Seed of the article split (fixed apart from `seed`/`seeds`, so every training seed sees the same split)."""


class AdapterConfig(Section):
    """Bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2021) inside every encoder layer."""

    kind: Literal["none", "houlsby", "pfeiffer"] = "none"
    """none: off. houlsby: an adapter after the attention block's and the feed-forward block's output projections; pfeiffer: after the feed-forward block's only. Each is h + up(act(down(h))), up initialised at zero (the model starts as the base); the encoder is frozen except the adapters and its LayerNorms (as Houlsby et al.)."""
    reduction: int = 16
    """Bottleneck width = hidden size / reduction (AdapterHub's default 16: 48 for a BERT-base)."""


class FinetuneConfig(StageConfig):
    """Fine-tune a BERT for classification, sentence pairs, multi-label, character tagging (NER) or extractive question answering."""

    output_dir_name: typing.ClassVar[str] = "finetune"

    task: Literal["classification", "pair", "multilabel", "tagging", "qa"] = "classification"
    """classification: one label per text; pair: one label per text pair; multilabel: 0..n labels per text; tagging: BIO/BIOES/BMES tags per character (NER); qa: extractive question answering on SQuAD-style JSON (CMRC 2018), see `qa`."""
    model: str | None = None
    """Model directory (init-model / pretrain output, or any BERT save_pretrained dir) or hub id to start from."""
    train: str | None = None
    """Labelled train file; the label map is built from it."""
    valid: str | None = None
    """Labelled validation file: evaluated after every epoch (and every `eval_steps` steps when set); the best evaluation's weights are kept."""
    test: str | None = None
    """Optional labelled test file, evaluated once with the best model."""
    data: TaskDataConfig = TaskDataConfig()
    """Columns and format of the labelled files."""
    unknown_labels: Literal["error", "map", "drop"] = "error"
    """A valid/test label not seen in train: error, map it to `unknown_label_to`, or drop it (the record; in multilabel/tagging only that label/entity), counted."""
    unknown_label_to: str | None = None
    """With unknown_labels=map: the train label to map to."""
    max_length: int = 128
    """Tokens per model input, [CLS]/[SEP] included. Longer texts are truncated (classification, counted) or cut into sliding windows (tagging; qa: question + a window of the context)."""
    truncation: Literal["head", "head_tail"] = "head"
    """Classification: keep the first tokens, or `head_tokens` from the start and the rest from the end."""
    head_tokens: int | None = None
    """head_tail: tokens kept from the start; default a quarter of the budget."""
    window_overlap: int | None = None
    """Tagging: tokens shared by consecutive windows (>= 2); default a quarter of the window."""
    scheme: Literal["bio", "bioes"] = "bio"
    """Tagging: tags the model predicts (files in BIO, BIOES or BMES are converted)."""
    crf: bool = False
    """Tagging: a linear-chain CRF with BIO/BIOES transition constraints on top of the emissions; Viterbi decoding."""
    crf_lr: float = 1e-3
    """Learning rate of the CRF's transition scores (they start near zero and need more than the encoder's lr)."""
    metric: Literal["auto", "accuracy", "macro_f1", "em"] = "auto"
    """Metric that picks the best evaluation (epoch or step). auto: accuracy (classification, pair), micro F1 (multilabel), entity F1 (tagging), CMRC 2018 character F1 (qa); macro_f1 only for classification/pair; em (exact match) only for qa."""
    threshold: float = 0.5
    """multilabel: a label is predicted when its probability is at least this."""
    freeze_layers: int | None = None
    """Train only the top-k encoder layers: freeze the embeddings and all but the last N layers (0: train only the head); null trains everything."""
    freeze_encoder: bool = False
    """Freeze the whole encoder (embeddings and every layer): only the head, the pooler, the layer mix and any adapters train. The same as freeze_layers=0."""
    pooling: Literal["cls", "mean", "max", "first_last_avg"] = "cls"
    """classification / pair / multilabel: the sentence vector. cls: BERT's pooler (dense + tanh) on [CLS], the stock head; mean / max: over the attended tokens' last-layer states (with layer_mix: the mixed states); first_last_avg: the mean over tokens of the average of the first and the last layer. Anything but cls saves a `bert_workbench` model (see export). Not for tagging / qa, whose heads score every token (leave it at cls: unused there)."""
    layer_mix: bool = False
    """Learned scalar mix of all hidden layers (ELMo): gamma * sum_j softmax(w)_j h_j over the embeddings and every layer, feeding the head instead of the last layer (cls pooling then takes the mixed [CLS] vector, without BERT's pooler; tagging / qa: every token's mixed state feeds the tag / span head). Combine with freeze_encoder for a frozen-feature probe."""
    adapter: AdapterConfig = AdapterConfig()
    """Bottleneck adapters (adapter.kind=houlsby|pfeiffer): cannot be merged into the weights (a nonlinearity sits between the two projections), so the model is saved as `bert_workbench` with its modeling file. Every task, qa included."""
    class_weights: Literal["none", "balanced"] | dict[str, float] = "none"
    """classification / pair / tagging / multilabel: weights of the loss per class. balanced: n / (classes x count) from the train counts (tagging: per tag over the train windows; multilabel: BCE pos_weight = negatives / positives per label); or {label: weight} (tagging: keys are tags like B-PER, entity types like PER for all their tags, or O; unnamed ones weigh 1). Not with crf."""
    loss: Literal["ce", "focal"] = "ce"
    """ce: cross-entropy (multilabel: binary); focal: focal loss (Lin et al. 2017) -w_y (1 - p_y)^gamma log p_y, normalised like weighted cross-entropy (gamma 0 gives ce exactly); multilabel: the sigmoid form. Not with crf (its loss is over whole tag sequences)."""
    focal_gamma: float = 2.0
    """loss=focal: the focusing exponent gamma (0 = cross-entropy)."""
    qa: QAConfig = QAConfig()
    """task=qa: window stride, longest answer, held-out test articles."""
    lora: LoraConfig = LoraConfig()
    """LoRA adapters (lora.r > 0): only the adapters, the head, the pooler and the CRF train; the adapters are merged into the weights before saving, so the output is a plain model."""
    epochs: int = 3
    """Passes over the train data; valid is evaluated after each."""
    max_steps: int = -1
    """Optimizer steps to train; > 0 overrides `epochs` (valid is still evaluated per epoch and at the end: below one epoch that is one evaluation, at the last step, unless `eval_steps` is set)."""
    eval_steps: int | None = None
    """Also evaluate valid every this many optimizer steps (besides after each epoch and at the end of training), so that a run shorter than an epoch still selects; the best evaluation's weights are kept (ties: the earlier). null: per epoch (and at the end) only."""
    batch_size: int = 32
    """Examples (tagging: windows) per optimizer step."""
    eval_batch_size: int = 64
    """Examples per forward pass when evaluating and predicting."""
    lr: float = 2e-5
    """Peak learning rate (AdamW) of the encoder and head."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases, LayerNorm weights and the CRF)."""
    warmup_ratio: float = 0.1
    """Share of the steps spent warming the learning rate up linearly from 0."""
    early_stopping_patience: int | None = None
    """Stop after this many valid evaluations in a row without a better valid metric (evaluations, not epochs: with `eval_steps` set these include the step evaluations); null = off. The best evaluation's weights are kept either way."""
    keep_snapshots: int = 0
    """Also keep the weights of the last this many valid evaluations (of the saved seed) as `snapshots/step-<N>.safetensors` in the output (one model's size each), for `workbench average`; 0 = none (only the best weights are saved). Not with LoRA."""
    seeds: list[int] = []
    """Train once per seed (e.g. [1, 2, 3]); metrics.json keeps every seed's full valid/test metrics (`seeds.runs`) and mean ± std (sample std) of each scalar metric (`seeds.summary`); the model of the seed with the best valid metric is saved. Empty: one run with `seed`."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Mixed precision. auto: bf16 on a GPU that supports it, else fp32; fp16 needs a GPU (on CPU it falls back to fp32)."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding: faster on long, mixed-length texts). Off by default: transformers sorts the batches of each 50-batch megabatch by length, so consecutive batches are correlated; measured here, a 40-step run on 200 reviews never left 50% accuracy with it (and learnt without it)."""
    logging_steps: int = 50
    """Log the train loss every this many steps."""
    trainer: dict[str, Any] = {}
    """Other `transformers.TrainingArguments` fields, passed through (e.g. {optim: adafactor, gradient_checkpointing: true}); keys the workbench sets are refused with the workbench key."""

    def output_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.run) / f"finetune-{self.task}"

    def main_metric(self) -> str:
        if self.metric != "auto":
            return self.metric
        return {"classification": "accuracy", "pair": "accuracy", "multilabel": "micro_f1", "tagging": "f1",
                "qa": "f1"}[self.task]

    def problems(self) -> list[str]:
        from workbench.trainer_args import FINETUNE_OWNED, trainer_problems

        out = trainer_problems(self.trainer, FINETUNE_OWNED)
        for name in ("model", "train", "valid"):
            if not getattr(self, name):
                out.append(f"{name}: required; pass {name}=PATH")
        if self.task == "tagging":
            if self.data.format in ("tsv", "csv"):
                out.append(f"data.format: '{self.data.format}' is not a tagging format; use conll, jsonl or auto")
        else:
            if self.data.format == "conll":
                out.append(f"data.format: conll is for task=tagging, not {self.task}")
            if self.crf:
                out.append(f"crf: only for task=tagging (task is {self.task})")
        if self.metric == "macro_f1" and self.task not in ("classification", "pair"):
            out.append(f"metric: macro_f1 picks among single-label classes; task {self.task} uses metric=auto")
        if self.metric == "accuracy" and self.task not in ("classification", "pair"):
            out.append(f"metric: accuracy is for classification/pair; task {self.task} uses metric=auto")
        if self.unknown_labels == "map" and not self.unknown_label_to:
            out.append("unknown_label_to: required with unknown_labels=map (a train label)")
        if self.lora.r < 0 or (self.lora.r and (self.lora.alpha <= 0 or not 0 <= self.lora.dropout < 1)):
            out.append("lora: r must be >= 0 (0 = off), alpha > 0 and dropout in [0, 1)")
        if self.lora.r and not self.lora.target_modules:
            out.append("lora.target_modules: name at least one linear layer, e.g. [query, value]")
        if self.lora.r and self.freeze_layers is not None:
            out.append("lora and freeze_layers are both set: LoRA already freezes the encoder; use one")
        out += self.encoder_problems()
        out += self.qa_problems()
        if self.max_length < 8:
            out.append(f"max_length: must be at least 8 (got {self.max_length})")
        if self.window_overlap is not None and not 2 <= self.window_overlap < self.max_length - 2 - 1:
            out.append(f"window_overlap: must be >= 2 and below the window ({self.max_length - 2} tokens) minus one")
        if self.head_tokens is not None and not 0 <= self.head_tokens <= self.max_length - 2:
            out.append("head_tokens: must be in [0, max_length - 2]")
        if self.max_steps <= 0 and self.epochs <= 0:
            out.append("epochs and max_steps are both <= 0: nothing to train")
        for name in ("batch_size", "eval_batch_size", "logging_steps"):
            if getattr(self, name) < 1:
                out.append(f"{name}: must be >= 1")
        if self.lr <= 0 or self.crf_lr <= 0:
            out.append("lr and crf_lr must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            out.append(f"warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if not 0.0 < self.threshold < 1.0:
            out.append(f"threshold: must be in (0, 1) (got {self.threshold})")
        if self.freeze_layers is not None and self.freeze_layers < 0:
            out.append("freeze_layers: must be >= 0 or null")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            out.append("early_stopping_patience: must be >= 1 or null")
        if self.eval_steps is not None and self.eval_steps < 1:
            out.append(f"eval_steps: must be >= 1 or null (got {self.eval_steps})")
        if len(set(self.seeds)) != len(self.seeds):
            out.append(f"seeds: duplicates in {self.seeds}")
        if self.keep_snapshots < 0 or (self.keep_snapshots and self.lora.r):
            out.append("keep_snapshots: must be >= 0, and 0 with LoRA (the snapshots would hold the adapters, "
                       "not the merged model's weights)")
        return out

    def qa_problems(self) -> list[str]:
        """task=qa options, and options that do not apply to it."""
        out = []
        if self.metric == "em" and self.task != "qa":
            out.append(f"metric: em (exact match) is for task=qa; task {self.task} uses metric=auto")
        if self.task != "qa":
            if self.qa != QAConfig():
                out.append(f"qa.*: only for task=qa (task is {self.task})")
            return out
        if self.data.format not in ("auto",):
            out.append(f"data.format: task=qa reads SQuAD-style JSON; leave data.format=auto (got {self.data.format})")
        if self.class_weights != "none" or self.loss != "ce":
            out.append("class_weights / loss=focal: not for task=qa (its loss is over start/end token positions)")
        room = self.max_length - 3
        if self.qa.doc_stride is not None and not 0 <= self.qa.doc_stride < room - 8:
            out.append(f"qa.doc_stride: must be >= 0 and leave the question at least 8 tokens below the "
                       f"{room} a window holds besides [CLS]/[SEP] (got {self.qa.doc_stride})")
        if self.qa.max_answer_length < 1 or self.qa.n_best < 1:
            out.append(f"qa.max_answer_length and qa.n_best: must be >= 1 (got {self.qa.max_answer_length}, "
                       f"{self.qa.n_best})")
        if not 0.0 <= self.qa.test_articles < 1.0:
            out.append(f"qa.test_articles: a fraction in [0, 1) (got {self.qa.test_articles})")
        if self.qa.test_articles and self.test:
            out.append("qa.test_articles and test are both set: the test set is either held out of train or a file")
        return out

    def encoder_problems(self) -> list[str]:
        """Contradictions among the encoder-use and loss options (pooling, layer mix, adapters, losses)."""
        out = []
        if self.pooling != "cls" and self.task == "tagging":
            out.append(f"pooling: {self.pooling} makes one vector per text; task=tagging scores every token "
                       "(use layer_mix)")
        if self.pooling != "cls" and self.task == "qa":
            out.append(f"pooling: {self.pooling} makes one vector per text, but task=qa's span head scores a start and "
                       "an end on every token of the window; leave pooling unset (layer_mix, adapters, freeze_encoder, "
                       "freeze_layers and lora all work with qa)")
        if self.pooling == "first_last_avg" and self.layer_mix:
            out.append("pooling=first_last_avg and layer_mix both choose the layers; use one")
        if self.freeze_encoder and self.freeze_layers is not None:
            out.append("freeze_encoder and freeze_layers are both set; freeze_encoder is freeze_layers=0, use one")
        if self.freeze_encoder and self.lora.r:
            out.append("freeze_encoder and lora are both set: LoRA already freezes the encoder; use one")
        if self.adapter.kind != "none" and self.lora.r:
            out.append("adapter.kind and lora are both set; pick one parameter-efficient method")
        if self.adapter.reduction < 1:
            out.append(f"adapter.reduction: must be >= 1 (got {self.adapter.reduction})")
        if self.crf and (self.layer_mix or self.adapter.kind != "none"):
            out.append("crf with layer_mix or adapters is not offered: the CRF export (modeling_bert_crf.py) holds a "
                       "stock BERT encoder; use crf=false, or crf with freeze_layers / lora")
        if self.crf and (self.loss != "ce" or self.class_weights != "none"):
            out.append("loss=focal / class_weights with crf: the CRF's loss scores whole tag sequences, not one "
                       "tag per token, so per-tag weights or focusing do not apply; use crf=false for them")
        if self.task not in ("classification", "pair", "multilabel", "tagging") and (
                self.loss != "ce" or self.class_weights != "none"):
            out.append(f"loss / class_weights: for classification, pair, multilabel and tagging (task is {self.task})")
        if self.focal_gamma < 0:
            out.append(f"focal_gamma: must be >= 0 (got {self.focal_gamma})")
        if isinstance(self.class_weights, dict):
            bad = {k: v for k, v in self.class_weights.items() if not v > 0}
            if bad or not self.class_weights:
                out.append(f"class_weights: give positive weights per label, e.g. {{pos: 1, neg: 3}} (got {bad or '{}'})")
        if (self.data.char_column is None) != (self.data.tag_column is None) and self.task == "tagging":
            out.append("data.char_column and data.tag_column: set both (a file with extra columns) or neither")
        if self.task != "tagging" and (self.data.char_column is not None or self.data.char_field != "exact"
                                       or self.data.type_suffix != "keep"):
            out.append(f"data.char_column / char_field / type_suffix are for task=tagging files (task is {self.task})")
        if self.data.encoding != "auto":
            import codecs

            try:
                codecs.lookup(self.data.encoding)
            except LookupError:
                out.append(f"data.encoding: unknown codec '{self.data.encoding}' (try auto, utf-8, gb18030, gbk)")
        return out
