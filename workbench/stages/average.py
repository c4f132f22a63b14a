"""average: the last K checkpoints of a run, averaged into one model, scored against the last.

    workbench average input=runs/demo/pretrain last=3 output=runs/demo/pretrain-avg
    workbench average input=runs/demo/finetune-classification last=4

Averaging the weights of the last checkpoints of one run (Vaswani et al. 2017; Izmailov et al.
2018, "stochastic weight averaging") lands nearer the centre of the low-loss region the run
was moving through than any single checkpoint; it costs no training. Readable top to bottom:

  1. the input: a `pretrain` output, whose Trainer checkpoints (checkpoint-<step>/ in
     `<output>-checkpoints`, kept by `save_total_limit`) are averaged, or a `finetune` output
     trained with keep_snapshots=K, whose evaluation snapshots (snapshots/step-<N>.safetensors,
     CRF included) are averaged. The last K by step (or the ones `checkpoints` names);
     checkpoints written after the pretrain output (a later run in the same directory) are refused;
  2. checks: every checkpoint has the same config (architecture) and the same weight names,
     shapes and dtypes; the first that differs is named with what differs;
  3. the average: each floating-point tensor summed in float64 and divided by K, then cast
     back to its dtype; integer / bool tensors (buffers such as position ids, the CRF's
     allowed-transition masks) are copied from the last checkpoint, not averaged, and listed;
  4. the output: the source's model directory with the averaged weights (pretrain: a masked LM
     that evaluate / finetune / pretrain read; finetune: a finetune-style directory with
     task.json and labels.json that predict / evaluate / distil read), metrics.json, manifest
     (source, each checkpoint's step and sha256, K);
  5. scores (score=true), the average and the LAST checkpoint on the same data with the same
     code: pretrain, held-out MLM loss on the pretrain input's valid blocks with pretrain's own
     evaluation masks, seed and batch size (``evaluate.score_mlm``, so the last checkpoint's
     loss_batch_mean is pretrain's eval_loss); finetune, the task metric on its valid (and test)
     file through the predict code path. The finetune's own pick (its best evaluation) is listed too.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import time
import types
from pathlib import Path
from typing import Any

from workbench.config import AverageConfig, EvaluateConfig, MaskingConfig, TaskDataConfig
from workbench.errors import StageInputError
from workbench.manifest import (MANIFEST, atomic_output_dir, owns_output, require_stage_output, scratch_dir,
                                sha256_file, write_manifest)

log = logging.getLogger("workbench.average")

SNAPSHOT_DIR, SNAPSHOT_INDEX = "snapshots", "index.json"
# config.json keys that say nothing about the architecture.
_CONFIG_NOISE = ("transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures")
# Files of a source output that are not carried into the average (weights are replaced; the
# rest describes the source run).
_NOT_COPIED = {MANIFEST, "metrics.json", "model.safetensors", "crf.safetensors", "training_args.bin"}


# --------------------------------------------------------------------------- averaging
def average_safetensors(files: list[Path]) -> tuple[dict, dict[str, Any]]:
    """({name: averaged tensor}, info) of safetensors files with the same weight names,
    shapes and dtypes (else StageInputError naming the first file that differs and how).
    Floating-point tensors: mean over the files, summed in float64, cast back to their
    dtype. Integer / bool tensors: copied from the last file (info["copied"]; those that differ
    between files in info["copied_differ"])."""
    import torch
    from safetensors import safe_open

    sums: dict[str, Any] = {}
    copied: dict[str, Any] = {}
    differ: set[str] = set()
    ref: dict[str, tuple] = {}
    for i, path in enumerate(files):
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if i == 0:
                ref_keys = keys
            elif keys != ref_keys:
                missing, extra = sorted(ref_keys - keys), sorted(keys - ref_keys)
                raise StageInputError(
                    f"average: {path} does not hold the weights of {files[0]}: "
                    + "; ".join(x for x in (f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
                                            if missing else "",
                                            f"extra {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"
                                            if extra else "") if x)
                    + "\n  fix: average checkpoints of one run (same model and head); leave this one out with "
                      "checkpoints=[...]")
            for key in sorted(keys):
                t = f.get_tensor(key)
                if i == 0:
                    ref[key] = (tuple(t.shape), t.dtype)
                elif (tuple(t.shape), t.dtype) != ref[key]:
                    raise StageInputError(
                        f"average: {path}: weight {key} is {tuple(t.shape)} {t.dtype}, but {ref[key][0]} "
                        f"{ref[key][1]} in {files[0]}\n  fix: average checkpoints of one model architecture; "
                        "leave this one out with checkpoints=[...]")
                if t.is_floating_point():
                    sums[key] = t.double() if i == 0 else sums[key] + t.double()
                else:
                    if key in copied and not torch.equal(copied[key], t):
                        differ.add(key)
                    copied[key] = t
    n = len(files)
    out = {key: (s / n).to(ref[key][1]) for key, s in sums.items()}
    out.update(copied)
    return out, {"averaged": len(sums), "copied": sorted(copied), "copied_differ": sorted(differ)}


def _architecture(config_path: Path) -> dict:
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return {k: v for k, v in config.items() if k not in _CONFIG_NOISE}


def check_same_config(config_files: list[Path]) -> None:
    """Every config.json describes the same model as the first (names the first that does not)."""
    first = _architecture(config_files[0])
    for path in config_files[1:]:
        other = _architecture(path)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            shown = ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in diff[:5])
            raise StageInputError(f"average: {path} describes another model than {config_files[0]} ({shown})\n"
                                  "  fix: average checkpoints of one run; leave this one out with checkpoints=[...]")


# --------------------------------------------------------------------------- which checkpoints
def _pick(available: list[tuple[int, str, Path]], cfg: AverageConfig, where: str, how_to_keep: str) -> list:
    """The last `cfg.last` of (step, name, path) sorted by step, or those `cfg.checkpoints` names."""
    if cfg.checkpoints:
        by_name = {name: item for item in available for name in (item[1], Path(item[1]).stem)}
        unknown = [c for c in cfg.checkpoints if c not in by_name]
        if unknown:
            raise StageInputError(f"average: {', '.join(unknown)} not in {where} (there: "
                                  f"{', '.join(n for _, n, _ in available) or 'none'})\n  fix: name checkpoints that exist")
        return sorted((by_name[c] for c in cfg.checkpoints), key=lambda x: x[0])
    if len(available) < cfg.last:
        raise StageInputError(f"average: last={cfg.last}, but {where} holds {len(available)} "
                              f"({', '.join(n for _, n, _ in available) or 'none'})\n  fix: pass last={len(available)} "
                              f"if that is enough, or {how_to_keep}")
    return available[-cfg.last:]


def pretrain_checkpoints(cfg: AverageConfig, src: Path, manifest: dict) -> tuple[Path, list[tuple[int, str, Path]]]:
    """(checkpoint directory, chosen (step, name, dir)) of a pretrain output."""
    ckpt_dir = Path(cfg.checkpoints_dir or manifest.get("checkpoints") or f"{src}-checkpoints")
    if not ckpt_dir.is_dir():
        raise StageInputError(f"average: the checkpoints of {src} are not in {ckpt_dir} (no such directory)\n"
                              "  fix: pass checkpoints_dir= the directory holding checkpoint-<step>/")
    final_step = (manifest.get("counts") or {}).get("steps")
    found = []
    for p in ckpt_dir.glob("checkpoint-*"):
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and (p / "model.safetensors").is_file():
            found.append((int(m.group(1)), p.name, p))
    found.sort()
    later = [name for step, name, _ in found if final_step is not None and step > final_step]
    if later:
        raise StageInputError(f"average: {', '.join(later)} in {ckpt_dir} come after step {final_step}, the last "
                              f"step of {src}: a later pretrain run wrote them\n  fix: average the output of that run, "
                              "or re-run pretrain so that the output and its checkpoints match")
    if found and final_step is not None and found[-1][0] != final_step:
        log.warning("average: the last checkpoint in %s is step %d, the pretrain output is step %d", ckpt_dir,
                    found[-1][0], final_step)
    keep = int((manifest.get("config") or {}).get("save_total_limit") or 0)
    return ckpt_dir, _pick(found, cfg, str(ckpt_dir),
                           f"re-run pretrain with save_total_limit >= {cfg.last} (it kept {keep})")


def finetune_snapshots(cfg: AverageConfig, src: Path) -> list[tuple[int, str, Path]]:
    """Chosen (step, file name, path) of a finetune output's evaluation snapshots."""
    index_path = src / SNAPSHOT_DIR / SNAPSHOT_INDEX
    if not index_path.is_file():
        raise StageInputError(f"average: {src} keeps no weight snapshots ({SNAPSHOT_DIR}/{SNAPSHOT_INDEX} is missing); "
                              "finetune keeps only its best weights unless asked\n  fix: re-run finetune with "
                              f"keep_snapshots={cfg.last} (the weights of its last {cfg.last} valid evaluations)")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    found = sorted((int(e["step"]), e["file"], src / SNAPSHOT_DIR / e["file"]) for e in index)
    return _pick(found, cfg, f"{src}/{SNAPSHOT_DIR}", f"re-run finetune with keep_snapshots >= {cfg.last}")


# --------------------------------------------------------------------------- scoring
def _mlm_score(model_dir: Path, segment_dir: str, pretrain_cfg: dict, cfg: AverageConfig, out: Path) -> dict:
    """evaluate's MLM scoring of `model_dir` with pretrain's masks, seed and batch size."""
    from workbench.stages.evaluate import score_mlm

    ecfg = EvaluateConfig(model=str(model_dir), input=str(segment_dir), output=str(out), split="valid",
                          seed=int(pretrain_cfg.get("seed", 0)),
                          masking=MaskingConfig(**{**(pretrain_cfg.get("masking") or {}), "sop": False}),
                          batch_size=cfg.batch_size or int(pretrain_cfg.get("batch_size", 32)),
                          max_blocks=cfg.max_blocks)
    with contextlib.redirect_stdout(io.StringIO()):  # its summary line names a scratch directory
        m = score_mlm(ecfg)["metrics"]
    return {k: m[k] for k in ("loss", "perplexity", "masked_accuracy", "loss_batch_mean", "masks_sha256")}


def _task_records(manifest: dict, spec, role: str):
    """The records of the finetune's `role` file, read and label-checked as finetune did."""
    from workbench.stages.finetune import read_records
    from workbench.tasks.labels import LabelMap, check_labels

    path = next((e.get("path") for e in manifest.get("inputs") or [] if e.get("role") == role), None)
    if not path:
        return None, None
    if not Path(path).is_file():
        raise StageInputError(f"average: the finetune's {role} file {path} is gone; it is needed to score the average"
                              "\n  fix: restore it, or pass score=false")
    fc = manifest.get("config") or {}
    data = TaskDataConfig(**spec.data)
    records, _ = read_records(path, types.SimpleNamespace(task=spec.task, data=data), data)
    unknown = fc.get("unknown_labels", "error")
    records, _ = check_labels(records, LabelMap(tuple(spec.labels)), unknown=unknown,
                              map_to=fc.get("unknown_label_to"), multilabel=spec.multilabel)
    return path, records


# --------------------------------------------------------------------------- the stage
@owns_output("average")
def run(cfg: AverageConfig) -> dict[str, Any]:
    started = time.time()
    src = Path(cfg.input)
    manifest = require_stage_output(src, ("pretrain", "finetune"), needed_by="average")
    kind = manifest["stage"]
    if kind == "pretrain":
        ckpt_dir, chosen = pretrain_checkpoints(cfg, src, manifest)
        weight_files = [p / "model.safetensors" for _, _, p in chosen]
        check_same_config([src / "config.json", *(p / "config.json" for _, _, p in chosen)])
    else:
        ckpt_dir, chosen = src / SNAPSHOT_DIR, finetune_snapshots(cfg, src)
        weight_files = [p for _, _, p in chosen]
    names = [name for _, name, _ in chosen]
    log.info("average: %d %s checkpoints of %s: %s", len(chosen), kind, src, ", ".join(names))
    averaged, info = average_safetensors(weight_files)
    if info["copied_differ"]:
        log.warning("average: integer tensors differ between checkpoints (the last one's are kept): %s",
                    ", ".join(info["copied_differ"][:5]))
    last_weights, _ = average_safetensors(weight_files[-1:])

    out = cfg.output_path()
    with atomic_output_dir(out) as tmp, scratch_dir(out) as work:
        work = Path(work)
        for p in sorted(src.iterdir()):  # config, tokenizer, task.json, labels.json, ...
            if p.is_file() and p.name not in _NOT_COPIED and not p.name.endswith(".png"):
                shutil.copy2(p, tmp / p.name)
        if kind == "pretrain":
            report = _write_pretrain(cfg, manifest, tmp, work, averaged, last_weights)
        else:
            report = _write_finetune(cfg, src, manifest, tmp, work, averaged, last_weights)
        report.update(source=str(src), source_stage=kind, checkpoints_dir=str(ckpt_dir), k=len(chosen), checkpoints=names,
                      steps=[step for step, _, _ in chosen], tensors=info)
        (tmp / "metrics.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        extra: dict[str, Any] = {"source_stage": kind, "k": len(chosen), "checkpoints": names,
                                 "metrics": report.get("summary", {})}
        for key in ("tokenizer", "objective", "task", "metric"):  # what readers of the source look up
            if key in manifest:
                extra[key] = manifest[key]
        inputs = [{"role": "source", "path": str(src), "stage": kind, "manifest_sha256": sha256_file(src / MANIFEST)}]
        inputs += [{"role": "checkpoint", "path": str(f), "step": step, "sha256": sha256_file(f)}
                   for (step, _, _), f in zip(chosen, weight_files)]
        inputs += [dict(e) for e in manifest.get("inputs") or [] if e.get("role") in ("train", "valid", "test")]
        if report.get("segment"):
            inputs.append({"role": "scored_on", "path": report["segment"], "stage": "segment"})
        new_manifest = write_manifest(
            tmp, stage="average", config=cfg.model_dump(mode="json"), inputs=inputs,
            counts={"checkpoints": len(chosen), "tensors_averaged": info["averaged"], "tensors_copied": len(info["copied"])},
            seed=int(manifest.get("seed", 0)), started=started, finished=time.time(), extra=extra)
    print(f"average → {out}: {len(chosen)} {kind} checkpoints ({', '.join(names)}) of {src}"
          + (f"; {report['line']}" if report.get("line") else ""))
    return new_manifest


def _write_pretrain(cfg: AverageConfig, manifest: dict, tmp: Path, work: Path, averaged: dict, last: dict) -> dict:
    """Averaged masked LM into `tmp`; MLM scores of average vs last checkpoint."""
    from safetensors.torch import save_file

    from workbench.modeling import load_masked_lm

    save_file(averaged, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    model, head_missing = load_masked_lm(str(tmp), needed_by="average")  # loads completely, MLM head included
    del model
    if head_missing:
        raise StageInputError(f"average: the checkpoints lack the MLM head ({', '.join(head_missing[:3])})")
    report: dict[str, Any] = {"kind": "pretrain"}
    if not cfg.score:
        return report
    segment = next((e.get("path") for e in manifest.get("inputs") or []
                    if e.get("stage") == "segment" and e.get("role") != "mix"), None)
    if not segment or not Path(segment).is_dir():
        raise StageInputError(f"average: the pretrain input (segment output) {segment} is gone; it holds the valid "
                              "blocks the average is scored on\n  fix: restore it, or pass score=false")
    last_dir = work / "last-model"  # the output's files with the last checkpoint's weights
    shutil.copytree(tmp, last_dir)
    save_file(last, str(last_dir / "model.safetensors"), metadata={"format": "pt"})
    pcfg = manifest.get("config") or {}
    scores = {"average": _mlm_score(tmp, segment, pcfg, cfg, work / "score-average"),
              "last": _mlm_score(last_dir, segment, pcfg, cfg, work / "score-last")}
    delta = scores["average"]["loss"] - scores["last"]["loss"]
    report.update(segment=str(segment), scores=scores, delta_loss=delta,
                  pretrain_eval_loss=(manifest.get("metrics") or {}).get("eval_loss"),
                  summary={"valid_mlm_loss": scores["average"]["loss"], "last_valid_mlm_loss": scores["last"]["loss"]},
                  line=(f"valid MLM loss {scores['average']['loss']:.4f} (perplexity {scores['average']['perplexity']:.2f})"
                        f" vs last checkpoint {scores['last']['loss']:.4f} ({scores['last']['perplexity']:.2f}): "
                        f"{delta:+.4f}"))
    return report


def _write_finetune(cfg: AverageConfig, src: Path, manifest: dict, tmp: Path, work: Path, averaged: dict,
                    last: dict) -> dict:
    """Averaged task model (+ CRF) into `tmp`, finetune-style; task metric of average vs last."""
    from workbench.tasks.heads import load_task_model, save_crf
    from workbench.tasks.inference import evaluate_records

    def load_into(weights: dict):
        model, crf, tok, spec = load_task_model(src, needed_by="average")
        model_part = {k: v for k, v in weights.items() if not k.startswith("crf.")}
        crf_part = {k[len("crf."):]: v for k, v in weights.items() if k.startswith("crf.")}
        if bool(crf_part) != (crf is not None):
            raise StageInputError(f"average: the snapshots of {src} {'hold' if crf_part else 'lack'} CRF weights but "
                                  f"the model {'has none' if crf is None else 'has one'}\n  fix: re-run finetune")
        try:
            model.load_state_dict(model_part, strict=True)
            if crf is not None:
                crf.load_state_dict(crf_part, strict=True)
        except RuntimeError as e:
            raise StageInputError(f"average: the snapshots of {src} do not fit its model: {str(e).splitlines()[0]}\n"
                                  "  fix: re-run finetune with keep_snapshots") from None
        return model.eval(), crf, tok, spec

    model, crf, tok, spec = load_into(averaged)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if crf is not None:
        save_crf(crf, spec.tags, tmp)
    src_metrics = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    main = src_metrics.get("metric") or {"tagging": "f1", "multilabel": "micro_f1"}.get(spec.task, "accuracy")
    report: dict[str, Any] = {"kind": "finetune", "task": spec.task, "metric": main,
                              "label_map": src_metrics.get("label_map"), "valid": None, "test": None}
    if not cfg.score:
        return report
    last_model, last_crf, _, _ = load_into(last)
    batch = cfg.batch_size or 64
    scores: dict[str, dict] = {}
    for role in ("valid", "test"):
        path, records = _task_records(manifest, spec, role)
        if not records:
            continue
        avg_m = evaluate_records(model, crf, tok, spec, records, batch_size=batch)[0]
        last_m = evaluate_records(last_model, last_crf, tok, spec, records, batch_size=batch)[0]
        report[role] = avg_m  # finetune's metrics.json shape: what export's model card reads
        scores[role] = {"file": path, "average": avg_m[main], "last": last_m[main], "delta": avg_m[main] - last_m[main],
                        "finetune_selected": (src_metrics.get(role) or {}).get(main)}
    report.update(scores=scores,
                  summary={f"{r}_{main}": s["average"] for r, s in scores.items()}
                  | {f"last_{r}_{main}": s["last"] for r, s in scores.items()},
                  line="; ".join(f"{r} {main} {s['average']:.4f} vs last checkpoint {s['last']:.4f} ({s['delta']:+.4f})"
                                 + (f", finetune's pick {s['finetune_selected']:.4f}"
                                    if s["finetune_selected"] is not None else "") for r, s in scores.items()))
    return report
