"""export + predict: the exported directory works with plain transformers in a fresh process.

`pipeline(...)` on the export must give the same labels as `workbench predict` on 100
sentences (classification; token classification without CRF), the standalone
the shipped modeling_bert_crf.py must agree with `workbench predict` on a CRF model, and the model card must
not leak corpus text.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

from finetune_fixtures import (  # noqa: F401  (one_thread: autouse fixture)
    ner_sentences, one_thread, read_jsonl, reviews, tiny_model, write_conll, write_tsv,
)

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000"]


def _fresh_python(code: str, cwd=None) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def cls_export(tmp_path_factory):
    from workbench.cli import main

    d = tmp_path_factory.mktemp("cls")
    rows = reviews(200)
    write_tsv(d / "train.tsv", rows[:200])
    write_tsv(d / "valid.tsv", rows[200:240])
    (d / "sentences.txt").write_text("".join(t[:60] + "\n" for _, t in rows[240:340]), encoding="utf-8")
    tiny_model(d / "base", [t for _, t in rows])
    assert main(["finetune", f"model={d / 'base'}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                 f"output={d / 'ft'}", "epochs=3", "max_length=64", *FAST]) == 0
    assert main(["export", f"input={d / 'ft'}", f"output={d / 'export'}"]) == 0
    return d


@pytest.fixture(scope="module")
def ner_exports(tmp_path_factory):
    """BIO tagger without and with a CRF, trained on People's Daily sentences."""
    from workbench.cli import main

    d = tmp_path_factory.mktemp("ner")
    sents = ner_sentences(320, max_chars=60)
    write_conll(d / "train.txt", sents[:200])
    write_conll(d / "valid.txt", sents[200:220])
    (d / "sentences.txt").write_text("".join("".join(c for c, _ in s) + "\n" for s in sents[220:320]), encoding="utf-8")
    tiny_model(d / "base", ["".join(c for c, _ in s) for s in sents])
    for crf in ("false", "true"):
        assert main(["finetune", "task=tagging", f"crf={crf}", f"model={d / 'base'}", f"train={d / 'train.txt'}",
                     f"valid={d / 'valid.txt'}", f"output={d / f'ft-{crf}'}", "epochs=4", "max_length=64", *FAST]) == 0
        assert main(["export", f"input={d / f'ft-{crf}'}", f"output={d / f'export-{crf}'}"]) == 0
    return d


def test_classification_pipeline_matches_predict(cli, cls_export):
    d = cls_export
    code, _, err = cli("predict", f"model={d / 'export'}", f"input={d / 'sentences.txt'}", f"output={d / 'p.jsonl'}")
    assert code == 0, err
    ours = read_jsonl(d / "p.jsonl")
    assert len(ours) == 100
    theirs = json.loads(_fresh_python(f"""
        import json
        from transformers import pipeline
        nlp = pipeline("text-classification", model={str(d / 'export')!r}, device="cpu")
        texts = open({str(d / 'sentences.txt')!r}, encoding="utf-8").read().splitlines()
        print(json.dumps([[r["label"], r["score"]] for r in nlp(texts)]))
    """))
    assert [r["label"] for r in ours] == [label for label, _ in theirs]
    assert [r["score"] for r in ours] == pytest.approx([s for _, s in theirs], abs=1e-4)
    assert len({r["label"] for r in ours}) == 2  # the model is not constant


def test_token_classification_pipeline_matches_predict(cli, ner_exports):
    d = ner_exports
    code, _, err = cli("predict", f"model={d / 'export-false'}", f"input={d / 'sentences.txt'}", f"output={d / 'p.jsonl'}")
    assert code == 0, err
    ours = [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in read_jsonl(d / "p.jsonl")]
    assert len(ours) == 100 and sum(map(len, ours)) > 20
    theirs = json.loads(_fresh_python(f"""
        import json
        from transformers import pipeline
        nlp = pipeline("token-classification", model={str(d / 'export-false')!r}, aggregation_strategy="simple", device="cpu")
        texts = open({str(d / 'sentences.txt')!r}, encoding="utf-8").read().splitlines()
        print(json.dumps([[[e["start"], e["end"], e["entity_group"]] for e in r] for r in nlp(texts)]))
    """))
    assert ours == [[tuple(e) for e in r] for r in theirs]


def test_crf_export_standalone_matches_predict(cli, ner_exports):
    """The shipped modeling_bert_crf.py decodes with the CRF in a process where workbench
    cannot be imported, without trust_remote_code (the class imported by hand), and agrees
    with `workbench predict`."""
    d = ner_exports
    exp = d / "export-true"
    assert (exp / "modeling_bert_crf.py").is_file() and not (exp / "crf.safetensors").exists()
    code, _, err = cli("predict", f"model={exp}", f"input={d / 'sentences.txt'}", f"output={d / 'pc.jsonl'}")
    assert code == 0, err
    ours = [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in read_jsonl(d / "pc.jsonl")]
    theirs = json.loads(_fresh_python(f"""
        import json, sys
        sys.modules["workbench"] = None
        sys.path.insert(0, ".")
        from modeling_bert_crf import BertCrfForTokenClassification
        from transformers import PreTrainedTokenizerFast, pipeline
        nlp = pipeline("token-classification", model=BertCrfForTokenClassification.from_pretrained("."),
                       tokenizer=PreTrainedTokenizerFast.from_pretrained("."), aggregation_strategy="simple",
                       device="cpu")
        texts = open({str(d / 'sentences.txt')!r}, encoding="utf-8").read().splitlines()
        print(json.dumps([[(e["start"], e["end"], e["entity_group"]) for e in nlp(t)] for t in texts]))
    """, cwd=exp))
    assert ours == [[tuple(e) for e in r] for r in theirs]


def test_model_card_labels_and_manifest(cls_export, ner_exports):
    from workbench.manifest import sha256_file

    d = cls_export
    exp = d / "export"
    card = (exp / "README.md").read_text(encoding="utf-8")
    for section in ("## Base model", "## Data", "## Metrics", "## Training config", "## Intended use", "## Limits",
                    "## How to load", 'pipeline("text-classification"'):
        assert section in card, section
    assert "| neg | 100 | 50.0% |" in card and "| train | `train.tsv` |" in card
    corpus = (d / "train.tsv").read_text(encoding="utf-8").splitlines()[1:] + \
        (d / "valid.tsv").read_text(encoding="utf-8").splitlines()[1:]
    for line in corpus:
        text = line.split("\t", 1)[1]
        for i in range(0, max(len(text) - 8, 1), 8):  # no 8-character piece of any record
            assert text[i:i + 8] not in card
    labels = json.loads((exp / "labels.json").read_text(encoding="utf-8"))
    assert labels["labels"] == ["neg", "pos"] and labels["id2label"] == {"0": "neg", "1": "pos"}
    man = json.loads((exp / "manifest.json").read_text(encoding="utf-8"))
    assert man["stage"] == "export" and man["outputs"]["model.safetensors"] == sha256_file(exp / "model.safetensors")
    assert any(e.get("sha256") == sha256_file(d / "train.tsv") for e in man["inputs"])
    ner_card = (ner_exports / "export-true" / "README.md").read_text(encoding="utf-8")
    assert "modeling_bert_crf.py" in ner_card and "trust_remote_code=True" in ner_card and "## The CRF" in ner_card


def test_predict_inputs(cli, cls_export, ner_exports, monkeypatch, tmp_path):
    exp = cls_export / "export"
    monkeypatch.setattr("sys.stdin", io.StringIO("这个东西很好用\n\n质量太差，退货了\n"))
    code, out, err = cli("predict", f"model={exp}")
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["text"] for r in rows] == ["这个东西很好用", "质量太差，退货了"]  # blank lines skipped
    assert all(len(r["top_k"]) == 2 and abs(sum(k["score"] for k in r["top_k"]) - 1) < 1e-4 for r in rows)
    (tmp_path / "in.tsv").write_text("id\tcontent\n1\t很好\n", encoding="utf-8")
    code, _, err = cli("predict", f"model={exp}", f"input={tmp_path / 'in.tsv'}", f"output={tmp_path / 'o.jsonl'}")
    assert code == 2 and "no column ['text']" in err and "['id', 'content']" in err
    code, _, err = cli("predict", f"model={exp}", f"input={tmp_path / 'in.tsv'}", f"output={tmp_path / 'o.jsonl'}",
                       "text_column=content")
    assert code == 0 and read_jsonl(tmp_path / "o.jsonl")[0]["text"] == "很好"
    (tmp_path / "in.jsonl").write_text('{"content": "不错"}\n', encoding="utf-8")
    code, _, err = cli("predict", f"model={exp}", f"input={tmp_path / 'in.jsonl'}", f"output={tmp_path / 'o.jsonl'}",
                       "text_column=content")
    assert code == 0 and read_jsonl(tmp_path / "o.jsonl")[0]["label"] in ("pos", "neg")
    code, _, err = cli("predict", f"model={tmp_path}", f"input={tmp_path / 'in.jsonl'}")
    assert code == 2 and "not a `finetune` or `export` output" in err


def test_long_text_tagging_is_windowed_and_stitched(ner_exports, tmp_path):
    """A text ~10x longer than the model's window: every character gets a tag, entities
    come back with offsets into the text, the CRF never produces an invalid sequence."""
    from workbench.stages.predict import predict_rows
    from workbench.tasks.heads import load_task_model
    from workbench.tasks.inference import tag
    from workbench.tasks.tags import tags_to_spans

    d = ner_exports
    long_text = "".join((d / "sentences.txt").read_text(encoding="utf-8").splitlines()[:12])
    assert len(long_text) > 400
    for crf in ("false", "true"):
        model, crf_layer, tok, spec = load_task_model(d / f"export-{crf}", needed_by="test")
        tags, stats = tag(model, crf_layer, tok, spec, [long_text])
        assert len(tags[0]) == len(long_text) and stats.windows > 6 and stats.texts_split == 1
        if crf == "true":
            assert tags_to_spans(tags[0], spec.scheme)[1] == []  # valid as decoded
        (row,) = predict_rows(model, crf_layer, tok, spec, [long_text], None)
        assert all(long_text[e["start"]:e["end"]] == e["text"] and e["end"] <= len(long_text) for e in row["entities"])


def test_plain_pipeline_handles_texts_longer_than_the_model(cli, cls_export, ner_exports, tmp_path):
    """The export's tokenizer knows the length the model was trained on (model_max_length =
    max_length), so plain pipeline() truncates (classification, like `predict`) or strides
    (token classification) instead of failing past the 512 position embeddings."""
    d, n = cls_export, ner_exports
    long_cls = "".join(t for _, t in reviews(40))[:1500]
    long_ner = "".join((n / "sentences.txt").read_text(encoding="utf-8").splitlines()[:40])
    assert len(long_cls) > 1000 and len(long_ner) > 1000
    (tmp_path / "long.txt").write_text(long_cls + "\n", encoding="utf-8")
    code, _, err = cli("predict", f"model={d / 'export'}", f"input={tmp_path / 'long.txt'}", f"output={tmp_path / 'p.jsonl'}")
    assert code == 0, err
    (ours,) = read_jsonl(tmp_path / "p.jsonl")
    theirs = json.loads(_fresh_python(f"""
        import json
        from transformers import AutoTokenizer, pipeline
        assert AutoTokenizer.from_pretrained({str(d / 'export')!r}).model_max_length == 64
        nlp = pipeline("text-classification", model={str(d / 'export')!r}, device="cpu")
        (r,) = nlp([{long_cls!r}], truncation=True)
        ner = pipeline("token-classification", model={str(n / 'export-false')!r}, aggregation_strategy="simple",
                       stride=16, device="cpu")
        ents = ner({long_ner!r})
        print(json.dumps({{"cls": [r["label"], r["score"]], "ner": [[e["start"], e["end"], e["word"]] for e in ents]}}))
    """))
    assert theirs["cls"][0] == ours["label"] and theirs["cls"][1] == pytest.approx(ours["score"], abs=1e-4)
    ents = theirs["ner"]
    assert len(ents) > 10 and max(e[1] for e in ents) > 1000  # entities found all along the text
    assert all(0 <= a < b <= len(long_ner) for a, b, _ in ents)


def test_evaluate_classification_and_tagging(cli, cls_export, ner_exports, tmp_path):
    d = cls_export
    out = tmp_path / "eval"
    code, stdout, err = cli("evaluate", f"model={d / 'export'}", f"input={d / 'valid.tsv'}", f"output={out}", "worst=5")
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    ft = json.loads((d / "ft" / "metrics.json").read_text(encoding="utf-8"))
    assert m["accuracy"] == ft["valid"]["accuracy"] and m["n"] == 40  # the same code path as finetune's scoring
    errors = read_jsonl(out / "errors.jsonl")
    n_wrong = round((1 - m["accuracy"]) * 40)
    assert len(errors) == min(5, n_wrong) and all(e["label"] != e["predicted"] for e in errors)
    assert [e["score"] for e in errors] == sorted((e["score"] for e in errors), reverse=True)
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| neg |" in report and "Confusion matrix" in report and (out / "confusion.png").is_file()
    n = ner_exports
    code, _, err = cli("evaluate", f"model={n / 'ft-true'}", f"input={n / 'valid.txt'}", f"output={tmp_path / 'ev2'}")
    assert code == 0, err
    m = json.loads((tmp_path / "ev2" / "metrics.json").read_text(encoding="utf-8"))
    ft = json.loads((n / "ft-true" / "metrics.json").read_text(encoding="utf-8"))
    assert m["f1"] == pytest.approx(ft["valid"]["f1"]) and set(m["per_type"]) <= {"PER", "LOC", "ORG"}
    for e in read_jsonl(tmp_path / "ev2" / "errors.jsonl"):
        assert e["missed"] or e["spurious"]
