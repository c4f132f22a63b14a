"""How good are the entity spans that entity masking masks? Each entity source against
MSRA NER gold (PER/LOC/ORG) on the MSRA test split, exact character-span match.

    .venv/bin/python benchmarks/bench_entity_sources.py                 # full test split (~10 s + tagger ~3-4 min)
    .venv/bin/python benchmarks/bench_entity_sources.py --skip-tagger   # lexical sources only
    .venv/bin/python benchmarks/bench_entity_sources.py --sample 1000 --seed 0

Sources (all through the workbench's own `Segmenter.cut_batch`, the segment stage's hot
path: words per text, word lengths in characters, entity type ids → character spans):
  jieba-dict          the segment stage's default: jieba dict.txt POS → type (`entity_pos`)
  jieba-posseg        `posseg: true` (jieba.posseg HMM tagging per sentence)
  thuocl              THUOCL typed lexicons as user lexicons with entity_type, no dict POS
                      (diming → LOC, lishimingren → PER; the other 9 files are not PER/LOC/ORG)
  jieba-dict+thuocl   both (the lexicons win where they disagree, as in the stage)
  tagger              optional: a tiny BERT (random init, Google vocab) fine-tuned with
                      `workbench finetune task=tagging` on a subset of MSRA train, ≤ ~10 min CPU

Typed: span and type must match (MISC/nz predictions never match: MSRA has no MISC; they
are left out of typed precision and reported separately). Untyped: span boundaries only,
every span the stage would mask (MISC included), since entity masking only needs spans.
Results: benchmarks/results/entity_sources.json / .md. The MSRA text is research data: it is
read from ../shared/data and nothing of it is written to the repo (scratch in benchmarks/work/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work" / "entity_sources"
TYPES = ("PER", "LOC", "ORG")
THUOCL_ENTITY_FILES = {"THUOCL_diming.txt": "LOC", "THUOCL_lishimingren.txt": "PER"}


def read_conll(path: Path) -> list[tuple[str, list[str]]]:
    """Sentences as (text, BIO tags), one char + space + tag per line, blank line between."""
    sents, chars, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                if chars:
                    sents.append(("".join(chars), tags))
                chars, tags = [], []
                continue
            parts = line.split()
            if len(parts) == 1:  # a space character as the token
                ch, tag = " ", parts[0]
            else:
                ch, tag = parts[0], parts[-1]
            chars.append(ch)
            tags.append(tag)
    if chars:
        sents.append(("".join(chars), tags))
    return sents


def bio_spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """(start, end, type) char spans; an I-X that does not continue an X span starts one
    (the shared copy has sentences cut inside entities: same repair as configs/msra_ner.yaml)."""
    spans, start, typ = set(), None, None
    for i, t in enumerate(list(tags) + ["O"]):
        kind, _, ty = t.partition("-")
        if start is not None and not (kind == "I" and ty == typ):
            spans.add((start, i, typ))
            start = typ = None
        if kind == "B" or (kind == "I" and start is None):
            start, typ = i, ty
    return spans


def segmenter_spans(seg, texts: list[str], batch: int = 512) -> list[set[tuple[int, int, str]]]:
    """Entity spans in characters from Segmenter.cut_batch, the segment stage's code path."""
    type_index = {t: i for i, t in enumerate(seg.entity_types)}  # as the stage builds it
    names = seg.entity_types
    out = []
    for b in range(0, len(texts), batch):
        chunk = texts[b:b + batch]
        n_words, word_len, ids = seg.cut_batch(chunk, type_index)
        ends = np.cumsum(word_len)
        first = 0
        for t, n in zip(chunk, n_words.tolist()):
            base = int(ends[first - 1]) if first else 0
            spans = set()
            for k in range(first, first + n):
                if ids[k] >= 0:
                    spans.add((int(ends[k - 1] if k else 0) - base, int(ends[k]) - base, names[ids[k]]))
            assert (int(ends[first + n - 1]) if n else base) - base == len(t), "word lengths do not add up to the text"
            out.append(spans)
            first += n
    return out


def score(gold: list[set], pred: list[set]) -> dict:
    def prf(tp, n_pred, n_gold):
        p = tp / n_pred if n_pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
                "tp": tp, "pred": n_pred, "gold": n_gold}

    res = {"typed": {}, "untyped": {}}
    tp_t, np_t, ng = Counter(), Counter(), Counter()
    tp_u = np_u = np_u3 = tp_u3 = 0
    tp_u_by, np_u_by = Counter(), Counter()
    pred_types = Counter()
    for g, p in zip(gold, pred):
        g_untyped = {(s, e) for s, e, _ in g}
        p_untyped = {(s, e) for s, e, _ in p}
        tp_u += len(g_untyped & p_untyped)
        np_u += len(p_untyped)
        p3 = {(s, e, t) for s, e, t in p if t in TYPES}
        p3u = {(s, e) for s, e, _ in p3}
        tp_u3 += len(g_untyped & p3u)
        np_u3 += len(p3u)
        for s, e, t in p:
            pred_types[t] += 1
        for t in TYPES:
            gt = {x for x in g if x[2] == t}
            pt = {x for x in p3 if x[2] == t}
            ng[t] += len(gt)
            np_t[t] += len(pt)
            tp_t[t] += len(gt & pt)
            # untyped per gold type: recall of type-t gold spans by any predicted span;
            # precision of type-t predicted spans against any gold span
            tp_u_by[t] += len({(s, e) for s, e, _ in gt} & p_untyped)
            np_u_by[t] += len({(s, e) for s, e, _ in pt})
    n_gold = sum(ng.values())
    res["typed"]["overall"] = prf(sum(tp_t.values()), sum(np_t.values()), n_gold)
    for t in TYPES:
        res["typed"][t] = prf(tp_t[t], np_t[t], ng[t])
    res["untyped"]["overall"] = prf(tp_u, np_u, n_gold)
    res["untyped"]["overall_no_misc"] = prf(tp_u3, np_u3, n_gold)
    for t in TYPES:
        r = tp_u_by[t] / ng[t] if ng[t] else 0.0
        res["untyped"][t] = {"recall": round(r, 4), "tp": tp_u_by[t], "gold": ng[t]}
    res["predicted_spans_by_type"] = dict(pred_types)
    res["predicted_spans"] = sum(pred_types.values())
    res["gold_spans"] = n_gold
    return res


def run_tagger(train: list[tuple[str, list[str]]], texts: list[str], args, log: Path) -> tuple[list[set], dict]:
    """Tiny BERT from random init (Google vocab), `workbench finetune task=tagging` on a
    seeded subset of MSRA train, then `workbench predict` on the test texts."""
    vocab = SHARED / "vocab" / "bert_base_chinese_vocab.txt"
    rng = random.Random(args.seed)
    sub = rng.sample(train, min(args.tagger_train, len(train)))
    WORK.mkdir(parents=True, exist_ok=True)
    train_file = WORK / "msra_train_subset.txt"
    with open(train_file, "w", encoding="utf-8") as f:
        for text, tags in sub:
            f.write("".join(f"{c} {t}\n" for c, t in zip(text, tags) if not c.isspace()) + "\n")
    valid_file = WORK / "msra_valid_subset.txt"  # 200 other train sentences, not test
    rest = [s for s in train if s not in sub][:200] if len(train) < 5000 else rng.sample(train, 200)
    with open(valid_file, "w", encoding="utf-8") as f:
        for text, tags in rest:
            f.write("".join(f"{c} {t}\n" for c, t in zip(text, tags) if not c.isspace()) + "\n")

    def wb(*a):
        t = time.time()
        cmd = [sys.executable, "-m", "workbench", *map(str, a)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"$ workbench {' '.join(map(str, a))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n"
                    f"[{time.time() - t:.0f} s, exit {proc.returncode}]\n\n")
        if proc.returncode:
            raise RuntimeError(f"workbench {' '.join(map(str, a))} failed:\n{proc.stderr[-2000:]}")
        return proc.stdout

    t0 = time.time()
    base = WORK / "base-model"
    wb("init-model", f"tokenizer={vocab}", f"output={base}", f"layers={args.tagger_layers}",
       f"hidden={args.tagger_hidden}", "heads=4", "max_position=256", f"seed={args.seed}")
    ft = WORK / "finetune-tagging"
    wb("finetune", "task=tagging", f"model={base}", f"train={train_file}", f"valid={valid_file}",
       "data.format=conll", "data.repair=true", f"output={ft}", f"max_steps={args.tagger_steps}",
       "batch_size=32", "lr=1e-3", "max_length=128", "scheme=bio", f"eval_steps={args.tagger_steps}",
       f"seed={args.seed}")
    t_train = time.time() - t0
    inp = WORK / "test_texts.txt"
    inp.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    outp = WORK / "pred.jsonl"
    t1 = time.time()
    wb("predict", f"model={ft}", f"input={inp}", f"output={outp}", "format=txt", "batch_size=64")
    t_pred = time.time() - t1
    pred = []
    with open(outp, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            pred.append({(e["start"], e["end"], e["type"]) for e in row["entities"]})
    assert len(pred) == len(texts), (len(pred), len(texts))
    budget = {"train_sentences": len(sub), "steps": args.tagger_steps, "batch_size": 32, "lr": 1e-3,
              "max_length": 128, "layers": args.tagger_layers, "hidden": args.tagger_hidden, "init": "random",
              "vocab": "bert-base-chinese (Google)", "train_wall_s": round(t_train, 1), "predict_wall_s": round(t_pred, 1)}
    return pred, budget, t_pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=0, help="score a seeded sample of N test sentences (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-tagger", action="store_true", help="skip the fine-tuned tagger (source 4)")
    ap.add_argument("--tagger-steps", type=int, default=1500)
    ap.add_argument("--tagger-train", type=int, default=20000, help="MSRA train sentences for the tagger")
    ap.add_argument("--tagger-layers", type=int, default=2)
    ap.add_argument("--tagger-hidden", type=int, default=128)
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"needs {SHARED} (MSRA NER and THUOCL); not found")

    import jieba

    from workbench.config import LexiconConfig, SegmentConfig
    from workbench.segment.segmenter import Segmenter

    test = read_conll(SHARED / "msra_ner" / "msra_test.txt")
    n_test_all = len(test)
    if args.sample and args.sample < len(test):
        test = random.Random(args.seed).sample(test, args.sample)
    texts = [t for t, _ in test]
    gold = [bio_spans(tags) for _, tags in test]

    defaults = SegmentConfig()
    entity_pos = dict(defaults.entity_pos)
    thuocl_dir = SHARED / "lexicons" / "thuocl"
    present = sorted(p.name for p in thuocl_dir.glob("THUOCL_*.txt"))
    lexicons = [LexiconConfig(path=str(thuocl_dir / f), entity_type=t, on_error="skip")
                for f, t in THUOCL_ENTITY_FILES.items() if f in present]
    sources = {
        "jieba-dict": dict(lexicons=[], entity_pos=entity_pos, posseg=False),
        "jieba-posseg": dict(lexicons=[], entity_pos=entity_pos, posseg=True),
        "thuocl": dict(lexicons=lexicons, entity_pos={}, posseg=False),
        "jieba-dict+thuocl": dict(lexicons=lexicons, entity_pos=entity_pos, posseg=False),
    }
    results, lex_stats = {}, None
    for name, kw in sources.items():
        seg = Segmenter(defaults.backend, kw["lexicons"], kw["entity_pos"], kw["posseg"])
        segmenter_spans(seg, texts[:50])  # build the backend (dictionary load) outside the timing
        t = time.perf_counter()
        pred = segmenter_spans(seg, texts)
        dt = time.perf_counter() - t
        results[name] = score(gold, pred)
        results[name]["seconds_per_1k_sentences"] = round(dt / len(texts) * 1000, 3)
        results[name]["entity_words_in_table"] = len(seg.entities)
        if kw["lexicons"]:
            lex_stats = seg.lexicon_stats
        print(f"{name}: {dt:.1f} s", flush=True)

    tagger_budget, tagger_note = None, "skipped (--skip-tagger)"
    if not args.skip_tagger:
        WORK.mkdir(parents=True, exist_ok=True)
        log = WORK / "commands.log"
        train = read_conll(SHARED / "msra_ner" / "msra_train.txt")
        try:
            pred, tagger_budget, t_pred = run_tagger(train, texts, args, log)
            results["tagger"] = score(gold, pred)
            results["tagger"]["seconds_per_1k_sentences"] = round(t_pred / len(texts) * 1000, 3)
            results["tagger"]["note"] = "predict wall time incl. process start and model load"
            tagger_note = "ran"
        except Exception as e:  # report, keep the lexical results
            tagger_note = f"failed: {str(e)[-500:]}"
            print(tagger_note, file=sys.stderr)

    # ---- table
    hdr = ("| source | untyped P | untyped R | untyped F1 | typed P | typed R | typed F1 | PER F1 | LOC F1 | ORG F1 "
           "| pred spans | gold spans | s / 1k sent |")
    rows = [hdr, "|" + "---|" * 13]
    for name, r in results.items():
        u, ty = r["untyped"]["overall"], r["typed"]["overall"]
        rows.append(f"| {name} | {u['precision']:.3f} | {u['recall']:.3f} | {u['f1']:.3f} | {ty['precision']:.3f} | "
                    f"{ty['recall']:.3f} | {ty['f1']:.3f} | {r['typed']['PER']['f1']:.3f} | {r['typed']['LOC']['f1']:.3f} | "
                    f"{r['typed']['ORG']['f1']:.3f} | {r['predicted_spans']} | {r['gold_spans']} | "
                    f"{r['seconds_per_1k_sentences']:.2f} |")
    per_type = ["| source | type | typed P | typed R | typed F1 | untyped R (gold of type found as a span) | pred | gold |",
                "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for t in TYPES:
            ty = r["typed"][t]
            per_type.append(f"| {name} | {t} | {ty['precision']:.3f} | {ty['recall']:.3f} | {ty['f1']:.3f} | "
                            f"{r['untyped'][t]['recall']:.3f} | {ty['pred']} | {ty['gold']} |")
    best_u = max(results, key=lambda k: results[k]["untyped"]["overall"]["f1"])
    best_t = max(results, key=lambda k: results[k]["typed"]["overall"]["f1"])
    table = "\n".join(rows)
    print(table)
    print("\n".join(per_type))
    print(f"best by untyped F1: {best_u}; best by typed F1: {best_t}")

    data = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": {"test_file": "msra_ner/msra_test.txt", "test_sentences_total": n_test_all,
                 "test_sentences_scored": len(texts), "sample": args.sample or None, "seed": args.seed,
                 "test_chars_scored": sum(map(len, texts)), "gold_spans": results["jieba-dict"]["gold_spans"],
                 "gold_by_type": {t: results["jieba-dict"]["typed"][t]["gold"] for t in TYPES}},
        "match": "exact character span; typed = span + type; untyped = span only (all predicted spans, MISC "
                 "included); typed precision counts PER/LOC/ORG predictions only",
        "segmenter": {"backend": defaults.backend, "entity_pos": entity_pos, "code_path": "Segmenter.cut_batch"},
        "thuocl": {"files_present": present, "mapped": THUOCL_ENTITY_FILES,
                   "not_mapped": [f for f in present if f not in THUOCL_ENTITY_FILES], "lexicon_stats": lex_stats},
        "tagger": {"status": tagger_note, "budget": tagger_budget},
        "best": {"untyped_f1": best_u, "typed_f1": best_t},
        "results": results,
        "versions": {"python": platform.python_version(), "jieba": jieba.__version__, "numpy": np.__version__,
                     "platform": platform.platform(), "nproc": os.cpu_count()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "entity_sources.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    j, p = results["jieba-dict"], results["jieba-posseg"]
    md = [
        "# Entity sources for entity masking vs MSRA NER gold",
        "",
        f"`{data['command']}` on {data['date'][:10]}: {len(texts)} of {n_test_all} MSRA test sentences, "
        f"{data['data']['gold_spans']} gold spans (PER/LOC/ORG), exact character-span match. "
        "Untyped: span only, every span the segment stage would mask (MISC/nz included); typed: span + type "
        "(PER/LOC/ORG predictions only). s / 1k sent: segmenting + span lookup time (tagger: predict CLI).",
        "",
        table,
        "",
        "\n".join(per_type),
        "",
        f"THUOCL mapped: {', '.join(f'{f} → {t}' for f, t in THUOCL_ENTITY_FILES.items())}; not entity types, not "
        f"used: {', '.join(data['thuocl']['not_mapped'])}. Tagger: {tagger_note}"
        + (f" ({tagger_budget['layers']} x {tagger_budget['hidden']} random init, {tagger_budget['train_sentences']} "
           f"train sentences, {tagger_budget['steps']} steps x 32, {tagger_budget['train_wall_s']:.0f} s CPU)."
           if tagger_budget else "."),
        "",
        "Reading:",
        f"- Best by untyped span F1 (what entity masking needs): **{best_u}** "
        f"({results[best_u]['untyped']['overall']['f1']:.3f}); best by typed F1: **{best_t}** "
        f"({results[best_t]['typed']['overall']['f1']:.3f}).",
        f"- The default dictionary lookup finds {j['untyped']['overall']['recall']:.0%} of the gold spans at "
        f"{j['untyped']['overall']['precision']:.0%} span precision; posseg finds {p['untyped']['overall']['recall']:.0%} "
        f"at {p['untyped']['overall']['precision']:.0%}, {p['seconds_per_1k_sentences'] / max(j['seconds_per_1k_sentences'], 1e-9):.1f}x slower.",
        f"- ORG is the weak type for every lexical source (jieba-dict untyped ORG recall "
        f"{j['untyped']['ORG']['recall']:.0%}; THUOCL has no organisation list).",
        *([f"- The tagger ({tagger_budget['layers']} x {tagger_budget['hidden']} BERT from random init, "
           f"{tagger_budget['steps']} steps x 32 on {tagger_budget['train_sentences']} train sentences, "
           f"{tagger_budget['train_wall_s']:.0f} s CPU) reaches untyped F1 {results['tagger']['untyped']['overall']['f1']:.3f}"
           f" / typed {results['tagger']['typed']['overall']['f1']:.3f}: "
           + ("below" if results['tagger']['untyped']['overall']['f1'] < j['untyped']['overall']['f1'] else "above")
           + " the dictionary lookup at this budget, without pretraining."] if tagger_budget and "tagger" in results else []),
        "- Caveat: MSRA is 1998 People's Daily news; on Weibo the dictionary's PER/LOC tags are far noisier "
        "(辟谣, 尼玛 as PER), so these figures are an upper bound for social-media text.",
    ]
    (RESULTS / "entity_sources.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS / 'entity_sources.json'} and .md")
    if not args.keep_work and WORK.exists():
        shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
