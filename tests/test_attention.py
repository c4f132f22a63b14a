"""attention: HTML + PNG views of a tiny BERT's attention, rendered in headless Chromium.

The maps must be the model's real eager attention (rows sum to 1, equal to a direct
transformers run), the page self-contained and safe for any sentence, and the page must
actually draw: the screenshot of the real page is compared with the same page whose
script does not run, which must count as blank by the same measure.
"""

from __future__ import annotations

import json
import re
import stat

import numpy as np
import pytest

from finetune_fixtures import one_thread, reviews, tiny_model, write_tsv  # noqa: F401  (one_thread: autouse)

SENTENCES = ["这家店的服务很好，菜也好吃。", "质量一般，不会再买了"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("attn")
    rows = reviews(60)
    return tiny_model(d / "base", [t for _, t in rows] + SENTENCES)


@pytest.fixture(scope="module")
def attention_out(model_dir, tmp_path_factory):
    from workbench.cli import main

    out = tmp_path_factory.mktemp("attn-out") / "attention"
    assert main(["attention", f"model={model_dir}", f"sentences=[{','.join(SENTENCES)}]", f"output={out}"]) == 0
    return out


def test_outputs_are_the_models_eager_attention(attention_out, model_dir):
    import torch
    from transformers import BertModel

    from workbench.vocab.tokenizer import load_tokenizer

    tokens = json.loads((attention_out / "tokens.json").read_text(encoding="utf-8"))
    assert [t["text"] for t in tokens] == SENTENCES
    maps = np.load(attention_out / "attention.npz")
    ref = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    tok = load_tokenizer(str(model_dir), needed_by="test")
    for i, (sentence, meta) in enumerate(zip(SENTENCES, tokens), 1):
        att = maps[f"sentence_{i:02d}"]
        n = len(meta["tokens"])
        assert meta["tokens"][0] == "[CLS]" and meta["tokens"][-1] == "[SEP]"
        assert att.shape == (2, 2, n, n)                       # layers x heads x tokens x tokens
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)  # softmax rows
        with torch.no_grad():
            got = ref(**tok(sentence, return_tensors="pt"), output_attentions=True).attentions
        np.testing.assert_allclose(att, torch.stack([a[0] for a in got]).numpy(), atol=1e-6)
        # heads differ (a view of one map repeated would pass the checks above)
        assert np.abs(att[0, 0] - att[0, 1]).max() > 1e-4
    png = attention_out / "attention-01.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert stat.S_IMODE(png.stat().st_mode) == 0o644
    manifest = json.loads((attention_out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "attention" and manifest["counts"]["layers"] == 2 and manifest["counts"]["heads"] == 2


def test_page_is_self_contained_and_embeds_the_maps(attention_out):
    page = (attention_out / "attention.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|@import|url\(|fetch\(|XMLHttpRequest""", page)  # nothing loaded
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    maps = np.load(attention_out / "attention.npz")
    assert [s["text"] for s in data["sentences"]] == SENTENCES
    np.testing.assert_allclose(np.array(data["sentences"][1]["attention"]), maps["sentence_02"], atol=6e-4)


def test_hostile_sentence_stays_text(model_dir, tmp_path):
    from workbench.cli import main

    evil = "好</script><img src=x onerror=alert(1)><!--"
    out = tmp_path / "a"
    assert main(["attention", f"model={model_dir}", f"sentences={evil}", f"output={out}"]) == 0
    page = (out / "attention.html").read_text(encoding="utf-8")
    assert "<img" not in page and page.count("</script>") == 2 and "<!--" not in page
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["sentences"][0]["text"] == evil


def test_task_model_and_truncation(tmp_path):
    """A finetune output (task.json, classification head) is read through its encoder; a
    sentence longer than max_length is cut and flagged."""
    from workbench.cli import main

    rows = reviews(40)
    write_tsv(tmp_path / "train.tsv", rows[:60])
    write_tsv(tmp_path / "valid.tsv", rows[60:80])
    tiny_model(tmp_path / "base", [t for _, t in rows] + SENTENCES)
    assert main(["finetune", f"model={tmp_path / 'base'}", f"train={tmp_path / 'train.tsv'}",
                 f"valid={tmp_path / 'valid.tsv'}", f"output={tmp_path / 'ft'}", "max_steps=2", "batch_size=8",
                 "max_length=32", "logging_steps=1000"]) == 0
    (tmp_path / "s.txt").write_text(SENTENCES[0] * 4 + "\n\n" + SENTENCES[1] + "\n", encoding="utf-8")
    assert main(["attention", f"model={tmp_path / 'ft'}", f"input={tmp_path / 's.txt'}", "max_length=16",
                 f"output={tmp_path / 'a'}"]) == 0
    tokens = json.loads((tmp_path / "a" / "tokens.json").read_text(encoding="utf-8"))
    assert [len(t["tokens"]) for t in tokens] == [16, len(SENTENCES[1]) + 2]
    assert [t["truncated"] for t in tokens] == [True, False]


def test_bad_input_is_a_clear_error(model_dir, tmp_path, cli):
    code, _, err = cli("attention", f"model={model_dir}")
    assert code == 2 and "sentences" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli("attention", f"model={tmp_path / 'empty'}", "sentences=你好", f"output={tmp_path / 'o'}")
    assert code == 2 and "config.json" in err and "fix:" in err
    code, _, err = cli("attention", f"model={model_dir}", "sentences=[一,二,三]", "max_sentences=2",
                       f"output={tmp_path / 'o2'}")
    assert code == 2 and "max_sentences=3" in err
    assert not (tmp_path / "o2").exists()


def test_chromium_renders_a_non_blank_page(attention_out, tmp_path):
    from workbench.report.attention_view import find_chromium, image_stats, screenshot

    if find_chromium() is None:
        pytest.skip("no headless Chromium (apt-get install chromium)")
    shot = screenshot(attention_out / "attention.html", tmp_path / "page.png", width=1000, height=700)
    stats = image_stats(shot)
    # Control: the same page with its script disabled (only the static title and controls).
    page = (attention_out / "attention.html").read_text(encoding="utf-8")
    (tmp_path / "static.html").write_text(page.replace('"use strict";', '"use strict"; throw 0;'), encoding="utf-8")
    control = image_stats(screenshot(tmp_path / "static.html", tmp_path / "static.png", width=1000, height=700))
    assert control["coloured"] < 0.002, control            # the measure calls a page without drawings blank
    assert stats["coloured"] > 0.02 and stats["non_background"] > 0.05, stats
    assert stats["grey_std"] > 2 * control["grey_std"], (stats, control)
