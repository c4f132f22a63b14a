"""Attention views: the maps of every layer and head of a BERT on a few sentences.

- ``attention_maps``: the model run with eager attention (transformers' SDPA kernels do not
  return attention weights: with them `output_attentions=True` gives nothing) → per
  sentence the tokens and a float array [layers, heads, tokens, tokens] (rows: the token
  attending, columns: the token attended to; each row sums to 1).
- ``render_html``: one self-contained page (no network: inline CSS and JS, data embedded as
  JSON). bertviz (1.4.1) was tried first: it works with transformers 5.25 given eager
  attention, but its head_view/model_view pages load require.js, d3 and jQuery from a CDN
  at view time, so they are blank offline and behind firewalls (and its package pulls in
  boto3 and IPython). The page here draws the same two views with plain JS: bertviz-style
  lines between the token columns for one layer and the chosen heads (hover a token to see
  only its lines), and a clickable layer x head grid of heatmaps.
- ``plot_grid``: the layer x head grid as a PNG (matplotlib).
- ``screenshot``: the page in headless Chromium (the system package) as a PNG, and
  ``image_stats`` to tell a rendered page from a blank one.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from workbench.errors import StageInputError

# Head colours (matplotlib's tab10): the lines of head h are drawn in HEAD_COLOURS[h % 10].
HEAD_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "AR PL UMing CN", "Droid Sans Fallback", "DejaVu Sans"]  # the last: no CJK glyphs, the fallback


def load_encoder(model_dir: str | Path, *, needed_by: str = "attention"):
    """(BERT encoder with eager attention, tokenizer) of a pretrain / finetune / export /
    save_pretrained directory. Task models (task.json) load through the workbench's own
    loader (CRF exports included); anything else through AutoModel."""
    from transformers import AutoModel

    from workbench.manifest import verify_model_dir
    from workbench.vocab.tokenizer import load_tokenizer

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise StageInputError(f"{needed_by}: {path} has no config.json, so it is not a model directory\n"
                              "  fix: pass model= a pretrain, finetune or export output (or a save_pretrained directory)")
    verify_model_dir(path, needed_by=needed_by)
    if (path / "task.json").is_file():
        from workbench.tasks.heads import load_task_model

        model, _crf, tok, _spec = load_task_model(path, needed_by=needed_by)
        encoder = model.base_model
    else:
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a masked LM has no pooler: its new one is never used here
        try:
            encoder = AutoModel.from_pretrained(str(path), attn_implementation="eager")
        finally:
            hf_logging.set_verbosity(level)
        tok = load_tokenizer(str(path), needed_by=needed_by)
    encoder.set_attn_implementation("eager")
    return encoder.float().eval(), tok


def attention_maps(encoder, tok, sentences: Sequence[str], *, max_length: int) -> list[dict[str, Any]]:
    """[{"text", "tokens", "attention": float32 [L, H, T, T], "truncated": bool}] per sentence."""
    import torch

    out = []
    with torch.inference_mode():
        for text in sentences:
            full = tok(text, add_special_tokens=True)["input_ids"]
            enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
            enc.pop("offset_mapping", None)
            res = encoder(**enc, output_attentions=True, return_dict=True)
            if not res.attentions:
                raise RuntimeError("the model returned no attention weights (eager attention is needed)")
            att = torch.stack([a[0] for a in res.attentions]).float().numpy()  # [L, H, T, T]
            out.append({"text": text, "tokens": tok.convert_ids_to_tokens(enc["input_ids"][0].tolist()),
                        "attention": att, "truncated": len(full) > max_length})
    return out


def _json_for_script(value: Any) -> str:
    """JSON safe inside <script>: no `</script>`, `<!--` or line separators can end or break it."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(items: Sequence[dict[str, Any]], *, title: str, model_name: str) -> str:
    """The self-contained page (module doc). Text is inserted with textContent only."""
    data = {"model": model_name, "colours": HEAD_COLOURS,
            "sentences": [{"text": it["text"], "tokens": it["tokens"], "truncated": it["truncated"],
                           # 3 decimals: enough for the eye, a third of the size
                           "attention": np.round(it["attention"], 3).tolist()} for it in items]}
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", _json_for_script(data))


def plot_grid(tokens: Sequence[str], att: np.ndarray, path: str | Path, *, title: str) -> None:
    """PNG: rows = layers, columns = heads, each cell the [T, T] map (row: attending token)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    layers, heads, n, _ = att.shape
    cell = max(1.6, min(3.2, 0.12 * n + 0.8))
    fonts = _cjk_fonts()
    with plt.rc_context({"font.family": "sans-serif", "font.sans-serif": fonts + ["DejaVu Sans"],
                         "axes.unicode_minus": False}), warnings.catch_warnings():
        # No CJK font installed (a bare CI image): characters show as boxes, said once in the log.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig, axes = plt.subplots(layers, heads, figsize=(cell * heads + 1.2, cell * layers + 1.0), squeeze=False)
        labels = n <= 48
        for layer in range(layers):
            for head in range(heads):
                ax = axes[layer][head]
                ax.imshow(att[layer, head], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_xticks(range(n) if labels and layer == layers - 1 else [])
                ax.set_yticks(range(n) if labels and head == 0 else [])
                if labels and layer == layers - 1:
                    ax.set_xticklabels(tokens, rotation=90, fontsize=6)
                if labels and head == 0:
                    ax.set_yticklabels(tokens, fontsize=6)
                if layer == 0:
                    ax.set_title(f"head {head}", fontsize=8)
                if head == 0:
                    ax.set_ylabel(f"layer {layer}", fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


_FONTS: list[str] | None = None


def _cjk_fonts() -> list[str]:
    """Names of the CJK fonts matplotlib can use; fonts installed after matplotlib built its
    font cache (e.g. `apt-get install fonts-noto-cjk`) are added from the system's font dirs."""
    global _FONTS
    if _FONTS is None:
        from matplotlib import font_manager

        known = {f.name for f in font_manager.fontManager.ttflist}
        if not any(n in known for n in CJK_FONTS[:-1]):
            for path in font_manager.findSystemFonts():
                if any(k in Path(path).name.lower() for k in ("cjk", "wqy", "wenquanyi", "droidsansfallback", "uming")):
                    try:
                        font_manager.fontManager.addfont(path)
                    except (OSError, RuntimeError, ValueError):
                        pass
            known = {f.name for f in font_manager.fontManager.ttflist}
        _FONTS = [n for n in CJK_FONTS[:-1] if n in known]
        if not _FONTS:
            import logging

            logging.getLogger("workbench.attention").warning(
                "attention: no CJK font found for the PNG grid (Chinese tokens show as boxes); install one, e.g. "
                "`apt-get install fonts-noto-cjk`")
    return _FONTS


def find_chromium() -> str | None:
    """The headless browser: $CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(page: str | Path, png: str | Path, *, width: int = 1280, height: int = 1000,
               timeout: float = 120.0) -> Path:
    """A PNG of `page` rendered by headless Chromium (network off: the page needs none)."""
    browser = find_chromium()
    if browser is None:
        raise StageInputError("attention: screenshot=true needs headless Chromium, and none was found "
                              "(chromium, chromium-browser, google-chrome, $CHROMIUM)\n"
                              "  fix: `apt-get install chromium` (Debian/Ubuntu), or set screenshot=false")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               "--no-first-run", "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # nothing leaves the machine
               "--virtual-time-budget=5000", f"--window-size={width},{height}", f"--screenshot={png}",
               Path(page).resolve().as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {res.returncode}): {res.stderr[-1500:]}")
    return png


def image_stats(png: str | Path) -> dict[str, float]:
    """How much of an image is drawn: the share of pixels away from the background (the
    most common colour), the share of coloured pixels (saturation > 0.25, i.e. not text
    or grey: the page's heatmaps and lines), and the grey-level standard deviation."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(np.int16)
    flat = img.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    away = (np.abs(flat - background).sum(1) > 30).mean()
    mx, mn = flat.max(1), flat.min(1)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0)
    return {"non_background": float(away), "coloured": float((saturation > 0.25).mean()),
            "grey_std": float(flat.mean(1).std()), "width": img.shape[1], "height": img.shape[0]}


_PAGE = """<!DOCTYPE html>
<html lang="zh"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
body{font-family:"Noto Sans CJK SC","Noto Sans CJK JP","WenQuanYi Zen Hei","PingFang SC","Microsoft YaHei",sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:18px;margin:0 0 6px} .note{color:#666;font-size:12px;margin:4px 0 10px}
#controls{display:flex;flex-wrap:wrap;gap:12px;align-items:center;font-size:13px;margin-bottom:8px}
#heads label{margin-right:6px;padding:1px 5px;border-radius:3px;color:#fff;cursor:pointer}
#main{display:flex;gap:24px;align-items:flex-start}
#lines text{font-size:13px;cursor:default} #grid canvas{border:1px solid #ddd;cursor:pointer;margin:1px}
#grid canvas.sel{border-color:#d62728} #grid .lbl{font-size:11px;color:#555}
</style></head><body>
<h1>__TITLE__</h1>
<div class="note" id="note"></div>
<div id="controls">
 <label>sentence <select id="sent"></select></label>
 <label>layer <select id="layer"></select></label>
 <span id="heads"></span>
</div>
<div id="main"><svg id="lines" width="420" height="200"></svg><div id="grid"></div></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const $ = id => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let S = 0, L = 0, on = [], hover = null;
function el(tag, attrs, parent, ns) {
  const e = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function sentence() { return D.sentences[S]; }
function setup() {
  D.sentences.forEach((s, i) => { const o = el("option", {value: i}, $("sent")); o.textContent = (i + 1) + ". " + s.text.slice(0, 40); });
  $("sent").onchange = () => { S = +$("sent").value; build(); };
  $("layer").onchange = () => { L = +$("layer").value; draw(); };
  build();
}
function build() {
  const s = sentence(), layers = s.attention.length, heads = s.attention[0].length;
  L = Math.min(L, layers - 1);
  $("layer").textContent = "";
  for (let l = 0; l < layers; l++) { const o = el("option", {value: l}, $("layer")); o.textContent = l; }
  $("layer").value = L;
  if (on.length !== heads) on = Array.from({length: heads}, () => true);
  $("heads").textContent = "heads: ";
  on.forEach((v, h) => {
    const lab = el("label", {}, $("heads"));
    lab.style.background = D.colours[h % D.colours.length];
    const cb = el("input", {type: "checkbox"}, lab); cb.checked = v;
    cb.onchange = () => { on[h] = cb.checked; draw(); };
    lab.appendChild(document.createTextNode(" " + h));
  });
  $("note").textContent = D.model + " — " + s.tokens.length + " tokens, " + layers + " layers x " + heads +
    " heads" + (s.truncated ? " (sentence cut at max_length)" : "") +
    ". Left: the attending token; right: the token attended to. Hover a token for its lines only; click a map in the grid to show that layer and head.";
  grid();
  draw();
}
function draw() {
  const s = sentence(), n = s.tokens.length, row = 20, svg = $("lines");
  svg.textContent = "";
  svg.setAttribute("height", n * row + 20);
  const xl = 110, xr = 310;
  const heads = s.attention[L];
  heads.forEach((m, h) => {
    if (!on[h]) return;
    const c = D.colours[h % D.colours.length];
    for (let i = 0; i < n; i++) {
      if (hover !== null && hover !== i) continue;
      for (let j = 0; j < n; j++) {
        const w = m[i][j];
        if (w < 0.02) continue;
        el("line", {x1: xl, y1: 14 + i * row, x2: xr, y2: 14 + j * row, stroke: c, "stroke-width": 1 + 3 * w,
                    "stroke-opacity": Math.min(1, w * 1.5)}, svg, true);
      }
    }
  });
  s.tokens.forEach((t, i) => {
    for (const [x, anchor] of [[xl - 6, "end"], [xr + 6, "start"]]) {
      const e = el("text", {x: x, y: 18 + i * row, "text-anchor": anchor}, svg, true);
      e.textContent = t;
      if (anchor === "end") {
        e.onmouseenter = () => { hover = i; draw(); };
        e.onmouseleave = () => { hover = null; draw(); };
      }
    }
  });
}
function grid() {
  const s = sentence(), n = s.tokens.length, g = $("grid");
  g.textContent = "";
  const px = Math.max(2, Math.min(8, Math.floor(120 / n)));
  s.attention.forEach((heads, l) => {
    const line = el("div", {}, g);
    const lab = el("span", {class: "lbl"}, line); lab.textContent = "layer " + l + " ";
    heads.forEach((m, h) => {
      const cv = el("canvas", {width: n * px, height: n * px, title: "layer " + l + ", head " + h}, line);
      const ctx = cv.getContext("2d");
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
        const w = m[i][j];
        // viridis-like ramp: dark blue (0) → green → yellow (1)
        const r = Math.round(68 + w * (253 - 68)), gg = Math.round(1 + w * (231 - 1)), b = Math.round(84 + w * (37 - 84));
        ctx.fillStyle = "rgb(" + r + "," + gg + "," + b + ")";
        ctx.fillRect(j * px, i * px, px, px);
      }
      cv.onclick = () => { L = l; on = on.map((_, k) => k === h); $("layer").value = l; build(); };
    });
  });
}
setup();
</script></body></html>
"""
