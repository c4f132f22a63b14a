"""experiment: does continued pretraining help my task, and which masking? One table, with intervals.

    workbench experiment --config configs/experiment/reviews.yaml
    workbench experiment --config configs/experiment/reviews.yaml seeds=[0,1,2,3,4]   # more seeds, same cells reused

A grid of *arms* x *seeds*, run through the ordinary stages with derived configs:

  none            fine-tune the base as it is
  general_more    the same pretraining budget on general text (the same-budget control)
  token | whole_word | entity_ngram | span | mixture
                  the same budget on the domain corpus with that masking
  {name, corpus, masking}
                  the same budget on another named corpus (e.g. domain + the task's own
                  unlabelled train text: task-adaptive pretraining)

Readable top to bottom:

  1. plan: every cell is a stage output under `<run>/`: corpora/<name>/{prepared,segmented},
     arms/<arm>/p<seed>/pretrain, finetune/<arm>[-p<p>]-s<seed>, mlm/<model>-<corpus>,
     forgetting/<arm>[-p<p>]-s<seed>. A cell whose manifest exists and whose fingerprint
     (its config + the manifests/sizes of what it reads) is the one recorded in
     `<run>/cells.json` is reused, so an interrupted experiment continues where it stopped
     and shared steps (prepare, segment, the `none` fine-tunes) run once.
  2. corpora: prepare + segment each named corpus with the base's vocabulary.
  3. held-out MLM loss of the base on the domain and general valid blocks (fixed masks).
  4. `none`: the base fine-tuned once per seed.
  5. per pretraining arm and pretraining seed: pretrain (the budget is identical across
     arms), held-out MLM loss after, probes at its checkpoints (frozen encoder + logistic
     regression, beside the eval loss), the fine-tunes, the forgetting fine-tunes.
  6. analysis (`workbench.report.paired`): per arm mean ± std of the task metric on test
     (the model selected on valid); paired differences against `none` (paired by
     fine-tune seed) and against `general_more` (by pretraining and fine-tune seed) with
     t intervals; a verdict per arm with the smallest effect the run could detect.
     Writes results.json, results.md and results.png atomically to `<run>/experiment/`.

A progress table is printed (and written to `<run>/progress.md`) after every cell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import COMMANDS, ExperimentArm, ExperimentConfig, FinetuneConfig, check_section
from workbench.errors import ConfigError
from workbench.manifest import (MANIFEST, atomic_output_dir, config_inputs, hold_lock, output_problems, owns_output,
                                read_manifest, sha256_file, verify_model_dir, write_manifest)
from workbench.report.escape import md_cell, md_text
from workbench.report.paired import mean_std, paired_interval, verdict

log = logging.getLogger("workbench.experiment")

MASKING_ARMS = ("token", "whole_word", "entity_ngram", "span", "mixture")


# --------------------------------------------------------------------------- 1. plan
@dataclass
class Arm:
    name: str
    corpus: str | None            # None: no pretraining (the `none` arm)
    masking: dict[str, Any] = field(default_factory=dict)
    base: str = ""                # the model it starts from
    replay: tuple[str, float] | None = None  # (corpus mixed in, its share of the blocks)
    sop: bool = False             # + sentence-order prediction (pretrain objective=mlm+sop on pair blocks)

    @property
    def pretrains(self) -> bool:
        return self.corpus is not None


def resolve_arms(cfg: ExperimentConfig) -> list[Arm]:
    shared_masking = dict(cfg.pretrain.get("masking") or {})
    arms = []
    for spec in cfg.arms:
        if isinstance(spec, str) and spec.endswith("+sop"):
            arm = resolve_arms(cfg.model_copy(update={"arms": [spec.removesuffix("+sop")]}))[0]
            arms.append(Arm(spec, arm.corpus, arm.masking, arm.base, arm.replay, sop=True))
            continue
        if isinstance(spec, ExperimentArm):
            masking = spec.masking.model_dump(mode="json") if spec.masking else shared_masking
            arms.append(Arm(spec.name, spec.corpus, masking if spec.corpus else {}, spec.base or cfg.base))
        elif spec == "none":
            arms.append(Arm("none", None, {}, cfg.base))
        elif spec == "general_more":
            arms.append(Arm("general_more", "general", shared_masking, cfg.base))
        elif spec == "replay":
            arms.append(Arm("replay", "domain", shared_masking, cfg.base, (cfg.replay.corpus, cfg.replay.weight)))
        else:  # a masking strategy on the domain corpus
            arms.append(Arm(spec, "domain", {**shared_masking, "strategy": spec}, cfg.base))
    return arms


def derive(command: str, section: dict[str, Any], where: str, **fixed: Any):
    """The validated config of `command` from an experiment section plus the per-cell keys."""
    cfg, problems = check_section(command, {**section, **fixed}, f"experiment.{where}.")
    if problems:
        raise ConfigError(problems)
    return cfg


class FileHashes:
    """sha256 of the raw files cells read, cached in `<run>/input-hashes.json` by path, size
    and mtime: a file copied, re-extracted or touched with the same bytes (a data folder
    re-created every morning, a corpus moved to another disk) keeps its cells; a changed
    byte re-runs them. Only a file whose size or mtime moved is read again."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.known: dict[str, list] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            self.known = {}  # a damaged cache costs one re-hash, never a wrong answer
        self.dirty = False

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.known.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = sha256_file(path)
        self.known[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.known, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
        self.dirty = False


def fingerprint(cfg, hashes: FileHashes) -> str:
    """What a cell's output depends on: its config (less the keys that only decide how it
    runs, e.g. worker counts), and for every path it reads the
    manifest of a stage output (sha256), or the content (sha256) of a file or of every file
    in a folder of corpus files."""
    parts = [json.dumps(cfg.model_dump(mode="json", exclude=set(cfg.execution_keys)), sort_keys=True,
                        ensure_ascii=False)]
    for p in sorted({str(p) for p in config_inputs(cfg)}):
        path = Path(p)
        if (path / MANIFEST).is_file():
            parts.append(f"{p}:manifest:{sha256_file(path / MANIFEST)}")
        elif path.is_file():
            parts.append(f"{p}:file:{hashes.sha256(path)}")
        elif path.is_dir():
            files = sorted(Path(root) / f for root, _, names in os.walk(path) for f in names)
            parts.append(f"{p}:dir:" + ",".join(f"{f.relative_to(path)}={hashes.sha256(f)}" for f in files))
        else:
            parts.append(f"{p}:missing")
    hashes.save()
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


class Ledger:
    """`<run>/cells.json`: output dir → fingerprint of the config that made it (rewritten
    atomically after every cell)."""

    def __init__(self, path: Path):
        self.path = path
        self.cells: dict[str, str] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def done(self, out: Path, fp: str, stage: str) -> bool:
        if self.cells.get(str(out)) != fp:
            return False
        m = read_manifest(out)
        return bool(m) and m.get("stage") == stage and not output_problems(out, m, full=False)

    def record(self, out: Path, fp: str) -> None:
        self.cells[str(out)] = fp
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.cells, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass
class Runner:
    cfg: ExperimentConfig
    ledger: Ledger
    hashes: FileHashes
    ran: int = 0
    reused: int = 0
    walls: dict[str, float] = field(default_factory=dict)

    def cell(self, command: str, cfg, label: str) -> dict[str, Any]:
        """Run one stage cell unless an identical one is already there; its manifest."""
        from workbench.stages import get_runner

        out = cfg.output_path()
        fp = fingerprint(cfg, self.hashes)
        if self.ledger.done(out, fp, command):
            self.reused += 1
            print(f"experiment: [{label}] done before, reused ({out})", flush=True)
        else:
            print(f"experiment: [{label}] {command} → {out}", flush=True)
            get_runner(command)(cfg)
            self.ledger.record(out, fingerprint(cfg, self.hashes))
            self.ran += 1
        manifest = read_manifest(out) or {}
        self.walls[label] = float(manifest.get("wall_time_s") or 0.0)
        return manifest


# --------------------------------------------------------------------------- the stage
@owns_output("experiment")
def run(cfg: ExperimentConfig) -> dict[str, Any]:
    # One experiment at a time per run directory: configs sharing a run share its cells and
    # its ledger, so a second one waits for nothing and fails at once, naming the first.
    with hold_lock(Path(cfg.run) / "cells.json", "experiment"):
        return _run(cfg)


def _run(cfg: ExperimentConfig) -> dict[str, Any]:
    started = time.time()
    run_dir = Path(cfg.run)
    run_dir.mkdir(parents=True, exist_ok=True)
    arms = resolve_arms(cfg)
    bases = list(dict.fromkeys(a.base for a in arms))  # each distinct starting model, in arm order
    for b in bases:
        verify_model_dir(b, needed_by="experiment")
    runner = Runner(cfg, Ledger(run_dir / "cells.json"), FileHashes(run_dir / "input-hashes.json"))
    ft_base = FinetuneConfig.model_validate({**cfg.finetune, "model": cfg.base})
    main = ft_base.main_metric()
    budget = _budget(cfg)
    print(f"experiment: {len(arms)} arms ({', '.join(a.name for a in arms)}) x fine-tune seeds {cfg.seeds}"
          f" x pretraining seeds {cfg.pretrain_seeds}; base {cfg.base}; task {ft_base.task} ({main} on test)\n"
          f"  pretraining budget per arm: {budget['max_steps']:,} steps x {budget['batch_size']} x "
          f"{budget['max_seq_length']} tokens = {budget['tokens']:,} token slots", flush=True)
    results: dict[str, Any] = {"arms": {}, "warnings": []}
    table = Progress(run_dir / "progress.md", arms, cfg, main)

    # 2. Corpora: prepare each one an arm or the MLM check needs once, and segment it once per
    # tokenizer (per distinct base model) that reads it.
    held_out = {"domain", "general"} & set(cfg.corpora)
    needed = sorted({a.corpus for a in arms if a.pretrains} | {a.replay[0] for a in arms if a.replay} | held_out)
    segmented: dict[str, dict[str, Path]] = {b: {} for b in bases}   # base → corpus → segment output
    corpus_info: dict[str, Any] = {}
    for name in needed:
        base_dir = run_dir / "corpora" / name
        prep = derive("prepare", cfg.corpora[name], f"corpora.{name}", seed=cfg.seed, output=str(base_dir / "prepared"))
        pm = runner.cell("prepare", prep, f"prepare {name}")
        corpus_info[name] = {"input": cfg.corpora[name].get("input"), "documents": (pm.get("counts") or {}).get("splits"),
                             "rejected": (pm.get("counts") or {}).get("rejected_by_reason")}
        for b in bases:
            if name not in held_out and not any((a.corpus == name or (a.replay and a.replay[0] == name))
                                                and a.base == b for a in arms):
                continue
            out = base_dir / ("segmented" if b == cfg.base else f"segmented-{hashlib.sha256(b.encode()).hexdigest()[:10]}")
            seg = derive("segment", cfg.segment, "segment", model=b, input=str(base_dir / "prepared"),
                         seed=cfg.seed, output=str(out))
            sm = runner.cell("segment", seg, f"segment {name}" + ("" if b == cfg.base else f" for {b}"))
            segmented[b][name] = out
            corpus_info[name].setdefault("blocks", (sm.get("counts") or {}).get("blocks"))
            corpus_info[name].setdefault("tokens", (sm.get("counts") or {}).get("tokens"))
            if any(a.sop and a.corpus == name and a.base == b for a in arms):  # pair blocks for +sop arms
                seg_sop = derive("segment", {**cfg.segment, "pairs": "sop"}, "segment", model=b, seed=cfg.seed,
                                 input=str(base_dir / "prepared"), output=str(out.with_name(out.name + "-sop")))
                runner.cell("segment", seg_sop, f"segment {name} (sentence pairs)")
                segmented[b][f"{name}+sop"] = out.with_name(out.name + "-sop")
    results["corpora"] = corpus_info

    # 3. Held-out MLM loss of each starting model (the "before").
    base_key = {b: "base" if b == cfg.base else f"base@{next(a.name for a in arms if a.base == b)}" for b in bases}
    mlm: dict[str, dict[str, Any]] = {base_key[b]: _score(runner, cfg, b, base_key[b], segmented[b]) for b in bases}

    # 4 + 5. Models: the base for `none`, one pretrain output per pretraining arm and seed.
    cells: dict[str, list[dict[str, Any]]] = {}
    forgetting: dict[str, list[dict[str, Any]]] = {}
    probes: dict[str, Any] = {}
    pretrain_info: dict[str, Any] = {}
    for arm in arms:
        for p in (cfg.pretrain_seeds if arm.pretrains else [None]):
            key = arm.name if p is None else f"{arm.name}-p{p}"
            if arm.pretrains:
                model, info = _pretrain(runner, cfg, arm, p, segmented[arm.base], budget, results["warnings"])
                pretrain_info[key] = info
                mlm[key] = _score(runner, cfg, model, key, segmented[arm.base])
                if cfg.probe.every:
                    probes[key] = _probes(cfg, arm, p, model, info)
            else:
                model = arm.base
            for s in cfg.seeds:
                ft = derive("finetune", cfg.finetune, "finetune", model=model, seed=s, seeds=[],
                            output=str(run_dir / "finetune" / f"{key}-s{s}"))
                m = runner.cell("finetune", ft, f"finetune {key} seed {s}")
                cells.setdefault(arm.name, []).append(_cell_metrics(ft, m, arm.name, p, s))
                table.update(cells)
            if cfg.forgetting is not None and arm.corpus != "general":
                for s in (cfg.forgetting_seeds or cfg.seeds):
                    ft = derive("finetune", cfg.forgetting, "forgetting", model=model, seed=s, seeds=[],
                                output=str(run_dir / "forgetting" / f"{key}-s{s}"))
                    m = runner.cell("finetune", ft, f"forgetting {key} seed {s}")
                    forgetting.setdefault(arm.name, []).append(_cell_metrics(ft, m, arm.name, p, s))

    # 6. Analysis and output.
    results.update(analyse(cfg, arms, cells, main))
    if forgetting:
        fmain = FinetuneConfig.model_validate({**cfg.forgetting, "model": cfg.base}).main_metric()
        results["forgetting"] = {"task": cfg.forgetting.get("test") or cfg.forgetting.get("valid"),
                                 "metric": fmain, **analyse(cfg, [a for a in arms if a.corpus != "general"],
                                                            forgetting, fmain)}
    results.update({
        "base": _base_info(cfg.base), "task": {"task": ft_base.task, "metric": main, "train": ft_base.train,
                                                "valid": ft_base.valid, "test": ft_base.test},
        "budget": budget, "pretrain": pretrain_info, "mlm": mlm, "probes": probes,
        "seeds": {"finetune": cfg.seeds, "pretrain": cfg.pretrain_seeds,
                  "variance": f"± is the sample std over {len(cfg.seeds)} fine-tune seed(s)"
                              + (f" x {len(cfg.pretrain_seeds)} pretraining seeds" if len(cfg.pretrain_seeds) > 1
                                 else " (one pretraining run per arm: pretraining variance is not in it)")},
        "confidence": cfg.confidence, "interval_method": "paired t (Student t, n-1 df) over per-seed differences",
        "cells": {"ran": runner.ran, "reused": runner.reused}, "cell_wall_s": runner.walls,
    })
    out = cfg.output_path()
    with atomic_output_dir(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        (tmp / "results.md").write_text(render_markdown(results), encoding="utf-8")
        plot(results, tmp / "results.png")
        manifest = write_manifest(
            tmp, stage="experiment", config=cfg.model_dump(mode="json"), inputs=[{"model": cfg.base}],
            counts={"arms": len(arms), "cells_ran": runner.ran, "cells_reused": runner.reused},
            seed=cfg.seed, started=started, finished=time.time(),
            extra={"verdicts": {a: r.get("verdict") for a, r in results["arms"].items()}})
    print(render_markdown(results, brief=True))
    print(f"experiment done in {time.time() - started:.0f}s ({runner.ran} cells ran, {runner.reused} reused) → "
          f"{out}/results.md")
    return manifest


# --------------------------------------------------------------------------- cells
def _budget(cfg: ExperimentConfig) -> dict[str, Any]:
    pre = COMMANDS["pretrain"].model_validate({**cfg.pretrain, "model": cfg.base})
    seg = COMMANDS["segment"].model_validate({**cfg.segment, "model": cfg.base})
    steps = pre.max_steps
    seqs = pre.batch_size * pre.grad_accum
    return {"max_steps": steps, "epochs": pre.epochs if steps <= 0 else None, "batch_size": seqs,
            "max_seq_length": seg.max_seq_length, "tokens": max(steps, 0) * seqs * seg.max_seq_length,
            "lr": pre.lr, "schedule": pre.schedule, "warmup_ratio": pre.warmup_ratio}


def _pretrain(runner: Runner, cfg: ExperimentConfig, arm: Arm, p: int, segmented: dict[str, Path],
              budget: dict[str, Any], warnings: list[str]) -> tuple[str, dict[str, Any]]:
    arm_dir = Path(cfg.run) / "arms" / arm.name / f"p{p}"
    section = {**cfg.pretrain, "masking": arm.masking}
    if cfg.probe.every:  # a checkpoint (kept) and an eval loss at every probe step
        steps = max(budget["max_steps"], 1)
        section.update(save_steps=cfg.probe.every, eval_steps=cfg.probe.every,
                       save_total_limit=steps // cfg.probe.every + 2)
    if arm.replay:
        section["mix"] = [{"input": str(segmented[arm.replay[0]]), "weight": arm.replay[1]}]
    source = arm.corpus
    if arm.sop:
        section["objective"] = "mlm+sop"
        source = f"{arm.corpus}+sop"
    pre = derive("pretrain", section, "pretrain", model=arm.base, input=str(segmented[source]), seed=p,
                 output=str(arm_dir / "pretrain"))
    blocks = ((read_manifest(segmented[arm.corpus]) or {}).get("counts") or {}).get("blocks", {}).get("train") or 0
    if budget["max_steps"] > 0 and blocks:
        epochs = budget["max_steps"] * budget["batch_size"] / blocks
        if epochs > cfg.max_epochs:
            msg = (f"{arm.name}: {budget['max_steps']:,} steps x {budget['batch_size']} blocks pass over corpus "
                   f"'{arm.corpus}' ({blocks:,} train blocks) {epochs:.1f} times: a corpus this small for the budget "
                   f"is the most common way to make a model worse (it memorises); add text or lower max_steps")
            log.warning("experiment: WARNING %s", msg)
            warnings.append(msg)
    m = runner.cell("pretrain", pre, f"pretrain {arm.name} seed {p}")
    c, x = m.get("counts") or {}, m.get("metrics") or {}
    return str(pre.output_path()), {"arm": arm.name, "seed": p, "corpus": arm.corpus, "masking": arm.masking,
                                    "mixture": m.get("mixture"),
                                    "steps": c.get("steps"), "tokens_seen": c.get("tokens_seen"),
                                    "epochs": c.get("epochs"), "eval_loss": x.get("eval_loss"),
                                    "wall_s": m.get("wall_time_s"), "checkpoints": str(pre.checkpoints_path())}


def _score(runner: Runner, cfg: ExperimentConfig, model: str, key: str, segmented: dict[str, Path]) -> dict[str, Any]:
    """Held-out MLM loss of `model` on the valid blocks of the domain and general corpora,
    with the same fixed whole-word masks for every model (masks do not depend on the model)."""
    out = {}
    for corpus in ("domain", "general"):
        if corpus not in segmented:
            continue
        valid = ((read_manifest(segmented[corpus]) or {}).get("counts") or {}).get("blocks", {}).get("valid")
        if not valid:
            log.warning("experiment: corpora.%s has no valid blocks; no held-out MLM loss on it "
                                       "(set corpora.%s.split.valid_fraction > 0)", corpus, corpus)
            continue
        ev = derive("evaluate", {}, "evaluate", model=model, input=str(segmented[corpus]), split="valid",
                    max_blocks=cfg.mlm_blocks, seed=cfg.seed,
                    output=str(Path(cfg.run) / "mlm" / f"{key}-{corpus}"))
        m = runner.cell("evaluate", ev, f"MLM loss {key} on {corpus}")
        x = m.get("metrics") or {}
        out[corpus] = {"loss": x.get("loss"), "perplexity": x.get("perplexity"),
                       "masked_accuracy": x.get("masked_accuracy"), "blocks": (m.get("counts") or {}).get("blocks")}
    return out


def _cell_metrics(ft: FinetuneConfig, manifest: dict[str, Any], arm: str, p: int | None, s: int) -> dict[str, Any]:
    metrics = json.loads((ft.output_path() / "metrics.json").read_text(encoding="utf-8"))

    def scalars(d):
        return {k: v for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    return {"arm": arm, "pretrain_seed": p, "seed": s, "valid": scalars(metrics.get("valid")),
            "test": scalars(metrics.get("test")), "best_step": metrics.get("best_step"),
            "wall_s": manifest.get("wall_time_s"), "output": str(ft.output_path())}


def _probes(cfg: ExperimentConfig, arm: Arm, p: int, model: str, info: dict[str, Any]) -> list[dict[str, Any]]:
    """Probe the base (step 0) and every kept checkpoint of one pretraining run; cached in
    `<arm dir>/probe.json` (keyed by step and the probe settings)."""
    from workbench.stages.finetune import read_records
    from workbench.tasks.probe import linear_probe
    from workbench.vocab.tokenizer import load_tokenizer

    cache_path = Path(cfg.run) / "arms" / arm.name / f"p{p}" / "probe.json"
    settings = {**cfg.probe.model_dump(), "finetune": {k: cfg.finetune.get(k) for k in ("train", "valid", "data")}}
    cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
    if cache.get("settings") != settings or cache.get("model_manifest") != sha256_file(Path(model) / MANIFEST):
        cache = {"settings": settings, "model_manifest": sha256_file(Path(model) / MANIFEST), "steps": {}}
    ft = FinetuneConfig.model_validate({**cfg.finetune, "model": arm.base})
    train = read_records(ft.train, ft)[0][: cfg.probe.train_size]
    valid = read_records(ft.valid, ft)[0][: cfg.probe.valid_size]
    tok = load_tokenizer(arm.base, needed_by="experiment probe")
    ckpt_dir = Path(info["checkpoints"])
    points = [(0, arm.base)] + sorted((int(d.name.split("-")[1]), str(d)) for d in ckpt_dir.glob("checkpoint-*")
                                      if d.name.split("-")[1].isdigit())
    eval_loss = _eval_losses(model)
    out = []
    for step, path in points:
        if str(step) not in cache["steps"]:
            print(f"experiment: probe {arm.name} seed {p} step {step}", flush=True)
            cache["steps"][str(step)] = linear_probe(path, tok, train, valid, max_length=ft.max_length, seed=0)
            tmp = cache_path.with_name(f"probe.json.tmp-{os.getpid()}")
            tmp.write_text(json.dumps(cache, indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, cache_path)
        out.append({"step": step, "eval_loss": eval_loss.get(step), **cache["steps"][str(step)]})
    return out


def _eval_losses(model: str) -> dict[int, float]:
    path = Path(model) / "metrics.json"
    if not path.is_file():
        return {}
    history = json.loads(path.read_text(encoding="utf-8")).get("log_history") or []
    return {int(h["step"]): h["eval_loss"] for h in history if "eval_loss" in h}


def _base_info(base: str) -> dict[str, Any]:
    m = read_manifest(base) if Path(base).is_dir() else None
    info: dict[str, Any] = {"model": base}
    cfg_path = Path(base) / "config.json"
    if cfg_path.is_file():
        c = json.loads(cfg_path.read_text(encoding="utf-8"))
        info["shape"] = {k: c.get(k) for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")}
    if m:
        info.update(stage=m.get("stage"), steps=(m.get("counts") or {}).get("steps"),
                    tokens_seen=(m.get("counts") or {}).get("tokens_seen"),
                    eval_loss=(m.get("metrics") or {}).get("eval_loss"), manifest_sha256=sha256_file(Path(base) / MANIFEST))
    return info


# --------------------------------------------------------------------------- 6. analysis
def analyse(cfg: ExperimentConfig, arms: list[Arm], cells: dict[str, list[dict]], main: str) -> dict[str, Any]:
    """Per arm: the test metric's mean ± std over cells, per-seed values, paired differences
    against each control present (`cfg.controls`; see `_paired_diffs` for the pairing) with
    t intervals, and the verdicts (the first control's is the arm's verdict)."""
    split = "test" if all(c["test"] for cs in cells.values() for c in cs) else "valid"

    def value(c):
        return c[split].get(main)

    by_name = {a.name: a for a in arms}
    controls = [c for c in cfg.controls if c in by_name and c in cells]
    out: dict[str, Any] = {"split": split, "metric": main, "arms": {}, "controls": controls}
    for arm in arms:
        cs = cells.get(arm.name, [])
        vals = [value(c) for c in cs if value(c) is not None]
        entry: dict[str, Any] = {"cells": cs, "summary": mean_std(vals), "pretrains": arm.corpus,
                                 "other_metrics": {}}
        for k in sorted({k for c in cs for k in c[split]} - {main, "n", "threshold"}):
            entry["other_metrics"][k] = mean_std([c[split][k] for c in cs if k in c[split]])
        # A control is compared only with the controls before it (general_more with none),
        # every other arm with all of them.
        mine = controls[:controls.index(arm.name)] if arm.name in controls else controls
        for control in mine:
            diffs = _paired_diffs(cs, cells[control], value,
                                  by_pretrain_seed=arm.pretrains and by_name[control].pretrains)
            iv = paired_interval(diffs, cfg.confidence)
            iv["verdict"] = verdict(iv)
            entry[f"vs_{control}"] = iv
        entry["verdicts"] = {c: entry[f"vs_{c}"]["verdict"] for c in mine if f"vs_{c}" in entry}
        if entry["verdicts"]:
            entry["verdict"] = next(iter(entry["verdicts"].values()))
        out["arms"][arm.name] = entry
    return out


def _paired_diffs(cells: list[dict], control: list[dict], value, *, by_pretrain_seed: bool) -> list[float]:
    """Differences arm - control, one per pair. When one side does not pretrain (`none`), the
    other's cells are first averaged over its pretraining seeds, so each fine-tune seed gives
    one pair (the pairs stay independent); between two pretraining arms a pair is one
    (pretraining seed, fine-tune seed)."""
    def key(c):
        return (c["pretrain_seed"], c["seed"]) if by_pretrain_seed else c["seed"]

    def grouped(cs):
        out: dict[Any, list[float]] = {}
        for c in cs:
            if value(c) is not None:
                out.setdefault(key(c), []).append(value(c))
        return {k: sum(v) / len(v) for k, v in out.items()}

    a, b = grouped(cells), grouped(control)
    return [a[k] - b[k] for k in sorted(a, key=str) if k in b]


def _fmt(x: float | None, spec: str = ".2f", scale: float = 100.0) -> str:
    return "n/a" if x is None else format(x * scale, spec)


def _iv(iv: dict | None) -> str:
    if not iv or iv.get("mean") is None:
        return "—"
    if iv.get("low") is None:
        return f"{_fmt(iv['mean'], '+.2f')} (n={iv['n']})"
    return f"{_fmt(iv['mean'], '+.2f')} [{_fmt(iv['low'], '+.2f')}, {_fmt(iv['high'], '+.2f')}]"


def _verdicts(a: dict[str, Any]) -> str:
    if not a.get("verdicts"):
        return "(control)"
    items = list(a["verdicts"].items())
    return md_cell("; ".join([items[0][1]] + [f"vs {c}: {v}" for c, v in items[1:]]))


def render_markdown(r: dict[str, Any], brief: bool = False) -> str:
    main, split, conf = r["metric"], r["split"], int(round(100 * r.get("confidence", 0.95)))
    b, base = r.get("budget") or {}, r.get("base") or {}
    lines = [f"# Experiment: does continued pretraining help {md_text(str((r.get('task') or {}).get('task')))}?", ""]
    lines += [f"Task metric: **{md_text(main)}** on {split} (×100; the fine-tune keeps the best evaluation on valid). "
              f"Base: `{md_cell(str(base.get('model')))}`"
              + (f" ({base['shape']['num_hidden_layers']} layers x {base['shape']['hidden_size']}, "
                 f"vocab {base['shape']['vocab_size']:,}"
                 + (f", {base['steps']:,} pretraining steps, held-out loss {base['eval_loss']:.3f}" if base.get("steps")
                    and base.get("eval_loss") is not None else "") + ")" if base.get("shape") else "") + ".",
              f"Pretraining budget per arm: {b.get('max_steps', 0):,} steps x {b.get('batch_size')} blocks x "
              f"{b.get('max_seq_length')} tokens = {b.get('tokens', 0):,} token slots, lr {b.get('lr')} "
              f"({b.get('schedule')}). {r['seeds']['variance']}; intervals: {conf}% {r['interval_method']}.", ""]
    controls = r.get("controls") or []
    lines += ["| arm | pretrains on | n | " + f"{md_cell(main)} mean ± std | "
              + "".join(f"vs {md_cell(c)} [{conf}% CI] | " for c in controls) + "verdict |",
              "|---|---|---|---|" + "---|" * len(controls) + "---|"]
    for name, a in r["arms"].items():
        s = a["summary"]
        lines.append(f"| {md_cell(name)} | {md_cell(str(a['pretrains'] or '—'))} | {s['n']} | "
                     f"{_fmt(s['mean'])} ± {_fmt(s['std'])} | "
                     + "".join(f"{_iv(a.get(f'vs_{c}'))} | " for c in controls) + f"{_verdicts(a)} |")
    if "general_more" not in r["arms"] and "none" in controls and any(a["pretrains"] for a in r["arms"].values()):
        lines.append("\n**No same-budget control in this run** (arm `general_more`): a gain over `none` may come from "
                     "more pretraining steps on any text, not from the domain.")
    lines.append("")
    if brief:
        return "\n".join(lines)
    lines += ["![each seed (dots), arm means with intervals, paired differences](results.png)", ""]
    mlm = r.get("mlm") or {}
    if mlm:
        lines += ["## Held-out MLM loss (fixed whole-word masks, valid blocks; lower is better)", "",
                  "| model | domain loss | general loss |", "|---|---|---|"]
        for key, v in mlm.items():
            lines.append(f"| {md_cell(key)} | {_fmt((v.get('domain') or {}).get('loss'), '.3f', 1)} | "
                         f"{_fmt((v.get('general') or {}).get('loss'), '.3f', 1)} |")
        lines.append("")
    if r.get("forgetting"):
        f = r["forgetting"]
        lines += [f"## Forgetting check: general task `{md_cell(str(f['task']))}` ({md_text(f['metric'])} on "
                  f"{f['split']}), fine-tuned from the base and from each pretrained arm", "",
                  f"| arm | n | mean ± std | vs none [{conf}% CI] | verdict |", "|---|---|---|---|---|"]
        for name, a in f["arms"].items():
            s = a["summary"]
            lines.append(f"| {md_cell(name)} | {s['n']} | {_fmt(s['mean'])} ± {_fmt(s['std'])} | "
                         f"{_iv(a.get('vs_none'))} | {md_cell((a.get('verdicts') or {}).get('none') or '(reference)')} |")
        lines.append("")
    if r.get("probes"):
        lines += ["## Probes during pretraining (frozen encoder + logistic regression on valid)", "",
                  "| run | step | eval MLM loss | probe accuracy | probe macro-F1 |", "|---|---|---|---|---|"]
        for key, pts in r["probes"].items():
            for pt in pts:
                lines.append(f"| {md_cell(key)} | {pt['step']} | {_fmt(pt.get('eval_loss'), '.3f', 1)} | "
                             f"{_fmt(pt['accuracy'])} | {_fmt(pt['macro_f1'])} |")
        lines.append("")
    if r.get("pretrain"):
        lines += ["## Pretraining runs", "", "| run | corpus | masking | steps | tokens seen | epochs | eval loss | wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, p in r["pretrain"].items():
            lines.append(f"| {md_cell(key)} | {md_cell(str(p['corpus']))} | {md_cell(str((p['masking'] or {}).get('strategy', 'default')))} | "
                         f"{p['steps']} | {p['tokens_seen']:,} | {p['epochs']} | {_fmt(p['eval_loss'], '.3f', 1)} | "
                         f"{_fmt(p['wall_s'], '.0f', 1)} |")
        lines.append("")
    lines += ["## Per seed", "", f"| arm | pretraining seed | fine-tune seed | {md_cell(main)} | best step | wall s |",
              "|---|---|---|---|---|---|"]
    for name, a in r["arms"].items():
        for c in a["cells"]:
            lines.append(f"| {md_cell(name)} | {c['pretrain_seed'] if c['pretrain_seed'] is not None else '—'} | "
                         f"{c['seed']} | {_fmt(c[split].get(main))} | {c.get('best_step')} | {_fmt(c.get('wall_s'), '.0f', 1)} |")
    lines.append("")
    if r.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {md_text(w)}" for w in r["warnings"]] + [""]
    lines += ["How to read it: an arm **helps** when the whole interval of its paired difference against `none` "
              "is above 0, **hurts** when it is below 0; otherwise the run could not tell, and the verdict gives "
              "the smallest difference this many seeds at this spread would detect (80% power). Compare domain arms "
              "with `general_more` to separate the domain's effect from that of more pretraining steps.", ""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Left: every cell's test metric (dots) and each arm's mean with its 95% t interval.
    Right: paired differences against each control (none, general_more), with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["arms"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2.2))
    for i, name in enumerate(names):
        a = r["arms"][name]
        vals = [100 * c[r["split"]][r["metric"]] for c in a["cells"] if r["metric"] in c[r["split"]]]
        ax1.plot(vals, [i] * len(vals), "o", color="C0", alpha=0.5)
        s = a["summary"]
        if s["mean"] is not None:
            iv = paired_interval(vals, r.get("confidence", 0.95))  # one-sample t interval of the mean
            lo, hi = (iv["low"], iv["high"]) if iv["low"] is not None else (iv["mean"], iv["mean"])
            ax1.errorbar([iv["mean"]], [i], xerr=[[iv["mean"] - lo], [hi - iv["mean"]]], fmt="D", color="k", capsize=4)
        for j, control in enumerate(r.get("controls") or []):
            color = f"C{j + 1}"
            d = a.get(f"vs_{control}")
            if d and d.get("mean") is not None:
                lo = d["low"] if d["low"] is not None else d["mean"]
                hi = d["high"] if d["high"] is not None else d["mean"]
                ax2.errorbar([100 * d["mean"]], [i + (j - 0.5) * 0.25],
                             xerr=[[100 * (d["mean"] - lo)], [100 * (hi - d["mean"])]], fmt="o", color=color,
                             capsize=4, label=f"vs {control}" if i == next(
                                 k for k, n in enumerate(names) if r["arms"][n].get(f"vs_{control}")) else None)
    for ax in (ax1, ax2):
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
    ax1.set_xlabel(f"{r['metric']} on {r['split']} x100 (dots: seeds; diamond: mean, {int(100 * r.get('confidence', .95))}% CI)")
    ax2.axvline(0, color="grey", lw=1)
    ax2.set_xlabel("paired difference x100 (points), with CI")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- progress
class Progress:
    """The table of finished fine-tunes so far, printed and written to `<run>/progress.md`."""

    def __init__(self, path: Path, arms: list[Arm], cfg: ExperimentConfig, main: str):
        self.path, self.arms, self.cfg, self.main = path, arms, cfg, main

    def update(self, cells: dict[str, list[dict]]) -> None:
        seeds = self.cfg.seeds
        lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + f" | mean ({self.main} x100, test) |",
                 "|---|" + "---|" * (len(seeds) + 1)]
        for arm in self.arms:
            cs = cells.get(arm.name, [])
            by_seed: dict[int, list[float]] = {}
            for c in cs:
                v = (c["test"] or c["valid"]).get(self.main)
                if v is not None:
                    by_seed.setdefault(c["seed"], []).append(v)
            row = [" / ".join(_fmt(v) for v in by_seed[s]) if s in by_seed else "…" for s in seeds]
            vals = [v for vs in by_seed.values() for v in vs]
            lines.append(f"| {arm.name} | " + " | ".join(row) + f" | {_fmt(mean_std(vals)['mean'])} |")
        text = "\n".join(lines) + "\n"
        tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        print("experiment progress:\n" + text, flush=True)
