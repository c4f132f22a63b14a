"""Encoder-use options: each trains a tiny model for real, exports, and reloads with plain
transformers (no zh-workbench importable) giving `workbench predict`'s predictions.

Options: pooling mean / max / first_last_avg, a learned layer mix (frozen encoder or not),
top-k layers, Houlsby / Pfeiffer adapters, LoRA with a layer mix; tagging with a layer mix
and with adapters. Stock-head options export stock BERT directories; the others a
`bert_workbench` directory that plain pipeline() refuses (never a silent stock BERT) and that
loads with trust_remote_code=True or by importing the shipped modeling file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from finetune_fixtures import ner_sentences, one_thread, read_jsonl, reviews, tiny_model, write_conll, write_tsv  # noqa: F401

FAST = ["batch_size=16", "lr=5e-3", "logging_steps=1000", "epochs=2", "max_length=48"]

CLASSIFICATION = {
    "mean": ["pooling=mean"],
    "max_frozen": ["pooling=max", "freeze_encoder=true"],
    "first_last": ["pooling=first_last_avg"],
    "mix_frozen": ["layer_mix=true", "freeze_encoder=true", "pooling=cls"],
    "mix_mean": ["layer_mix=true", "pooling=mean"],
    "top1": ["freeze_layers=1"],
    "houlsby": ["adapter.kind=houlsby", "adapter.reduction=4", "pooling=mean"],
    "pfeiffer": ["adapter.kind=pfeiffer", "adapter.reduction=4"],
    "lora_mix": ["lora.r=4", "layer_mix=true"],
}
TAGGING = {
    "tag_mix": ["layer_mix=true"],
    "tag_pfeiffer": ["adapter.kind=pfeiffer", "adapter.reduction=4", "freeze_layers=1"],
}
STOCK = {"top1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every option finetuned and exported; predictions of workbench predict and of plain transformers."""
    from workbench.cli import main

    d = tmp_path_factory.mktemp("encoder_options")
    rows = reviews(50)
    write_tsv(d / "train.tsv", rows[:80])
    write_tsv(d / "valid.tsv", rows[80:])
    texts = [t[:40] for _, t in reviews(5, offset=60)]
    (d / "texts.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    base = tiny_model(d / "base", [t for _, t in rows] + texts)
    sents = ner_sentences(180, max_chars=40)
    write_conll(d / "ner_train.txt", sents[:150])
    write_conll(d / "ner_valid.txt", sents[150:165])
    ner_texts = ["".join(c for c, _ in s) for s in sents[165:]]
    (d / "ner_texts.txt").write_text("".join(t + "\n" for t in ner_texts), encoding="utf-8")
    nbase = tiny_model(d / "nbase", ["".join(c for c, _ in s) for s in sents])
    for name, opts in CLASSIFICATION.items():
        assert main(["finetune", f"model={base}", f"train={d / 'train.tsv'}", f"valid={d / 'valid.tsv'}",
                     f"output={d / ('ft-' + name)}", *FAST, *opts]) == 0, name
        assert main(["export", f"input={d / ('ft-' + name)}", f"output={d / ('ex-' + name)}"]) == 0, name
        assert main(["predict", f"model={d / ('ex-' + name)}", f"input={d / 'texts.txt'}",
                     f"output={d / ('p-' + name + '.jsonl')}"]) == 0
    for name, opts in TAGGING.items():
        assert main(["finetune", "task=tagging", f"model={nbase}", f"train={d / 'ner_train.txt'}",
                     f"valid={d / 'ner_valid.txt'}", f"output={d / ('ft-' + name)}", *FAST, "epochs=6", *opts]) == 0
        assert main(["export", f"input={d / ('ft-' + name)}", f"output={d / ('ex-' + name)}"]) == 0, name
        assert main(["predict", f"model={d / ('ex-' + name)}", f"input={d / 'ner_texts.txt'}",
                     f"output={d / ('p-' + name + '.jsonl')}"]) == 0

    code = f"""
        import json, sys
        sys.modules["workbench"] = None  # plain transformers: zh-workbench cannot be imported here
        import torch
        from transformers import AutoModelForSequenceClassification, pipeline
        d = {str(d)!r}
        out = {{}}
        for name in {sorted(CLASSIFICATION)!r}:
            texts = open(d + "/texts.txt", encoding="utf-8").read().splitlines()
            path = d + "/ex-" + name
            try:
                pipeline("text-classification", model=path, device="cpu")
                out[name + ":plain"] = "loaded"
            except Exception as e:
                out[name + ":plain"] = type(e).__name__ + ": " + str(e)
            clf = pipeline("text-classification", model=path, device="cpu", trust_remote_code=True, top_k=None)
            out[name] = {{"class": type(clf.model).__name__,
                         "rows": [{{r["label"]: r["score"] for r in row}} for row in clf(texts, truncation=True)]}}
        for name in {sorted(TAGGING)!r}:
            texts = open(d + "/ner_texts.txt", encoding="utf-8").read().splitlines()
            path = d + "/ex-" + name
            ner = pipeline("token-classification", model=path, device="cpu", trust_remote_code=True,
                           aggregation_strategy="simple")
            out[name] = {{"class": type(ner.model).__name__,
                         "rows": [[[e["start"], e["end"], e["entity_group"]] for e in row] for row in ner(texts)]}}
            raw = pipeline("token-classification", model=path, device="cpu", trust_remote_code=True, ignore_labels=[])
            out[name]["tokens"] = [[[int(e["index"]), e["entity"], float(e["score"])] for e in row] for row in raw(texts)]
        # the model card's way without trust_remote_code: import the shipped file
        sys.path.insert(0, d + "/ex-houlsby")
        from modeling_bert_workbench import BertWorkbenchForSequenceClassification
        from transformers import AutoTokenizer
        m = BertWorkbenchForSequenceClassification.from_pretrained(d + "/ex-houlsby").eval()
        tok = AutoTokenizer.from_pretrained(d + "/ex-houlsby")
        texts = open(d + "/texts.txt", encoding="utf-8").read().splitlines()
        with torch.no_grad():
            probs = torch.softmax(m(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits, -1)
        out["houlsby:imported"] = [{{m.config.id2label[j]: float(p[j]) for j in range(len(p))}} for p in probs]
        print("\\nRESULT " + json.dumps(out, ensure_ascii=False))
    """
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1",
           "HF_MODULES_CACHE": str(d / "hf_modules")}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         stdin=subprocess.DEVNULL, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return d, json.loads(res.stdout.rsplit("\nRESULT ", 1)[1])


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_classification_option_exports_and_reloads_with_plain_transformers(trained, name):
    d, out = trained
    ours = read_jsonl(d / f"p-{name}.jsonl")
    config = json.loads((d / f"ex-{name}" / "config.json").read_text(encoding="utf-8"))
    if name in STOCK:
        assert config["model_type"] == "bert" and out[f"{name}:plain"] == "loaded"
        assert not (d / f"ex-{name}" / "modeling_bert_workbench.py").exists()
    else:
        # never a silent stock BERT: plain loading stops and says how to load it
        assert config["model_type"] == "bert_workbench" and (d / f"ex-{name}" / "modeling_bert_workbench.py").is_file()
        assert out[f"{name}:plain"].startswith("ValueError") and "trust_remote_code=True" in out[f"{name}:plain"]
        assert out[name]["class"] == "BertWorkbenchForSequenceClassification"
        assert "trust_remote_code=True" in (d / f"ex-{name}" / "README.md").read_text(encoding="utf-8")
    theirs = out[name]["rows"]
    assert len(theirs) == len(ours) == 10
    for row, mine in zip(theirs, ours):
        assert max(row, key=row.get) == mine["label"]
        assert row[mine["label"]] == pytest.approx(mine["score"], abs=1e-4)
    if name == "houlsby":
        assert [max(r, key=r.get) for r in out["houlsby:imported"]] == [r["label"] for r in ours]


@pytest.mark.parametrize("name", sorted(TAGGING))
def test_tagging_option_exports_and_reloads_with_plain_transformers(trained, name):
    d, out = trained
    ours = [[[e["start"], e["end"], e["type"]] for e in r["entities"]] for r in read_jsonl(d / f"p-{name}.jsonl")]
    assert out[name]["class"] == "BertWorkbenchForTokenClassification"
    assert out[name]["rows"] == ours
    if name == "tag_mix":
        assert sum(map(len, ours)) >= 3  # it learnt to find entities, so the comparison means something
    # token by token, the pipeline's tag and probability are those of the workbench's own model
    from workbench.tasks.heads import load_task_model

    model, _, tok, spec = load_task_model(d / f"ex-{name}", needed_by="test")
    texts = (d / "ner_texts.txt").read_text(encoding="utf-8").splitlines()
    for text, row in zip(texts, out[name]["tokens"]):
        with torch.no_grad():
            probs = torch.softmax(model(**tok(text, return_tensors="pt")).logits[0], -1)
        assert len(row) == probs.shape[0] - 2
        for index, tag, score in row:
            assert spec.tags[int(probs[index].argmax())] == tag and float(probs[index].max()) == pytest.approx(score, abs=1e-5)


def _state(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_what_trains_is_what_the_options_say(trained):
    """Frozen encoders keep the base's weights exactly; adapters change only adapters and
    LayerNorms; top-k changes only the top layers; the mix's weights move from zero."""
    d, _ = trained
    base = _state(d / "base")
    enc = lambda k: k.startswith("bert.") and not k.startswith("bert.pooler.")  # noqa: E731

    def changed(name):
        state = _state(d / f"ft-{name}")
        return {k for k, v in state.items() if enc(k) and k in base and not torch.equal(v, base[k])}, state

    for name in ("max_frozen", "mix_frozen"):
        diff, state = changed(name)
        assert diff == set(), (name, sorted(diff)[:5])
    _, mix = changed("mix_frozen")
    assert mix["layer_mix.weights"].abs().sum() > 0 and mix["layer_mix.gamma"].shape == (1,)
    diff, state = changed("houlsby")
    assert diff and all("LayerNorm" in k for k in diff), sorted(diff)[:5]
    adapters = [k for k in state if ".adapter." in k]
    assert any(".attention.output.adapter." in k for k in adapters) and any(k.endswith("output.adapter.up.weight") for k in adapters)
    assert not any(".attention.output.adapter." in k for k in _state(d / "ft-pfeiffer"))
    diff, _ = changed("top1")
    assert diff and all(k.startswith("bert.encoder.layer.1.") for k in diff)
    # LoRA is merged: the saved model has no LoRA tensors, the mix is kept
    lora_state = _state(d / "ft-lora_mix")
    assert not any("lora" in k for k in lora_state) and "layer_mix.weights" in lora_state
    # trainable parameter counts are recorded
    counts = {n: json.loads((d / f"ft-{n}" / "metrics.json").read_text(encoding="utf-8"))["parameters"]
              for n in ("mean", "mix_frozen", "houlsby", "pfeiffer", "top1")}
    assert counts["mix_frozen"]["trainable"] < counts["pfeiffer"]["trainable"] < counts["houlsby"]["trainable"] \
        < counts["top1"]["trainable"] < counts["mean"]["trainable"] == counts["mean"]["total"]
    m = json.loads((d / "ft-houlsby" / "manifest.json").read_text(encoding="utf-8"))
    assert m["encoder"]["adapter"] == "houlsby" and m["encoder"]["model_type"] == "bert_workbench"
    assert m["parameters"] == counts["houlsby"]


def test_workbench_evaluate_reloads_the_custom_head(trained, cli):
    d, _ = trained
    code, out, err = cli("evaluate", f"model={d / 'ex-mix_mean'}", f"input={d / 'valid.tsv'}",
                         f"output={d / 'eval-mix'}")
    assert code == 0, err
    valid = json.loads((d / "ft-mix_mean" / "metrics.json").read_text(encoding="utf-8"))["valid"]["accuracy"]
    metrics = json.loads((d / "eval-mix" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["accuracy"] == pytest.approx(valid)


def test_qa_head_with_layer_mix_and_adapters_round_trips(tmp_path):
    """The QA model class (for task=qa) loads a base, and saves / reloads to the same logits."""
    from workbench.tasks.encoder import EncoderOptions, load_for_finetune, model_class

    base = tiny_model(tmp_path / "base", ["问题答案在这里"])
    m = load_for_finetune(str(base), "qa", EncoderOptions(layer_mix=True, adapter="houlsby", adapter_reduction=4)).eval()
    ids = torch.tensor([[101, 100, 102, 103, 102]])
    with torch.no_grad():
        before = m(input_ids=ids)
    m.save_pretrained(tmp_path / "qa")
    again = model_class("qa").from_pretrained(tmp_path / "qa").eval()
    with torch.no_grad():
        after = again(input_ids=ids)
    assert torch.allclose(before.start_logits, after.start_logits) and before.start_logits.shape == (1, 5)
    loss = again(input_ids=ids, start_positions=torch.tensor([3]), end_positions=torch.tensor([3])).loss
    assert torch.isfinite(loss)


def test_contradictory_encoder_options_are_refused():
    from workbench.config import load_stage_config
    from workbench.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "task=tagging", "crf=true",
                                             "layer_mix=true", "pooling=mean"])
    text = str(e.value)
    assert "crf with layer_mix or adapters is not offered" in text and "task=tagging scores every token" in text
    with pytest.raises(ConfigError) as e:
        load_stage_config("finetune", None, ["model=m", "train=t", "valid=v", "adapter.kind=houlsby", "lora.r=8",
                                             "pooling=first_last_avg", "layer_mix=true", "freeze_encoder=true",
                                             "freeze_layers=2"])
    text = str(e.value)
    for expected in ("pick one parameter-efficient method", "first_last_avg and layer_mix both choose the layers",
                     "freeze_encoder and freeze_layers are both set"):
        assert expected in text, text
