"""The stage contract: atomic output directories with a ``manifest.json``.

Every stage writes its output into a temporary sibling directory and renames it into
place only when everything succeeded, so a crash never leaves a half-written output that
a later stage (or ``make``) would take for a finished one. ``manifest.json`` records what
was done and from what: stage, resolved config, inputs with content hashes, package
versions, seed, row counts, output file hashes and wall time. The next stage checks it
with ``require_stage_output`` before reading anything.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

from workbench.errors import StageInputError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1

# Packages whose versions change results; recorded when installed.
_TRACKED_PACKAGES = (
    "zh-workbench", "torch", "transformers", "tokenizers", "datasets", "pyarrow",
    "jieba", "deepspeed", "datasketch", "opencc", "pandas", "numpy",
)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@contextlib.contextmanager
def atomic_output_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside `final`; on success it replaces `final` in one rename.

    On an exception the temp dir is removed and `final` (if it existed) is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        # rename() cannot replace a non-empty directory: move the old one aside first,
        # so there is never a moment when `final` holds a mix of old and new files.
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def output_hashes(directory: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, str]:
    """sha256 of every file under `directory` (relative posix path → hex)."""
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel not in exclude:
            out[rel] = sha256_file(p)
    return out


def write_manifest(
    directory: Path,
    *,
    stage: str,
    config: dict[str, Any],
    inputs: list[dict[str, Any]],
    counts: dict[str, Any],
    seed: int,
    started: float,
    finished: float,
    extra: dict[str, Any] | None = None,
    hash_exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write `directory/manifest.json` and return it.

    `outputs` hashes every file already in `directory` except the manifest and names in
    `hash_exclude` (files that legitimately differ between identical runs).
    """
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "created": _dt.datetime.fromtimestamp(finished, _dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(finished - started, 3),
        "seed": seed,
        "config": config,
        "inputs": inputs,
        "counts": counts,
        "outputs": output_hashes(directory, exclude=(MANIFEST, *hash_exclude)),
        "versions": package_versions(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    if extra:
        manifest.update(extra)
    (directory / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageInputError(f"{path}: not valid JSON ({e}); re-run the stage that wrote {directory}") from None


def require_stage_output(directory: str | Path, expected: str | tuple[str, ...], *, needed_by: str) -> dict[str, Any]:
    """The manifest of `directory`, which must be a finished output of stage `expected`.

    Raises StageInputError naming the directory, what was found and the command to run.
    """
    directory = Path(directory)
    wanted = (expected,) if isinstance(expected, str) else expected
    run_hint = f"run `workbench {wanted[0]} ...` (or `make {wanted[0]}`) first"
    if not directory.exists():
        raise StageInputError(f"{needed_by}: input directory {directory} does not exist; {run_hint}")
    manifest = read_manifest(directory)
    if manifest is None:
        raise StageInputError(
            f"{needed_by}: {directory} has no {MANIFEST}, so it is not a finished `{'/'.join(wanted)}` output "
            f"(an interrupted run, or not a workbench directory); {run_hint}"
        )
    stage = manifest.get("stage")
    if stage not in wanted:
        raise StageInputError(
            f"{needed_by}: {directory} is a `{stage}` output but `{needed_by}` reads `{'/'.join(wanted)}` output; "
            f"point input= at the directory written by `workbench {wanted[0]}`"
        )
    if manifest.get("manifest_version", 0) > MANIFEST_VERSION:
        raise StageInputError(
            f"{needed_by}: {directory} was written by a newer zh-workbench (manifest_version "
            f"{manifest['manifest_version']}); upgrade this checkout or re-run `workbench {stage}`"
        )
    return manifest
