"""Task models: a BERT with a classification or token-classification head, an optional CRF.

Heads are the stock transformers ones, so a fine-tuned model is a plain
``save_pretrained`` directory that ``pipeline(...)`` loads:
  - classification / pair: ``BertForSequenceClassification`` - the [CLS] vector through
    BERT's pooler (dense + tanh) and a linear layer; softmax + cross-entropy;
  - multilabel: the same with ``problem_type="multi_label_classification"`` (one sigmoid
    per label, binary cross-entropy; labels are multi-hot float vectors);
  - tagging: ``BertForTokenClassification`` - a linear layer on every token gives the
    emission scores (B, L, num_tags). With ``crf: true`` the workbench ``CRF`` (with
    BIO/BIOES transition constraints) scores whole tag sequences on top of them and
    Viterbi decodes. A finetune output keeps the CRF's parameters in ``crf.safetensors``
    beside the emission model; ``export`` packs both into one ``BertCrfForTokenClassification``
    (tasks/crf_export.py) that a plain ``pipeline()`` refuses rather than decode without the
    CRF.
LoRA (``add_lora``, peft): low-rank adapters on the attention projections, merged into the
weights before saving, so a LoRA run also ends as a plain directory. Pooling other than
[CLS], a learned layer mix and bottleneck adapters are not stock heads: they make a
``bert_workbench`` model (tasks/encoder.py, tasks/modeling_bert_workbench.py), shipped with
its modeling file, that plain ``pipeline(...)`` refuses and ``trust_remote_code=True`` loads.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import StageInputError
from workbench.modeling import check_model_path
from workbench.tasks.loading import NEW_HEAD_KEYS, UNUSED_PRETRAINING_KEYS, load_complete

log = logging.getLogger("workbench.tasks")

TASK_FILE = "task.json"
CRF_FILE = "crf.safetensors"
TASKS = ("classification", "pair", "multilabel", "tagging", "qa")


@dataclass
class TaskSpec:
    """What a fine-tuned directory predicts and how its inputs are made (``task.json``)."""

    task: str
    labels: list[str]  # classes (classification/pair/multilabel) or entity types (tagging), id order
    max_length: int
    tags: list[str] = field(default_factory=list)  # tagging: the model's tags, id order
    scheme: str = "bio"  # tagging: bio | bioes
    crf: bool = False
    window_overlap: int | None = None
    truncation: str = "head"
    head_tokens: int | None = None
    threshold: float = 0.5  # multilabel
    data: dict = field(default_factory=dict)  # how the training files were read (for evaluate)
    base_model: str = ""
    doc_stride: int | None = None  # qa: context tokens shared by consecutive windows (None: default_stride)
    max_answer_length: int = 30  # qa: longest answer span, in tokens
    n_best: int = 20  # qa: spans each window offers to the answer ranking

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    def overlap(self) -> int:
        """Tokens shared by consecutive tagging windows (default a quarter of the window, >= 2)."""
        window = self.max_length - 2
        if self.window_overlap is not None:
            return self.window_overlap
        return min(max(2, window // 4), max(window - 1, 0))

    def stride(self) -> int:
        """qa: context tokens shared by consecutive windows (transformers' doc_stride)."""
        from workbench.tasks.qa import default_stride

        return self.doc_stride if self.doc_stride is not None else default_stride(self.max_length)

    def output_labels(self) -> list[str]:
        """The model's output ids in order: tags for tagging, else labels."""
        return self.tags if self.task == "tagging" else self.labels

    def save(self, directory: Path) -> None:
        (Path(directory) / TASK_FILE).write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n",
                                                 encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> TaskSpec:
        path = Path(directory) / TASK_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise StageInputError(f"{path} is missing, so {directory} cannot say what it predicts\n"
                                  "  fix: point at a directory written by `workbench finetune` or `workbench export`, "
                                  "or re-run the stage that wrote it") from None
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise StageInputError(f"{path} is not a valid task file ({type(e).__name__}: {str(e).splitlines()[0]})\n"
                                  "  fix: re-run the stage that wrote it (finetune or export)") from None


def load_for_finetune(model: str, spec: TaskSpec, *, needed_by: str = "finetune", encoder=None):
    """The base model with a new head for `spec` (its encoder weights loaded, the head random).
    `encoder`: ``tasks.encoder.EncoderOptions``; pooling / layer mix / adapters give a
    ``bert_workbench`` model (tasks/encoder.py), the defaults the stock transformers class."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    check_model_path(model, needed_by=needed_by)
    names = spec.output_labels()
    kwargs = dict(num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if spec.task == "qa":  # a start and an end logit per token, as BertForQuestionAnswering's config says
        kwargs = dict(num_labels=2)
    # The encoder must load completely; only the new head (and the pooler a masked LM lacks)
    # may be missing, and only a pretraining head may be left over.
    if encoder is not None and encoder.custom:
        from workbench.tasks.encoder import load_for_finetune as load_workbench

        if spec.task in ("classification", "pair", "multilabel"):
            kwargs["problem_type"] = "multi_label_classification" if spec.multilabel else "single_label_classification"
        m = load_workbench(model, spec.task, encoder, needed_by=needed_by, **kwargs)
    elif spec.task == "qa":  # BertForQuestionAnswering: start/end logits per token (tasks/qa.py)
        from transformers import AutoModelForQuestionAnswering

        m = load_complete(AutoModelForQuestionAnswering, model, needed_by=needed_by, num_labels=2,
                          allow_missing=NEW_HEAD_KEYS + ("qa_outputs.",), allow_unexpected=UNUSED_PRETRAINING_KEYS)
    elif spec.task == "tagging":
        m = load_complete(AutoModelForTokenClassification, model, needed_by=needed_by, allow_missing=NEW_HEAD_KEYS,
                          allow_unexpected=UNUSED_PRETRAINING_KEYS, **kwargs)
    else:
        problem = "multi_label_classification" if spec.multilabel else "single_label_classification"
        m = load_complete(AutoModelForSequenceClassification, model, needed_by=needed_by, allow_missing=NEW_HEAD_KEYS,
                          allow_unexpected=UNUSED_PRETRAINING_KEYS, problem_type=problem, **kwargs)
    if m.config.max_position_embeddings < spec.max_length:
        raise StageInputError(f"{needed_by}: max_length {spec.max_length} is longer than the model's "
                              f"max_position_embeddings ({m.config.max_position_embeddings}); set max_length <= "
                              f"{m.config.max_position_embeddings} (longer texts are truncated or windowed)")
    return m


def freeze_layers(model, keep_last: int) -> tuple[int, int]:
    """Freeze the embeddings and every encoder layer but the last `keep_last` (the head and
    the pooler stay trainable). Returns (frozen, total) parameter counts."""
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    frozen_modules = [base.embeddings, *layers[: max(len(layers) - keep_last, 0)]]
    for module in frozen_modules:
        for p in module.parameters():
            p.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return frozen, total


def add_lora(model, spec: TaskSpec, lora):
    """The model wrapped by peft with LoRA adapters on `lora.target_modules`. Trainable: the
    adapters, the head (classifier), BERT's pooler (new when the base is a masked LM) and the
    CRF; everything else is frozen. Returns the PeftModel (merge_and_unload() after training)."""
    from peft import LoraConfig, TaskType, get_peft_model

    task_type = {"tagging": TaskType.TOKEN_CLS, "qa": TaskType.QUESTION_ANS}.get(spec.task, TaskType.SEQ_CLS)
    config = LoraConfig(task_type=task_type,
                        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules))
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as e:
        raise StageInputError(f"finetune: lora.target_modules {list(lora.target_modules)}: {str(e).splitlines()[0]}\n"
                              "  fix: use BERT layer names such as query, key, value, dense") from None
    for name, p in peft_model.named_parameters():
        if any(part in name.split(".") for part in ("classifier", "pooler", "crf", "layer_mix", "qa_outputs")):
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info("finetune: LoRA r=%d on %s: %.2f M of %.2f M parameters train (%.1f%%)", lora.r,
             ",".join(lora.target_modules), trainable / 1e6, total / 1e6, 100 * trainable / total)
    return peft_model


def save_crf(crf, tags: list[str], directory: Path) -> None:
    """``crf.safetensors``: transitions [from, to], start/end scores and the allowed masks;
    the tag names go in the file's metadata (the same order as config.id2label)."""
    import torch
    from safetensors.torch import save_file

    tensors = {
        "transitions": crf.transitions.detach().cpu().float().contiguous(),
        "start_scores": crf.start_scores.detach().cpu().float().contiguous(),
        "end_scores": crf.end_scores.detach().cpu().float().contiguous(),
        "allowed": crf.allowed.cpu().to(dtype=torch.uint8).contiguous(),
        "allowed_start": crf.allowed_start.cpu().to(dtype=torch.uint8).contiguous(),
        "allowed_end": crf.allowed_end.cpu().to(dtype=torch.uint8).contiguous(),
    }
    save_file(tensors, str(Path(directory) / CRF_FILE), metadata={"tags": json.dumps(tags, ensure_ascii=False)})


def load_crf(directory: Path):
    """The CRF saved by ``save_crf``, and its tag list."""
    import torch
    from safetensors import safe_open

    from workbench.tasks.crf import CRF

    with safe_open(str(Path(directory) / CRF_FILE), framework="pt") as f:
        tags = json.loads(f.metadata()["tags"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    crf = CRF(len(tags), (t["allowed"].bool(), t["allowed_start"].bool(), t["allowed_end"].bool()))
    with torch.no_grad():
        crf.transitions.copy_(t["transitions"])
        crf.start_scores.copy_(t["start_scores"])
        crf.end_scores.copy_(t["end_scores"])
    return crf, tags


def load_task_model(directory: str | Path, *, needed_by: str):
    """(model, crf or None, tokenizer, spec) of a finetune or export directory, in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    from workbench.tasks.crf_export import crf_from_model, is_crf_export
    from workbench.tasks.crf_export import model_classes as crf_model_classes
    from workbench.tasks.encoder import is_workbench_model
    from workbench.tasks.encoder import model_class as workbench_model_class
    from workbench.vocab.tokenizer import load_tokenizer

    directory = Path(directory)
    if not directory.is_dir():
        raise StageInputError(f"{needed_by}: model directory {directory} does not exist; run `workbench finetune` first")
    if not (directory / TASK_FILE).is_file():
        raise StageInputError(f"{needed_by}: {directory} has no {TASK_FILE}, so it is not a `finetune` or `export` "
                              "output; point model= at the directory written by `workbench finetune` or `workbench export`")
    spec = TaskSpec.load(directory)
    auto = AutoModelForTokenClassification if spec.task == "tagging" else AutoModelForSequenceClassification
    if spec.task == "qa":
        from transformers import AutoModelForQuestionAnswering as auto  # noqa: N813
    # A CRF export is one BertCrfForTokenClassification (CRF inside model.safetensors, see
    # tasks/crf_export.py): built from zh-workbench's own copy of modeling_bert_crf.py, never
    # from code in the model directory. A finetune output keeps the CRF in crf.safetensors.
    crf_export = spec.task == "tagging" and is_crf_export(directory)
    if crf_export and not spec.crf:
        raise StageInputError(f"{needed_by}: {directory} holds a CRF model but its {TASK_FILE} says crf: false")
    model_cls = crf_model_classes()[1] if crf_export else auto
    if not crf_export and is_workbench_model(directory):  # pooling / layer mix / adapters (tasks/encoder.py)
        model_cls = workbench_model_class(spec.task)  # zh-workbench's own copy of modeling_bert_workbench.py
    # Every weight of the task's head must load: a missing classifier would predict at random.
    model = load_complete(model_cls, directory, needed_by=needed_by)
    model.eval()
    crf = None
    if crf_export:
        crf = crf_from_model(model)  # inference.tag: Viterbi over model.emissions(...)
        tags = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if tags != spec.tags:
            raise StageInputError(f"{needed_by}: {directory}/config.json has tags {tags}, {TASK_FILE} {spec.tags}")
        crf.eval()
    elif spec.crf:
        if not (directory / CRF_FILE).is_file():
            raise StageInputError(f"{needed_by}: {directory} was trained with a CRF but has no {CRF_FILE}")
        crf, tags = load_crf(directory)
        if tags != spec.tags:
            raise StageInputError(f"{needed_by}: {directory}/{CRF_FILE} has tags {tags}, {TASK_FILE} {spec.tags}")
        crf.eval()
    tok = load_tokenizer(str(directory), needed_by=needed_by, lengths_handled=True)
    return model, crf, tok, spec
