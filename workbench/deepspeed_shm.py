"""DeepSpeed's CPU shared-memory buffers: released at exit, stale ones swept by `workbench clean`.

When every rank runs on one machine without a GPU, DeepSpeed's CPU communication op
(deepspeed/ops/csrc/cpu/comm/shm.cpp) creates one POSIX shared-memory segment per rank,
``/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>`` (~66 MB), and
never unlinks it: it has no finalize. /dev/shm is memory (tmpfs), so every CPU DeepSpeed run
kept ~66 MB per rank until the machine restarted; a day of test runs on the development
machine had left 271 of them, 17 GB, and the next large job was killed for memory.

`release_own` unlinks this rank's segment; pretrain registers it at exit (every peer has
mapped it since initialisation, and a mapping outlives the name). A killed run cannot, so
`stale` lists the segments of this user that no live process maps, for `workbench clean`.
"""

from __future__ import annotations

import atexit
import os
from functools import cache
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer"


def own_name() -> str | None:
    """This rank's segment name as DeepSpeed builds it (None outside a distributed launch)."""
    rank = os.environ.get("RANK")
    if rank is None:
        return None
    return f"{PREFIX}_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_{os.environ.get('MASTER_PORT', '')}_{rank}"


def release_own() -> bool:
    """Unlink this rank's segment if it exists; True when one was removed."""
    name = own_name()
    if name is None:
        return False
    try:
        (SHM_DIR / name).unlink()
        return True
    except (FileNotFoundError, PermissionError):
        return False


@cache
def release_at_exit() -> None:
    """Unlink this rank's segment when the process exits (registered once per process)."""
    atexit.register(release_own)


def _mapped() -> set[str]:
    """Names of /dev/shm files that some process we can see has mapped."""
    out: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:  # the process ended, or is not ours to read
            continue
        for line in text.splitlines():
            i = line.find(str(SHM_DIR) + "/")
            if i >= 0:
                out.add(Path(line[i:].removesuffix(" (deleted)")).name)
    return out


def stale() -> list[Path]:
    """This user's DeepSpeed segments that no live process maps (left by killed runs)."""
    if not SHM_DIR.is_dir():
        return []
    mine = sorted(SHM_DIR.glob(f"{PREFIX}_{os.getuid()}_*"))
    if not mine:
        return []
    in_use = _mapped()
    return [p for p in mine if p.name not in in_use]
