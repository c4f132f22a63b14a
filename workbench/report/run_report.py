"""report: summarise a run directory from its stage manifests.

    workbench report run=runs/demo

Reads every ``<run>/*/manifest.json`` (each stage's output), prints what ran, its row
counts and metrics and where the outputs are, and writes the same as ``<run>/report.md``.
It reads manifests only, so it is instant and works for any mix of finished stages.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.config import ReportConfig
from workbench.errors import StageInputError
from workbench.manifest import MANIFEST, claim_output, read_manifest
from workbench.report.escape import md_code, md_text

# First line of every report.md this command writes: an existing report.md without it is
# the user's file and is never overwritten.
MARKER = "<!-- written by `workbench report` from the run's manifests; it is replaced on every run -->"


def _scalars(d: dict[str, Any]) -> str:
    return ", ".join(f"{md_text(k)} {v:,}" if isinstance(v, int) else f"{md_text(k)} {md_text(v)}"
                     for k, v in d.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool))


def _upstream_models(manifests: list[tuple[dict, Path]], run: Path) -> list[tuple[dict, Path]]:
    """(manifest, dir) of the stage outputs of OTHER runs this run started from (a `model`
    input that is a stage output directory, e.g. the demo's general model), followed
    transitively; each manifest is read once."""
    seen: list[tuple[dict, Path]] = []
    todo = [m for m, _ in manifests]
    while todo:
        m = todo.pop()
        for inp in m.get("inputs", []):
            model = Path(str(inp.get("model") or ""))
            if str(model) and (model / MANIFEST).is_file() and model.resolve().parent != run.resolve() \
                    and all(model != d for _, d in seen):
                seen.append((read_manifest(model), model))
                todo.append(seen[-1][0])
    return seen


def build_report(run: Path) -> str:
    stage_dirs = sorted(p.parent for pattern in (f"*/{MANIFEST}", f"export/*/{MANIFEST}") for p in run.glob(pattern))
    if not stage_dirs:
        raise StageInputError(f"report: {run} holds no stage output (no */{MANIFEST}); run a stage first, e.g. `make prepare`")
    manifests = sorted(((read_manifest(d), d) for d in stage_dirs), key=lambda md: md[0].get("created", ""))
    upstream = _upstream_models(manifests, run)
    manifests = sorted(upstream, key=lambda md: md[0].get("created", "")) + manifests
    lines = [MARKER, "", f"# Run report: {md_code(run)}", ""]
    if upstream:
        lines += [f"Started from {', '.join(md_code(d) for _, d in upstream)} (another run's output; its stages are "
                  "listed first).", ""]
    lines += ["| stage | finished (UTC) | wall time | output |", "|---|---|---|---|"]
    for m, d in manifests:
        lines.append(f"| {m['stage']} | {m.get('created', '?')} | {m.get('wall_time_s', 0):.1f} s | {md_code(d)} |")
    for m, d in manifests:
        lines += ["", f"## {m['stage']}" + ("" if d.parent.resolve() == run.resolve() else f" ({md_code(d)})"), ""]
        counts = m.get("counts", {})
        if counts:
            lines.append(f"- counts: {_scalars(counts)}")
            for key, value in counts.items():
                if isinstance(value, dict) and value:
                    lines.append(f"- {md_text(key.replace('_', ' '))}: {_scalars(value)}")
        if m.get("metrics"):
            lines.append(f"- metrics: {_scalars(m['metrics'])}")
        for extra in ("rejects.jsonl", "duplicates.jsonl", "new_tokens.tsv"):
            if (d / extra).exists():
                lines.append(f"- {extra}: {md_code(d / extra)}")
        for png in sorted(d.glob("*.png")):
            lines.append(f"- {png.stem.replace('_', ' ')}:\n\n  ![{png.stem}]({os.path.relpath(png, run)})\n")
        lines.append(f"- manifest: {md_code(d / MANIFEST)} (config, input hashes, versions)")
    return "\n".join(lines) + "\n"


def run(cfg: ReportConfig) -> str:
    run_dir = Path(cfg.run)
    text = build_report(run_dir)
    target = run_dir / "report.md"
    with claim_output(target, stage="report", is_own=lambda p: p.read_text(encoding="utf-8", errors="replace")
                      .startswith(MARKER)):
        tmp = target.with_name(f".report.md.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
    print(text + f"\n(written to {run_dir / 'report.md'})")
    return text
