"""clean: list and remove what interrupted runs left behind.

    workbench clean                 # everything under runs/
    workbench clean path=runs/demo dry_run=true

A stage writes into `.<output>.tmp-<pid>-<id>/` beside its output and renames it into place
at the end; the replaced output is moved to `.<output>.old-<pid>-<id>/` for the moment of
the swap. A run killed in between leaves these behind. Each stage sweeps its own leftovers
when it next starts (under its output's lock); this command does it for a whole tree. A
leftover whose output is locked by a live run is skipped and named.

It also removes DeepSpeed's CPU shared-memory segments (/dev/shm, i.e. memory) that killed
runs of this user left and no live process maps (workbench/deepspeed_shm.py).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from workbench import deepspeed_shm
from workbench.config import CleanupConfig
from workbench.errors import OutputBusyError, StageInputError
from workbench.manifest import claim_output, leftovers, tree_size

# .<name>.tmp-<pid>-<hex> / .<name>.old-[<pid>-]<hex>
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-[0-9a-f-]+$")


def run(cfg: CleanupConfig) -> dict[str, Any]:
    shm = _sweep_shm(cfg.dry_run)
    root = Path(cfg.path)
    if not root.exists():
        print(f"clean: {root} does not exist; nothing to clean")
        return {"removed": [], "bytes": 0, "busy": [], "shm": shm}
    if not root.is_dir():
        raise StageInputError(f"clean: {root} is not a directory; pass path= a runs directory")
    outputs = sorted({p.parent / m.group("name") for p in root.rglob(".*") if (m := _LEFTOVER.match(p.name))})
    removed, busy, total = [], [], 0
    for final in outputs:
        junk = leftovers(final)
        if not junk:
            continue
        size = sum(tree_size(p) for p in junk)
        if cfg.dry_run:
            removed += junk
            total += size
            continue
        try:
            # The output's lock: a live run's temp dir is never touched.
            with claim_output(final, stage=None, is_own=lambda _p: True):
                for p in junk:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        except OutputBusyError:
            busy.append(final)
            continue
        removed += junk
        total += size
    verb = "would remove" if cfg.dry_run else "removed"
    for p in removed:
        print(f"  {p}")
    print(f"clean: {verb} {len(removed)} leftover(s) of interrupted runs under {root} ({total / 1e6:.1f} MB)"
          + (f"; skipped {len(busy)} output(s) being written now: {', '.join(map(str, busy))}" if busy else ""))
    return {"removed": [str(p) for p in removed], "bytes": total, "busy": [str(p) for p in busy], "shm": shm}


def _sweep_shm(dry_run: bool) -> dict[str, Any]:
    """DeepSpeed shared-memory segments of killed runs: listed, and removed unless dry_run."""
    found = deepspeed_shm.stale()
    size = sum(p.stat().st_size for p in found if p.exists())
    if not dry_run:
        for p in found:
            p.unlink(missing_ok=True)
    if found:
        print(f"clean: {'would remove' if dry_run else 'removed'} {len(found)} DeepSpeed shared-memory segment(s) "
              f"of killed runs in {deepspeed_shm.SHM_DIR} ({size / 1e6:.1f} MB of memory)")
    return {"segments": [str(p) for p in found], "bytes": size}
