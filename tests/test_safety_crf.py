"""A CRF export is served right or not at all; entity words come back without inserted
spaces; labels in the model card cannot break it (issue 11, item 8).

A BERT + CRF NER export used to load in plain ``pipeline("token-classification")`` as its
emission model alone (argmax decoding, the CRF ignored, no warning). Now plain loading
refuses it, ``trust_remote_code=True`` runs the shipped modeling_bert_crf.py and gives
exactly `workbench predict`'s entities. Pipelines run in a fresh process with stdin closed
(as in a script or a service), where transformers cannot ask "run the custom code? [y/N]".
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from finetune_fixtures import (  # noqa: F401  (one_thread: autouse fixture)
    ner_sentences, one_thread, read_jsonl, tiny_model, write_conll,
)

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000"]


def _is_cjk(text: str) -> bool:
    return bool(text) and all("\u4e00" <= c <= "\u9fff" for c in text)


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    """BIO taggers with and without a CRF on People's Daily sentences, finetuned and exported,
    and what a fresh process with plain transformers makes of the exports."""
    from workbench.cli import main

    d = tmp_path_factory.mktemp("crf_safety")
    sents = ner_sentences(260, max_chars=60)
    write_conll(d / "train.txt", sents[:200])
    write_conll(d / "valid.txt", sents[200:220])
    texts = ["".join(c for c, _ in s) for s in sents[220:260]]
    (d / "sentences.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    tiny_model(d / "base", ["".join(c for c, _ in s) for s in sents])
    for crf in ("true", "false"):
        assert main(["finetune", "task=tagging", f"crf={crf}", f"model={d / 'base'}", f"train={d / 'train.txt'}",
                     f"valid={d / 'valid.txt'}", f"output={d / f'ft-{crf}'}", "epochs=4", "max_length=64", *FAST]) == 0
        assert main(["export", f"input={d / f'ft-{crf}'}", f"output={d / f'export-{crf}'}"]) == 0
    code = f"""
        import json, sys
        sys.modules["workbench"] = None  # plain transformers: zh-workbench cannot be imported here
        from transformers import AutoModelForTokenClassification, pipeline

        crf_dir, plain_dir = {str(d / 'export-true')!r}, {str(d / 'export-false')!r}
        texts = open({str(d / 'sentences.txt')!r}, encoding="utf-8").read().splitlines()
        out = {{}}
        for name, load in (("pipeline", lambda: pipeline("token-classification", model=crf_dir,
                                                         aggregation_strategy="simple", device="cpu")),
                           ("auto", lambda: AutoModelForTokenClassification.from_pretrained(crf_dir))):
            try:
                out[name] = "loaded " + type(load()).__name__
            except Exception as e:
                out[name] = type(e).__name__ + ": " + str(e)
        ner = pipeline("token-classification", model=crf_dir, aggregation_strategy="simple", device="cpu",
                       trust_remote_code=True)
        out["class"] = type(ner.model).__name__
        ents = lambda rows: [[[e["start"], e["end"], e["entity_group"], e["word"]] for e in r] for r in rows]
        out["crf"] = ents(ner(texts))
        # the model card's way without trust_remote_code: import the shipped file yourself
        sys.path.insert(0, crf_dir)
        try:
            from modeling_bert_crf import BertCrfForTokenClassification
            from transformers import PreTrainedTokenizerFast
            imported = pipeline("token-classification", model=BertCrfForTokenClassification.from_pretrained(crf_dir),
                                tokenizer=PreTrainedTokenizerFast.from_pretrained(crf_dir),
                                aggregation_strategy="simple", device="cpu")
            out["imported"] = ents(imported(texts))
        except Exception as e:
            out["imported"] = type(e).__name__ + ": " + str(e)
        plain = pipeline("token-classification", model=plain_dir, aggregation_strategy="simple", device="cpu")
        out["plain"] = ents(plain(texts))
        out["joined"] = plain.tokenizer.convert_tokens_to_string(["new", "york", "在", "北", "京", "，", "上", "海"])
        print("\\nRESULT " + json.dumps(out, ensure_ascii=False))  # after transformers' [y/N] prompt (stdout)
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(d / "hf_modules")}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    return d, texts, json.loads(res.stdout.rsplit("\nRESULT ", 1)[1])


def test_crf_export_refuses_plain_loading_and_matches_predict_with_trust_remote_code(cli, ner):
    from workbench.tasks.heads import load_task_model
    from workbench.tasks.inference import entities, tag

    d, texts, out = ner
    exp = d / "export-true"
    # Plain loading fails at once and says how to load it; it never falls back to BertForTokenClassification.
    for name in ("pipeline", "auto"):
        assert out[name].startswith("ValueError: ") and "contains custom code" in out[name], out[name]
        assert "trust_remote_code=True" in out[name] and str(exp) in out[name]
    assert out["class"] == "BertCrfForTokenClassification"
    assert (exp / "modeling_bert_crf.py").is_file() and not (exp / "crf.safetensors").exists()
    assert json.loads((exp / "config.json").read_text(encoding="utf-8"))["model_type"] == "bert_crf"

    # trust_remote_code=True gives exactly `workbench predict`'s entities (type, start, end) ...
    code, _, err = cli("predict", f"model={exp}", f"input={d / 'sentences.txt'}", f"output={d / 'p.jsonl'}")
    assert code == 0, err
    ours = [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in read_jsonl(d / "p.jsonl")]
    theirs = [[(a, b, t) for a, b, t, _ in r] for r in out["crf"]]
    assert len(ours) == len(texts) >= 20 and sum(map(len, ours)) >= 20
    assert theirs == ours
    assert out["imported"] == out["crf"]
    # ... which are those of the finetune output (CRF in crf.safetensors) ...
    code, _, err = cli("predict", f"model={d / 'ft-true'}", f"input={d / 'sentences.txt'}", f"output={d / 'pf.jsonl'}")
    assert code == 0, err
    assert read_jsonl(d / "pf.jsonl") == read_jsonl(d / "p.jsonl")
    # ... and the CRF matters here: argmax over the emission scores alone gives other entities.
    model, crf, tok, spec = load_task_model(exp, needed_by="test")
    viterbi, _ = tag(model, crf, tok, spec, texts)
    argmax, _ = tag(model, None, tok, spec, texts)
    as_entities = lambda tags: [[(e["start"], e["end"], e["type"]) for e in entities(t, x, spec.scheme)]  # noqa: E731
                                for t, x in zip(texts, tags)]
    assert as_entities(viterbi) == ours
    differ = sum(a != b for a, b in zip(as_entities(argmax), ours))
    assert differ >= 3, differ
    # The model's logits are max-marginals: their argmax is the Viterbi path, token by token.
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**enc).logits.argmax(-1)
    paths = model.decode(**enc)
    for b, path in enumerate(paths):
        n = int(enc["attention_mask"][b].sum())
        assert best[b, 1:n - 1].tolist() == path
    # evaluate on the export scores as finetune did
    code, _, err = cli("evaluate", f"model={exp}", f"input={d / 'valid.txt'}", f"output={d / 'ev'}")
    assert code == 0, err
    ft = json.loads((d / "ft-true" / "metrics.json").read_text(encoding="utf-8"))
    assert json.loads((d / "ev" / "metrics.json").read_text(encoding="utf-8"))["f1"] == pytest.approx(ft["valid"]["f1"])


def test_max_marginals_against_brute_force():
    """The shipped CRF code on its own: max-marginals and Viterbi equal enumeration of every
    valid tag sequence, with masks (gaps, padding) and BIO constraints; Viterbi equals the
    workbench CRF's."""
    from workbench.tasks.crf import CRF, transition_constraints
    from workbench.tasks.modeling_bert_crf import CrfLayer, chain_mask, max_marginals, viterbi
    from workbench.tasks.tags import tag_list

    tags = tag_list(["PER"], "bio")  # O B-PER I-PER
    allowed, start, end = transition_constraints(tags)
    torch.manual_seed(0)
    layer = CrfLayer(3)
    with torch.no_grad():
        for p in (layer.transitions, layer.start_scores, layer.end_scores):
            p.normal_(std=2)
        layer.allowed.copy_(allowed)
        layer.allowed_start.copy_(start)
        layer.allowed_end.copy_(end)
    crf = CRF(3, (allowed, start, end))
    crf.load_state_dict(layer.state_dict())
    trans, st, en = layer.scores()
    emissions = torch.randn(3, 7, 3) * 2
    attention = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    mask = chain_mask(attention)
    assert mask.tolist()[1] == [False, True, True, True, False, False, False]
    marg = max_marginals(emissions, mask, layer)
    assert viterbi(emissions, mask, layer) == crf.decode(emissions, mask)
    for b in range(3):
        kept = mask[b].nonzero().squeeze(1).tolist()
        em = emissions[b, kept]
        paths = {p: (st[p[0]] + en[p[-1]] + sum(em[i, t] for i, t in enumerate(p))
                     + sum(trans[a, c] for a, c in itertools.pairwise(p))).item()
                 for p in itertools.product(range(3), repeat=len(kept))}
        best = max(paths.values())
        for i, pos in enumerate(kept):
            for t in range(3):
                through = max(s for p, s in paths.items() if p[i] == t)
                assert marg[b, pos, t].item() == pytest.approx(through - best, abs=1e-3)
        assert marg[b, kept].argmax(-1).tolist() == viterbi(emissions[b:b + 1], mask[b:b + 1], layer)[0]
        outside = [i for i in range(7) if i not in kept]
        assert torch.equal(marg[b, outside], emissions[b, outside])  # [CLS]/[SEP]/padding: emissions


def test_entity_words_have_no_inserted_spaces(ner):
    d, texts, out = ner
    checked = 0
    for key in ("plain", "crf"):  # without and with a CRF
        for text, ents in zip(texts, out[key]):
            for start, end, _, word in ents:
                if _is_cjk(text[start:end]):
                    assert word == text[start:end], (key, word, text[start:end])
                    checked += end - start > 1
    assert checked >= 10
    assert out["joined"] == "new york在北京，上海"  # spaces stay between latin words only
    # The re-saved tokenizer encodes exactly as the finetune output's.
    from workbench.vocab.tokenizer import load_tokenizer

    for crf in ("true", "false"):
        old = load_tokenizer(str(d / f"ft-{crf}"), needed_by="test")
        new = load_tokenizer(str(d / f"export-{crf}"), needed_by="test")
        probe = texts + ["iPhone 6s在New York，１２月“奥运”[SEP] ab\u3000c"]
        a = old(probe, return_offsets_mapping=True)
        b = new(probe, return_offsets_mapping=True)
        assert a["input_ids"] == b["input_ids"] and a["offset_mapping"] == b["offset_mapping"]
        assert new.model_max_length == old.model_max_length == 64


def test_model_card_escapes_labels():
    from workbench.report.escape import md_cell
    from workbench.report.model_card import model_card
    from workbench.tasks.heads import TaskSpec

    labels = ["a\nb", "a|b", "<img src=x onerror=alert(1)>", "x```y", "ok"]
    spec = TaskSpec(task="classification", labels=labels, max_length=64, base_model="<b>base</b>`|")
    per_class = {name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1} for name in labels}
    metrics = {"label_map": {"counts": dict.fromkeys(labels, 2)}, "metric": "accuracy", "seed": 0, "best_epoch": 1,
               "valid": {"accuracy": 0.5, "macro_f1": 0.5, "per_class": per_class}}
    upstream = {"config": {"task": "classification", "lr": "```\n<script>x</script>"}, "counts": {"train": 10},
                "inputs": [{"role": "train", "path": "/d/<svg onload=1>|.tsv", "sha256": "0" * 64}]}
    card = model_card("<script>alert(1)</script>", spec, metrics, upstream)
    # Labels and the name are HTML-escaped text (file names and the base model are code spans).
    assert "<img" not in card and "<script" not in card.split("## Training config")[0]
    lines = card.splitlines()
    # The label table and the per-class table keep one row per label, each with all its cells.
    for header, n_cells in (("| label | count | share |", 3), ("| label | precision | recall | f1 | support |", 5)):
        head = lines.index(header)
        rows = lines[head + 2: head + 2 + len(labels)]
        assert lines[head + 2 + len(labels)] == ""
        for row in rows:
            cells = row.replace("\\|", "").split("|")
            assert len(cells) == n_cells + 2 and cells[0] == "" and cells[-1] == "", row
        assert [row.split(" | ")[0] for row in rows] == ["| " + md_cell(label) for label in labels]
    data = lines[lines.index("| split | file | sha256 | records |") + 2]
    assert len(data.replace("\\|", "").split("|")) == 6, data
    # A config value cannot close its code block (the fence is longer than any backtick run).
    block = lines.index("## Training config") + 2
    fence = lines[block][: len(lines[block]) - len("yaml")]
    assert set(fence) == {"`"} and len(fence) > 3 and lines.index(fence, block + 1) > block + 2
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return
    html = MarkdownIt("commonmark").enable("table").render(card)
    assert "<img" not in html and "<script" not in html and "<svg" not in html and "<b>" not in html
    assert html.count("<tr>") == 2 * (1 + len(labels)) + 2  # label + per-class tables, data table (header + 1 row)
    assert "<td>a\\nb</td>" in html and "<td>a|b</td>" in html and "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in html
