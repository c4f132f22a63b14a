"""Extractive question answering (SQuAD-style JSON, e.g. CMRC 2018): data, windows, head, decoding, metric.

    workbench finetune --config configs/cmrc2018.yaml model=runs/base/pretrain

Everything QA lives here, top to bottom:

  1. data     ``read_squad``: SQuAD v1 JSON ``data[].paragraphs[].{context, qas[].{id, question,
              answers[].{text, answer_start}}}`` into one ``QARecord`` per question. An answer whose
              ``answer_start`` does not point at its text is an error naming its JSON position, or
              with ``repair`` moved to the nearest occurrence of the text (CMRC 2018 trial counts
              UTF-16 code units before astral characters), and an answer text that is not in the
              context at all (193 of the 9,657 CMRC dev references) stays a reference for the
              metric but can never be a training span; both counted. ``split_by_article``
              holds out whole articles (seeded), so no context is in train and test.
  2. windows  ``encode_windows``: question + context through the fast tokenizer
              (``truncation="only_second"``, ``stride``, offset mapping) as transformers'
              question-answering pipeline did: a long context becomes windows of `max_length`
              tokens, consecutive ones sharing `doc_stride` context tokens. Train labels are the
              first locatable answer's start/end tokens when the window holds ALL of it, else
              [CLS] (index 0): an answer cut by a window edge is labelled only in the windows
              that contain it whole.
  3. head     ``BertForQuestionAnswering`` (``AutoModelForQuestionAnswering``): a linear layer
              giving a start and an end logit per token; loss = mean of the two cross-entropies.
  4. decoding ``nbest_answers``: per window, softmax of the start and end logits over the context
              tokens and [CLS]; [CLS] is then zeroed, so a window trained to point at [CLS] (no
              answer inside) gives its spans little probability. Every (start, end) with
              start <= end < start + `max_answer_length` is scored p_start * p_end (exhaustively,
              not a top-20 x top-20 shortlist) and each window's `n_best` spans are kept, widened
              to whole words of the pre-tokenizer (a wordpiece never cuts an English word or
              number). Spans of one question with the same text (ignoring case) are one answer
              scored by the sum of their probabilities (an answer the context repeats, or two
              overlapping windows find, gathers them), its offsets those of the first met. This
              is the ranking of transformers 4.x's ``pipeline("question-answering")``, whose
              ``top_k=k`` keeps 2k + 10 spans per window: with n_best=20 its top_k=5 list starts
              with our best answer (checked against transformers 4.57.1).
  5. metric   the official CMRC 2018 evaluation (ymcui/cmrc2018 ``cmrc2018_evaluate.py``):
              EM after removing its punctuation list, and F1 over the longest common
              *contiguous* run of segments after mixed segmentation (each CJK character one
              segment, other runs by NLTK's word tokenizer), max over the references; a
              question without a prediction scores 0. ``em``/``f1`` are fractions (the script
              prints them x 100).

transformers 5 removed ``pipeline("question-answering")`` (``REMOVED_TASKS``). An export is a
plain ``BertForQuestionAnswering`` directory (``AutoModelForQuestionAnswering`` +
``AutoTokenizer`` load it; transformers 4.x's pipeline runs it) when the encoder was used as
is, frozen, top-k or with LoRA (merged); with a layer mix or adapters it is a ``bert_workbench``
directory (model_type in config.json) with its ``modeling_bert_workbench.py``, which
transformers runs only with ``trust_remote_code=True``. Either ships this file as
``qa_inference.py``: its ``QuestionAnswerer`` needs only numpy, torch and transformers, passes
trust_remote_code only for a bert_workbench config, and gives the answers ``workbench
predict`` gives (tested in a process without zh-workbench).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CLS_INDEX = 0  # BERT puts [CLS] first: the "no answer in this window" label


# --------------------------------------------------------------------------- 1. data
@dataclass(frozen=True)
class QAAnswer:
    """A reference answer: its text and character offset into the context (None: the text is
    not in the context, a reference for the metric only)."""

    text: str
    start: int | None

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + len(self.text)


@dataclass
class QARecord:
    """One question about one context, with its reference answers (maybe none: prediction input)."""

    id: str
    question: str
    context: str
    answers: tuple[QAAnswer, ...] = ()
    article: str = ""  # the article's id (or its index in the file): the unit of train/test splits
    title: str = ""
    source: str = ""
    position: str = ""  # where in the file: data[i].paragraphs[j].qas[k]
    paragraph: int = 0  # index of the paragraph in its article (to write the file back)

    # The finetune stage's generic steps (the [UNK] report) read `text` / `text_pair`.
    @property
    def text(self) -> str:
        return self.context

    @property
    def text_pair(self) -> str:
        return self.question

    @property
    def labels(self) -> tuple[str, ...]:
        return ()  # spans, not labels: the generic label check has nothing to check

    @property
    def span(self) -> tuple[int, int] | None:
        """[start, end) of the first answer found in the context: the training target."""
        return next(((a.start, a.end) for a in self.answers if a.start is not None), None)


@dataclass
class SquadInfo:
    """What reading one file found (counted in metrics.json / the manifest)."""

    articles: int = 0
    questions: int = 0
    answers: int = 0
    moved: int = 0  # answer_start repaired to the nearest occurrence of the text
    not_in_context: int = 0  # references whose text is not in the context (metric only)
    no_span: int = 0  # questions none of whose answers is in the context (cannot train)
    empty_questions: int = 0  # kept with repair (the official metric scores them)
    examples: list[str] = field(default_factory=list)  # positions of the first repairs

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def _fail(path, problem: str, fix: str, line: int | None = None):
    try:
        from workbench.errors import InputError
    except ImportError:  # the standalone copy in an export (qa_inference.py)
        raise ValueError(f"{path}{f', line {line}' if line else ''}: {problem}\n  fix: {fix}") from None
    raise InputError(path, problem, fix, line=line)


def _nearest(context: str, text: str, start: int) -> int | None:
    """Offset of the occurrence of `text` in `context` nearest to `start` (None if absent)."""
    hits, i = [], context.find(text)
    while i != -1:
        hits.append(i)
        i = context.find(text, i + 1)
    return min(hits, key=lambda h: (abs(h - start), h)) if hits else None


def read_squad(path: str | Path, *, repair: bool = False, encoding: str = "utf-8",
               need_answers: bool = True) -> tuple[list[QARecord], SquadInfo]:
    """One QARecord per question of a SQuAD v1-style JSON file (CMRC 2018, DRCD, SQuAD).

    Every structural problem is an InputError naming the file and the JSON position
    (``data[3].paragraphs[0].qas[2]``) and the fix. `repair` (``data.repair``): an
    answer_start that does not point at its text is moved to the text's nearest occurrence;
    an answer text absent from the context is kept as a metric-only reference; both counted
    in the returned SquadInfo. Without `repair` both are errors.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        _fail(path, "file not found", "check the path (train/valid/test)")
    # auto: UTF-8 (a BOM allowed), else GB18030 (which reads GBK / GB2312), as `prepare` reads.
    codecs = ("utf-8-sig", "gb18030") if encoding == "auto" else (encoding,)
    for codec in codecs:
        try:
            raw = data.decode(codec)
            break
        except UnicodeDecodeError as e:
            if codec == codecs[-1]:
                _fail(path, f"not {' or '.join(codecs)} text ({e.reason} at byte {e.start})",
                      "set data.encoding to the file's codec (e.g. gb18030, big5)")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        _fail(path, f"not valid JSON: {e.msg} (column {e.colno})",
              "a QA file is one SQuAD-style JSON document {\"data\": [...]}, not JSON lines", line=e.lineno)
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        _fail(path, "no top-level \"data\" list", 'write SQuAD-style JSON: {"data": [{"paragraphs": [{"context": ..., '
              '"qas": [{"id": ..., "question": ..., "answers": [{"text": ..., "answer_start": ...}]}]}]}]}')
    fmt_fix = "each question needs {\"id\", \"question\", \"answers\": [{\"text\", \"answer_start\"}]} (SQuAD v1 format)"
    info = SquadInfo()
    records: list[QARecord] = []
    seen: dict[str, str] = {}
    for i, art in enumerate(doc["data"]):
        where_a = f"data[{i}]"
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            _fail(path, f"{where_a}: an article needs a \"paragraphs\" list", fmt_fix)
        info.articles += 1
        article = str(art.get("id", i))
        for j, par in enumerate(art["paragraphs"]):
            where_p = f"{where_a}.paragraphs[{j}]"
            if not isinstance(par, dict) or not isinstance(par.get("context"), str) or not par["context"].strip():
                _fail(path, f"{where_p}: no (non-empty) \"context\" string", fmt_fix)
            if not isinstance(par.get("qas"), list):
                _fail(path, f"{where_p}: no \"qas\" list", fmt_fix)
            context = par["context"]
            for k, qa in enumerate(par["qas"]):
                where = f"{where_p}.qas[{k}]"
                if not isinstance(qa, dict):
                    _fail(path, f"{where}: not an object", fmt_fix)
                qid = qa.get("id")
                if not isinstance(qid, (str, int)) or not str(qid).strip():
                    _fail(path, f"{where}: no \"id\"", "give every question a unique id (predictions are keyed by it)")
                qid = str(qid).strip()
                if qid in seen:
                    _fail(path, f"{where}: id {qid!r} is used twice (first at {seen[qid]})", "make question ids unique")
                seen[qid] = where
                question = qa.get("question")
                if not isinstance(question, str):
                    _fail(path, f"{where} (id {qid}): no \"question\" string", fmt_fix)
                if not question.strip():  # CMRC 2018 trial has two: still scored by the official script
                    if not repair:
                        _fail(path, f"{where} (id {qid}): the question is empty", "write the question, or set "
                              "data.repair=true to keep it (the model then sees only the context; counted)")
                    info.empty_questions += 1
                if qa.get("is_impossible"):
                    _fail(path, f"{where} (id {qid}): an unanswerable question (SQuAD 2.0 is_impossible)",
                          "task=qa extracts an answer span for every question; remove unanswerable questions")
                answers = qa.get("answers", [])
                if not isinstance(answers, list) or (need_answers and not answers):
                    _fail(path, f"{where} (id {qid}): no \"answers\" list" if not isinstance(answers, list)
                          else f"{where} (id {qid}): the question has no answer", fmt_fix)
                refs = []
                for m, ans in enumerate(answers):
                    at = f"{where}.answers[{m}] (id {qid})"
                    if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) or not ans["text"].strip():
                        _fail(path, f"{at}: no (non-empty) answer \"text\"", fmt_fix)
                    text, start = ans["text"], ans.get("answer_start")
                    if isinstance(start, bool) or not isinstance(start, int):
                        _fail(path, f"{at}: answer_start {start!r} is not an integer", fmt_fix)
                    info.answers += 1
                    if context[start:start + len(text)] == text and start >= 0:
                        refs.append(QAAnswer(text, start))
                        continue
                    near = _nearest(context, text, start)
                    if not repair:
                        _fail(path, f"{at}: the context at answer_start={start} is not the answer text {text!r}"
                              + (f" (it occurs at {near})" if near is not None else " (the text is not in the context)"),
                              "fix answer_start, or set data.repair=true to move it to the nearest occurrence of the "
                              "text and keep answers absent from the context as references for the metric only (counted)")
                    if near is None:
                        info.not_in_context += 1
                    else:
                        info.moved += 1
                    if len(info.examples) < 5:
                        info.examples.append(f"{at}: answer_start {start} → {near}")
                    refs.append(QAAnswer(text, near))
                rec = QARecord(qid, question, context, tuple(refs), article=article, title=str(art.get("title", "")),
                               source=str(path), position=where, paragraph=j)
                if refs and rec.span is None:
                    info.no_span += 1
                records.append(rec)
                info.questions += 1
    if not records:
        _fail(path, "the file holds no question", "check that it is a SQuAD-style file with data[].paragraphs[].qas[]")
    return records, info


def split_by_article(records: Sequence[QARecord], test_fraction: float, seed: int) -> tuple[list[QARecord], list[QARecord]]:
    """(train, test): a seeded `test_fraction` of the articles (at least one each side) held out
    whole, so no context is seen in training and scored in test. Record order is kept."""
    articles = sorted({r.article for r in records})
    if len(articles) < 2:
        _fail(records[0].source, f"{len(articles)} article(s): cannot hold out articles for a test set",
              "give a test file, or a train file with several articles")
    rng = random.Random(seed)
    order = articles[:]
    rng.shuffle(order)
    n_test = min(max(1, round(test_fraction * len(order))), len(order) - 1)
    held = set(order[:n_test])
    return [r for r in records if r.article not in held], [r for r in records if r.article in held]


def write_squad(records: Iterable[QARecord], path: str | Path) -> None:
    """Records back to a SQuAD-style file (articles and paragraphs in first-seen order; answer
    offsets as read, repaired ones moved, absent texts at -1)."""
    articles: dict[str, dict] = {}
    for r in records:
        art = articles.setdefault(r.article, {"id": r.article, "title": r.title, "paragraphs": {}})
        par = art["paragraphs"].setdefault(r.paragraph, {"context": r.context, "qas": []})
        par["qas"].append({"id": r.id, "question": r.question, "answers": [
            {"text": a.text, "answer_start": -1 if a.start is None else a.start} for a in r.answers]})
    doc = {"version": "zh-workbench split", "data": [
        {**a, "paragraphs": list(a["paragraphs"].values())} for a in articles.values()]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")


def read_questions(path: str, fmt: str = "auto", text: str | None = None) -> list[QARecord]:
    """Prediction input: a SQuAD-style .json file (ids kept), JSON lines ``{"question",
    "context"[, "id"]}``, or text lines ``question<TAB>context`` (`text` holds stdin's)."""
    from workbench.tasks.data import parse_json_line

    if fmt == "auto":
        fmt = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(Path(path).suffix.lower(), "txt")
    if fmt == "json":
        return read_squad(path, repair=True, need_answers=False)[0]
    lines = text.splitlines() if text is not None else Path(path).read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if fmt == "jsonl":
            obj = parse_json_line(line, path, n)
            q, c = obj.get("question"), obj.get("context")
            if not isinstance(q, str) or not isinstance(c, str) or not q.strip() or not c.strip():
                _fail(path, 'a QA input line needs "question" and "context" strings', 'write {"question": ..., '
                      '"context": ..., "id": ...} per line', line=n)
            out.append(QARecord(str(obj.get("id", len(out))), q, c, source=str(path), position=f"line {n}"))
        else:
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                _fail(path, "a QA input line needs a question and a context separated by one tab",
                      "write 'question<TAB>context' (or a .jsonl / SQuAD .json file)", line=n)
            out.append(QARecord(str(len(out)), parts[0], parts[1], source=str(path), position=f"line {n}"))
    if not out:
        _fail(path, "no question to answer", "give one 'question<TAB>context' per line, JSON lines or SQuAD JSON")
    return out


# --------------------------------------------------------------------------- 2. windows
def default_stride(max_length: int) -> int:
    """transformers' question-answering default: min(max_length // 2, 128) shared tokens."""
    return min(max_length // 2, 128)


@dataclass
class QAWindow:
    """One model input: [CLS] question [SEP] a slice of the context [SEP]."""

    record: int  # index of the record (question) it belongs to
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]  # per token, [start, end) in the context ((0, 0) outside it)
    context: np.ndarray  # bool per token: a context token (an answer may start/end there)
    words: list[int | None]  # pre-tokenizer word of each context token (None outside the context)
    start_position: int = CLS_INDEX
    end_position: int = CLS_INDEX

    def word_chars(self) -> dict[int, tuple[int, int]]:
        """word → [start, end) characters of the context tokens of that word in this window."""
        out: dict[int, tuple[int, int]] = {}
        for t, w in enumerate(self.words):
            if w is not None and self.context[t]:
                s, e = self.offsets[t]
                a, b = out.get(w, (s, e))
                out[w] = (min(a, s), max(b, e))
        return out

    def chars(self, start: int, end: int, words: dict | None = None) -> tuple[int, int]:
        """Token span [start, end] (inclusive) → context characters [s, e), widened to whole words."""
        words = self.word_chars() if words is None else words
        ws, we = self.words[start], self.words[end]
        s = words[ws][0] if ws is not None else self.offsets[start][0]
        e = words[we][1] if we is not None else self.offsets[end][1]
        return s, e


@dataclass
class WindowStats:
    windows: int = 0
    questions_split: int = 0  # questions whose context needed more than one window
    answer_windows: int = 0  # train: windows labelled with a span (the rest point at [CLS])
    inexact: int = 0  # train: answers whose ends fall inside a word (the best span is wider)
    in_no_window: int = 0  # train: answers no window holds whole (longer than the stride): only [CLS] targets
    no_span: int = 0  # train: questions with no answer in the context (not trained on)

    def summary(self) -> dict:
        return dict(self.__dict__)


def check_questions(tokenizer, records: Sequence[QARecord], max_length: int, doc_stride: int) -> None:
    """Each question must leave more than `doc_stride` context tokens in a window, else the
    tokenizer cannot slide over the context: an InputError naming the question."""
    enc = tokenizer([r.question for r in records], add_special_tokens=False)["input_ids"]
    for r, ids in zip(records, enc):
        room = max_length - 3 - len(ids)  # [CLS] question [SEP] context [SEP]
        if room <= doc_stride:
            _fail(r.source or "input", f"{r.position} (id {r.id}): the question has {len(ids)} tokens, leaving "
                  f"{room} context tokens per window of max_length={max_length}, not more than doc_stride={doc_stride}",
                  "raise max_length, lower qa.doc_stride, or shorten the question")


def encode_windows(tokenizer, records: Sequence[QARecord], *, max_length: int, doc_stride: int,
                   labels: bool = False) -> tuple[list[QAWindow], WindowStats]:
    """Windows of every record, in record order; with `labels`, start/end positions of the
    record's first located answer where a window holds all of it, else [CLS]. Records without
    a located answer get no windows when `labels` is set (counted: ``no_span``)."""
    check_questions(tokenizer, records, max_length, doc_stride)
    stats = WindowStats()
    keep = [i for i, r in enumerate(records) if not labels or r.span is not None]
    stats.no_span = len(records) - len(keep)
    windows: list[QAWindow] = []
    batch = 256
    # The call below leaves its truncation setting on the Rust tokenizer, where direct
    # backend_tokenizer.encode_batch calls (the [UNK] report) would apply it: put it back.
    backend = tokenizer.backend_tokenizer
    saved = backend.truncation
    try:
        _windows(tokenizer, records, keep, batch, max_length, doc_stride, labels, stats, windows)
    finally:
        if saved is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**saved)
    stats.windows = len(windows)
    return windows, stats


def _windows(tokenizer, records, keep, batch, max_length, doc_stride, labels, stats, windows) -> None:
    for b in range(0, len(keep), batch):
        idx = keep[b:b + batch]
        enc = tokenizer([records[i].question for i in idx], [records[i].context for i in idx],
                        truncation="only_second", max_length=max_length, stride=doc_stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True, return_token_type_ids=True)
        per_record: dict[int, int] = {}
        for w, sample in enumerate(enc["overflow_to_sample_mapping"]):
            rec = idx[sample]
            per_record[rec] = per_record.get(rec, 0) + 1
            seq = enc.sequence_ids(w)
            ctx = np.array([s == 1 for s in seq])
            offsets = [tuple(o) if c else (0, 0) for o, c in zip(enc["offset_mapping"][w], ctx)]
            words = [wd if c else None for wd, c in zip(enc.word_ids(w), ctx)]
            win = QAWindow(rec, list(enc["input_ids"][w]), list(enc["token_type_ids"][w]), offsets, ctx, words)
            if labels:
                _label(win, records[rec], stats)
            windows.append(win)
        stats.questions_split += sum(1 for n in per_record.values() if n > 1)
        if labels:
            held = {w.record for w in windows if w.start_position != CLS_INDEX}
            stats.in_no_window += sum(1 for i in idx if i not in held)


def _label(win: QAWindow, record: QARecord, stats: WindowStats) -> None:
    """start/end token of the answer if the window's context tokens cover all of it, else [CLS]."""
    s_char, e_char = record.span
    ctx = np.flatnonzero(win.context)
    first, last = int(ctx[0]), int(ctx[-1])
    if not (win.offsets[first][0] <= s_char and win.offsets[last][1] >= e_char):
        return  # the answer is (partly) outside this window: [CLS]
    start = next(t for t in range(first, last + 1) if win.offsets[t][1] > s_char)
    end = next(t for t in range(last, first - 1, -1) if win.offsets[t][0] < e_char)
    if end < start:  # an answer of whitespace only between two tokens; read_squad refuses those
        return
    win.start_position, win.end_position = start, end
    stats.answer_windows += 1
    if win.chars(start, end) != (s_char, e_char):
        stats.inexact += 1


def train_features(records: Sequence[QARecord], tokenizer, *, max_length: int, doc_stride: int) -> tuple[list[dict], dict]:
    """Trainer inputs (input_ids, token_type_ids, start/end_positions) and window statistics."""
    windows, stats = encode_windows(tokenizer, records, max_length=max_length, doc_stride=doc_stride, labels=True)
    if not windows:
        _fail(records[0].source, "no question has an answer inside its context: nothing to train on",
              "check the answers' texts and answer_start offsets")
    feats = [{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids, "start_positions": w.start_position,
              "end_positions": w.end_position} for w in windows]
    return feats, {"texts": len(records), **stats.summary()}


def collate(features: Sequence[dict], pad_id: int = 0) -> dict:
    """Right-padded tensors of QA features (start/end_positions when present). Not
    tasks.inference.pad_batch: this module ships as the export's qa_inference.py, which must
    not import zh-workbench (package_qa_export)."""
    import torch

    width = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        types[i, :n] = torch.tensor(f["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch


# --------------------------------------------------------------------------- 4. decoding
def _softmax_masked(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    x = np.where(keep, logits, -10000.0).astype(np.float32)
    x = np.exp(x - x.max())
    return x / x.sum()


def window_spans(start_logits: np.ndarray, end_logits: np.ndarray, win: QAWindow, *, max_answer_length: int,
                 n_best: int) -> list[tuple[float, int, int]]:
    """The `n_best` best (score, start token, end token) of one window, best first; score =
    p_start * p_end with both softmaxes over the context tokens and [CLS], [CLS] then zeroed."""
    n = len(win.input_ids)
    keep = win.context.copy()
    keep[CLS_INDEX] = True
    p_start = _softmax_masked(np.asarray(start_logits[:n], dtype=np.float32), keep)
    p_end = _softmax_masked(np.asarray(end_logits[:n], dtype=np.float32), keep)
    p_start[CLS_INDEX] = p_end[CLS_INDEX] = 0.0
    # (n, n) scores of every span; the band keeps start <= end < start + max_answer_length.
    scores = np.tril(np.triu(np.outer(p_start, p_end)), max_answer_length - 1)
    flat = scores.ravel()
    if n_best == 1:
        order = [int(np.argmax(flat))]  # the first of equal maxima, as the pipeline takes it
    elif flat.size <= n_best:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, n_best)[:n_best]
        order = part[np.argsort(-flat[part])]
    out = []
    for i in order:
        s, e = divmod(int(i), n)
        # Non-context tokens, [CLS] and spans outside the band score 0: never an answer.
        if flat[i] > 0 and win.context[s] and win.context[e]:
            out.append((flat[i].item(), s, e))
    return out


def nbest_answers(records: Sequence[QARecord], windows: Sequence[QAWindow], start_logits: Sequence[np.ndarray],
                  end_logits: Sequence[np.ndarray], *, max_answer_length: int, n_best: int = 20,
                  top_k: int = 1) -> list[list[dict]]:
    """Per record, up to `top_k` answers {answer, start, end, score}, best first.

    Each window offers its `n_best` spans (widened to whole words); spans of one record whose
    texts are equal (ignoring case) are one answer whose score is the sum of theirs, with the
    offsets of the first one met (windows in order, best span first), as transformers 4.x's
    question-answering pipeline ranks them (its top_k=k takes 2k + 10 spans per window)."""
    found: list[dict[str, dict]] = [{} for _ in records]
    for win, sl, el in zip(windows, start_logits, end_logits):
        words = win.word_chars()
        context = records[win.record].context
        answers = found[win.record]
        for score, s, e in window_spans(sl, el, win, max_answer_length=max_answer_length, n_best=n_best):
            a, b = win.chars(s, e, words)
            key = context[a:b].lower()
            if key in answers:
                answers[key]["score"] += score
            else:
                answers[key] = {"answer": context[a:b], "start": a, "end": b, "score": score}
    out = []
    for answers in found:
        ranked = sorted(answers.values(), key=lambda x: -x["score"])[:top_k]  # stable: ties keep the first met
        out.append([{**x, "score": round(x["score"], 6)} for x in ranked])
    return out


def answer(model, tokenizer, records: Sequence[QARecord], *, max_length: int, doc_stride: int, max_answer_length: int,
           n_best: int = 20, top_k: int = 1, batch_size: int = 64) -> tuple[list[list[dict]], WindowStats]:
    """n-best answers of a QA model for each record, and the window statistics."""
    import torch

    windows, stats = encode_windows(tokenizer, records, max_length=max_length, doc_stride=doc_stride)
    starts, ends = [], []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            batch = collate([{"input_ids": w.input_ids, "token_type_ids": w.token_type_ids} for w in chunk],
                            tokenizer.pad_token_id)
            out = model(**{k: v.to(device) for k, v in batch.items()})
            starts += list(out.start_logits.float().cpu().numpy())
            ends += list(out.end_logits.float().cpu().numpy())
    model.train(was_training)
    return nbest_answers(records, windows, starts, ends, max_answer_length=max_answer_length, n_best=n_best,
                         top_k=top_k), stats


# --------------------------------------------------------------------------- 5. metric
# The official CMRC 2018 evaluation (ymcui/cmrc2018, cmrc2018_evaluate.py), ported as is:
# the same punctuation list (note: '……' is ONE two-character entry, so a lone '…' is kept),
# CJK = U+4E00..U+9FA5 only, punctuation skipped before a pending non-CJK run is flushed (so
# 'ω-force' is one segment 'ωforce'), NLTK's word tokenizer on non-CJK runs, the longest
# common *substring* of segments (not subsequence), max over references.
# One deviation: the script's nltk.word_tokenize first splits sentences with the Punkt model
# (a separate download); here preserve_line=True skips that, which changes only where a
# period inside a multi-sentence English run of an answer is split.
CMRC_PUNCTUATION = ['-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=',
                    '，', '。', '：', '？', '！', '“', '”', '；', '’', '《', '》', '……', '·', '、',
                    '「', '」', '（', '）', '－', '～', '『', '』']
_CJK = re.compile("[\u4e00-\u9fa5]")


def _word_tokenize(text: str) -> list[str]:
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


def mixed_segmentation(in_str: str, rm_punc: bool = False) -> list[str]:
    in_str = str(in_str).lower().strip()
    segs_out: list[str] = []
    temp_str = ""
    for char in in_str:
        if rm_punc and char in CMRC_PUNCTUATION:
            continue
        if _CJK.search(char) or char in CMRC_PUNCTUATION:
            if temp_str != "":
                segs_out.extend(_word_tokenize(temp_str))
                temp_str = ""
            segs_out.append(char)
        else:
            temp_str += char
    if temp_str != "":
        segs_out.extend(_word_tokenize(temp_str))
    return segs_out


def remove_punctuation(in_str: str) -> str:
    in_str = str(in_str).lower().strip()
    return "".join(c for c in in_str if c not in CMRC_PUNCTUATION)


def find_lcs(s1: Sequence, s2: Sequence) -> tuple[Sequence, int]:
    """Longest common contiguous run of s1 and s2 (the first one found in s1), and its length."""
    m = [[0] * (len(s2) + 1) for _ in range(len(s1) + 1)]
    mmax, p = 0, 0
    for i in range(len(s1)):
        for j in range(len(s2)):
            if s1[i] == s2[j]:
                m[i + 1][j + 1] = m[i][j] + 1
                if m[i + 1][j + 1] > mmax:
                    mmax = m[i + 1][j + 1]
                    p = i + 1
    return s1[p - mmax:p], mmax


def calc_f1_score(answers: Sequence[str], prediction: str) -> float:
    f1_scores = []
    for ans in answers:
        ans_segs = mixed_segmentation(ans, rm_punc=True)
        prediction_segs = mixed_segmentation(prediction, rm_punc=True)
        _, lcs_len = find_lcs(ans_segs, prediction_segs)
        if lcs_len == 0:
            f1_scores.append(0)
            continue
        precision = 1.0 * lcs_len / len(prediction_segs)
        recall = 1.0 * lcs_len / len(ans_segs)
        f1_scores.append((2 * precision * recall) / (precision + recall))
    return max(f1_scores)


def calc_em_score(answers: Sequence[str], prediction: str) -> int:
    prediction_ = remove_punctuation(prediction)
    return int(any(remove_punctuation(ans) == prediction_ for ans in answers))


def evaluate_predictions(references: dict[str, Sequence[str]], predictions: dict[str, str]) -> dict:
    """The official script's ``evaluate``: {"f1", "em"} in percent over every reference
    question (an unanswered one scores 0), "total", "skip" (unanswered) and "average"."""
    f1 = em = 0.0
    skip = 0
    for qid, answers in references.items():
        if qid not in predictions:
            skip += 1
            continue
        f1 += calc_f1_score(list(answers), str(predictions[qid]))
        em += calc_em_score(list(answers), str(predictions[qid]))
    total = len(references)
    f1_pct, em_pct = 100.0 * f1 / total, 100.0 * em / total
    return {"f1": f1_pct, "em": em_pct, "average": (f1_pct + em_pct) / 2, "total": total, "skip": skip}


def qa_metrics(records: Sequence[QARecord], best: Sequence[str]) -> dict:
    """{"em", "f1"} as fractions (the official figures / 100), "n", and per-question scores."""
    per_f1 = [calc_f1_score([a.text for a in r.answers], p) for r, p in zip(records, best)]
    per_em = [calc_em_score([a.text for a in r.answers], p) for r, p in zip(records, best)]
    n = len(records)
    return {"em": sum(per_em) / n if n else 0.0, "f1": sum(per_f1) / n if n else 0.0, "n": n,
            "_per_question": list(zip(per_em, per_f1))}


# --------------------------------------------------------------------------- stage glue
def evaluate_records(model, tokenizer, spec, records: Sequence[QARecord], *, batch_size: int = 64) -> tuple[dict, dict]:
    """(metrics, predictions) as ``inference.evaluate_records`` returns them for other tasks:
    em / f1 (fractions), n, window statistics under "length"; predictions {"answers": best
    answer dict per record, "scores": (em, f1) per record}."""
    nbest, stats = answer(model, tokenizer, records, max_length=spec.max_length, doc_stride=spec.stride(),
                          max_answer_length=spec.max_answer_length, n_best=spec.n_best, top_k=1, batch_size=batch_size)
    best = [a[0] if a else {"answer": "", "start": 0, "end": 0, "score": 0.0} for a in nbest]
    metrics = qa_metrics(records, [b["answer"] for b in best])
    per = metrics.pop("_per_question")
    metrics["length"] = {"windows": stats.windows, "questions_split": stats.questions_split}
    return metrics, {"answers": best, "scores": per}


def predict_rows(model, tokenizer, spec, records: Sequence[QARecord], *, top_k: int = 3, batch_size: int = 64) -> list[dict]:
    """One row per question: {id, question, answer, start, end, score, n_best: [...]}; offsets
    are characters [start, end) into the context."""
    nbest, _ = answer(model, tokenizer, records, max_length=spec.max_length, doc_stride=spec.stride(),
                      max_answer_length=spec.max_answer_length, n_best=spec.n_best, top_k=top_k,
                      batch_size=batch_size)
    rows = []
    for r, answers in zip(records, nbest):
        best = answers[0] if answers else {"answer": "", "start": 0, "end": 0, "score": 0.0}
        rows.append({"id": r.id, "question": r.question, **best, "n_best": answers})
    return rows


def errors(records: Sequence[QARecord], preds: dict, worst: int) -> list[dict]:
    """The `worst` wrong answers (lowest F1 first): id, question, prediction, references."""
    out = []
    for r, best, (em, f1) in zip(records, preds["answers"], preds["scores"]):
        if not em:
            out.append({"id": r.id, "position": r.position, "question": r.question, "predicted": best["answer"],
                        "answers": [a.text for a in r.answers], "f1": round(f1, 4), "_key": f1})
    out.sort(key=lambda x: x["_key"])
    for row in out:
        del row["_key"]
    return out[:worst]


class QuestionAnswerer:
    """Standalone use of an exported QA model (numpy + torch + transformers only):

        qa = QuestionAnswerer("PATH/TO/EXPORT")
        qa("《战国无双3》是由哪两个公司合作开发的？", context)   # {"answer", "start", "end", "score", "n_best"}

    Windows, decoding and limits come from the directory's task.json (max_length, doc_stride,
    max_answer_length), as ``workbench predict`` runs it. A directory whose config.json says
    model_type ``bert_workbench`` (a layer mix or adapters) is loaded with
    ``trust_remote_code=True``: transformers then runs the directory's
    ``modeling_bert_workbench.py`` (read it first); a stock BertForQuestionAnswering never is."""

    def __init__(self, directory: str, device: str = "cpu"):
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        task = json.loads((Path(directory) / "task.json").read_text(encoding="utf-8"))
        config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
        remote_code = config.get("model_type") == WORKBENCH_MODEL_TYPE
        self.max_length = int(task["max_length"])
        self.doc_stride = int(task.get("doc_stride") or default_stride(self.max_length))
        self.max_answer_length = int(task.get("max_answer_length") or 30)
        self.n_best = int(task.get("n_best") or 20)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForQuestionAnswering.from_pretrained(
            directory, trust_remote_code=remote_code).to(device).eval()

    def __call__(self, question: str | Sequence[str], context: str | Sequence[str], *, top_k: int = 3,
                 batch_size: int = 64):
        single = isinstance(question, str)
        qs, cs = ([question], [context]) if single else (list(question), list(context))
        records = [QARecord(str(i), q, c, position=f"input {i}") for i, (q, c) in enumerate(zip(qs, cs))]
        nbest, _ = answer(self.model, self.tokenizer, records, max_length=self.max_length, doc_stride=self.doc_stride,
                          max_answer_length=self.max_answer_length, n_best=self.n_best, top_k=top_k,
                          batch_size=batch_size)
        rows = [{**(a[0] if a else {"answer": "", "start": 0, "end": 0, "score": 0.0}), "n_best": a} for a in nbest]
        return rows[0] if single else rows


# --------------------------------------------------------------------------- export
INFERENCE_FILE = "qa_inference.py"
WORKBENCH_MODEL_TYPE = "bert_workbench"  # tasks/encoder.MODEL_TYPE (not imported: this file runs without zh-workbench)
MODELING_FILE = "modeling_bert_workbench.py"


def package_qa_export(directory: Path) -> None:
    """Ship this module as ``qa_inference.py``: transformers 5 has no question-answering
    pipeline, and its ``QuestionAnswerer`` decodes exactly as ``workbench predict`` (no
    workbench import on that path; loading the weights needs plain transformers only)."""
    (Path(directory) / INFERENCE_FILE).write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")


def model_card(name: str, spec, metrics: dict, finetune_manifest: dict, *, custom: bool = False) -> str:
    """README.md of a QA export: base model, data (file hashes and counts, no text), EM / F1,
    config, how to load it with and without zh-workbench, limits. `custom`: a bert_workbench
    model (layer mix / adapters), which loads only with trust_remote_code (said in the card)."""
    from workbench.report.escape import md_cell, md_code, md_text

    cfg = finetune_manifest.get("config", {})
    counts = finetune_manifest.get("counts", {})
    lines = [f"# {md_text(name)}", "", "A BERT fine-tuned by zh-workbench for extractive question answering: given a "
             "question and a Chinese context, it returns the span of the context that answers it.", "",
             "## Base model", "", f"- {md_code(spec.base_model)}", "",
             "## Data", "", "No text from the training data is reproduced in this card.", "",
             "| split | file | sha256 | questions |", "|---|---|---|---|"]
    for entry in finetune_manifest.get("inputs", []):
        if "sha256" in entry:
            role = entry["role"]
            lines.append(f"| {md_cell(role)} | {md_code(str(entry['path']).rsplit('/', 1)[-1])} | "
                         f"{md_code(str(entry['sha256'])[:16] + '…')} | {md_cell(counts.get(role, ''))} |")
    split = metrics.get("split")
    if split:
        lines += ["", f"train and test are disjoint sets of articles of {md_code(str(split['from']).rsplit('/', 1)[-1])} "
                  f"(test: {split['test']['articles']} articles / {split['test']['questions']} questions, "
                  f"fraction {split['test_articles']}, split seed {split['split_seed']})."]
    lines += ["", "## Metrics", "", "The official CMRC 2018 metric: exact match after removing punctuation, and F1 "
              "over the longest common run of segments (CJK characters, English words), max over the references "
              "(fractions; the official script prints them x 100).", ""]
    for split_name in ("valid", "test"):
        m = metrics.get(split_name)
        if m:
            lines.append(f"- {split_name}: EM {m['em']:.4f}, F1 {m['f1']:.4f} ({m['n']} questions)")
    seeds = metrics.get("seeds")
    if seeds:
        for key, v in seeds.items():
            if isinstance(v, dict) and "mean" in v:
                lines.append(f"- {md_text(key)} over seeds {md_text(seeds['seeds'])}: {v['mean']:.4f} ± {v['std']:.4f}")
    config_lines = [f"{k}: {cfg[k]}" for k in ("task", "max_length", "qa", "epochs", "max_steps", "batch_size", "lr",
                                                 "weight_decay", "warmup_ratio", "freeze_layers", "freeze_encoder",
                                                 "layer_mix", "adapter", "lora", "seed", "seeds")
                    if k in cfg]
    stride = spec.stride()
    pipeline_k = (spec.n_best - 10) // 2 if spec.n_best >= 12 and spec.n_best % 2 == 0 else None
    lines += ["", "## Training config", "", "```yaml", *config_lines, "```", "",
              "## How to load", "",
              f"Contexts longer than {spec.max_length} tokens are read in windows sharing {stride} tokens; answers "
              f"are at most {spec.max_answer_length} tokens. transformers 5 removed `pipeline(\"question-answering\")`; "
              f"`{INFERENCE_FILE}` (numpy + torch + transformers only) decodes as `workbench predict` does:", "",
              "```python", "import sys; sys.path.insert(0, \"PATH/TO/THIS/DIR\")",
              "from qa_inference import QuestionAnswerer", "",
              "qa = QuestionAnswerer(\"PATH/TO/THIS/DIR\")",
              "qa(\"问题\", \"上下文\")  # {'answer', 'start', 'end', 'score', 'n_best'}; start/end: characters", "```", ""]
    if custom:
        lines += _custom_loading_note()
    else:
        lines += [
            "The weights are a stock `BertForQuestionAnswering` (`AutoModelForQuestionAnswering.from_pretrained`). "
            "transformers 4.x's pipeline runs it with the same windows"
            + (f"; with `top_k={pipeline_k}` it ranks answers as here (n_best={spec.n_best} spans per window), "
               "so its first answer is ours:" if pipeline_k else
               f" (its top_k=k keeps 2k + 10 spans per window, this model's n_best={spec.n_best}: its ranking "
               "can differ slightly):"), "",
            "```python", "from transformers import pipeline", "",
            "nlp = pipeline(\"question-answering\", model=\"PATH/TO/THIS/DIR\")",
            f"nlp(question=\"问题\", context=\"上下文\", max_seq_len={spec.max_length}, doc_stride={stride}, "
            f"max_answer_len={spec.max_answer_length}, top_k={pipeline_k or 1})" + ("[0]" if pipeline_k else ""),
            "```", ""]
    lines += ["Or with zh-workbench: `workbench predict model=PATH input=questions.jsonl` "
              "(`{\"question\", \"context\"}` per line, or a SQuAD-style .json).", "",
              "## Limits", "",
              "- Every question gets an answer span: there is no \"no answer\" output (SQuAD 1.1 / CMRC 2018 style).",
              "- Scores are for the splits above only (Wikipedia-style text); other domains will score lower.",
              "- Texts are not cleaned or normalised before prediction.", "",
              "## Files", "",
              "- `config.json`, `model.safetensors`, tokenizer files: the transformers model",
              *([f"- `{MODELING_FILE}`: the model's code (layer mix / adapters; torch + transformers only)"]
                if custom else []),
              f"- `{INFERENCE_FILE}`: windows and span decoding without zh-workbench",
              "- `task.json`: max_length, doc_stride, max_answer_length",
              "- `metrics.json`: full metrics and window statistics",
              "- `manifest.json`: file hashes, inputs and versions", ""]
    return "\n".join(lines)


def _custom_loading_note() -> list[str]:
    """Card lines for a bert_workbench QA model: why and how it needs trust_remote_code."""
    return [
        "### Custom model code: trust_remote_code",
        "",
        "This model uses a learned layer mix and/or bottleneck adapters (config.json `layer_mix`, `adapter`), which "
        f"a stock `BertForQuestionAnswering` cannot hold: config.json says model_type `{WORKBENCH_MODEL_TYPE}` and "
        f"the code is `{MODELING_FILE}` in this directory (torch + transformers only). transformers runs that file "
        "only with `trust_remote_code=True`, so **`QuestionAnswerer` passes `trust_remote_code=True` for this "
        f"directory** (it does so only when config.json says `{WORKBENCH_MODEL_TYPE}`); read `{MODELING_FILE}` "
        "before you load it. Plain `AutoModelForQuestionAnswering.from_pretrained(DIR)` refuses the directory "
        "rather than load a stock BERT without the mix / adapters. Without trust_remote_code, import the file "
        "yourself:",
        "",
        "```python",
        "import sys; sys.path.insert(0, \"PATH/TO/THIS/DIR\")",
        "from modeling_bert_workbench import BertWorkbenchForQuestionAnswering",
        "",
        "model = BertWorkbenchForQuestionAnswering.from_pretrained(\"PATH/TO/THIS/DIR\")",
        "```",
        "",
        "transformers 4.x's `pipeline(\"question-answering\")` is not tested with this model type (the shipped file "
        "is written for transformers 5); use `qa_inference.py`.",
        "",
    ]
