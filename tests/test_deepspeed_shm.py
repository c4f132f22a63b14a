"""DeepSpeed's CPU /dev/shm segments: `workbench clean` removes only those no live process maps."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from workbench import deepspeed_shm

pytestmark = pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm (not Linux)")


def test_clean_removes_unmapped_segments_and_keeps_mapped_ones(cli, monkeypatch):
    port = f"t{os.getpid()}"
    base = f"{deepspeed_shm.PREFIX}_{os.getuid()}_127.0.0.1_{port}"
    stale, live = Path("/dev/shm") / f"{base}_0", Path("/dev/shm") / f"{base}_1"
    for p in (stale, live):
        p.write_bytes(b"\0" * 4096)
    f = open(live, "r+b")
    mapping = mmap.mmap(f.fileno(), 4096)  # a live run's rank holds its segment mapped
    try:
        assert stale in deepspeed_shm.stale() and live not in deepspeed_shm.stale()
        code, out, _ = cli("clean", "path=does-not-exist", "dry_run=true")
        assert code == 0 and "would remove" in out and stale.exists()
        code, out, _ = cli("clean", "path=does-not-exist")
        assert code == 0 and "DeepSpeed shared-memory segment" in out
        assert not stale.exists() and live.exists()
        # this rank's own segment, named from the launcher's environment, is released at exit
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", port)
        assert deepspeed_shm.own_name() == live.name
        assert deepspeed_shm.release_own() and not live.exists()
        assert not deepspeed_shm.release_own()
    finally:
        mapping.close()
        f.close()
        for p in (stale, live):
            p.unlink(missing_ok=True)
