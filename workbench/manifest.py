"""The stage contract: atomic output directories with a ``manifest.json``.

Every stage writes its output into a temporary sibling directory and renames it into
place only when everything succeeded, so a crash never leaves a half-written output that
a later stage (or ``make``) would take for a finished one. ``manifest.json`` records what
was done and from what: stage, resolved config, inputs with content hashes, package
versions, seed, row counts, output file hashes and wall time. The next stage checks it
with ``require_stage_output`` before reading anything.

Safety (README "Safety"):
  - ``claim_output``: a stage replaces only what is its own. An existing output is
    replaced only when its manifest says it is an earlier output of the same stage, and
    never when it is, contains or lies inside one of the stage's inputs. One writer per
    output: an OS lock (``filelock``) beside it, whose holder's pid and command are shown
    to a second run. Leftovers of dead runs (``.<name>.tmp-*`` / ``.<name>.old-*``) are
    swept when the next run of the stage takes the lock.
  - ``write_manifest`` records the size and sha256 of every file and seals the manifest
    with a checksum; ``require_stage_output`` verifies them before a stage reads anything
    (``verify_output``). A deliberate change is recorded with ``workbench verify ...
    accept="why"``, never passed silently.
  - Secrets (``SECRET_KEYS``) are redacted from the recorded config and command line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import glob
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from workbench.errors import OutputBusyError, OutputRefusedError, StageInputError

log = logging.getLogger("workbench.manifest")

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: per-file sizes ("files") and a checksum of the manifest ("seal")

# Config keys whose values are secrets: never written to a manifest, log, report or export.
SECRET_KEYS = ("key_seed",)
REDACTED = "<secret>"

# Files up to this size are re-hashed in full when read; larger ones are checked by size and
# a hash of three 1 MiB samples (start, middle, end). WORKBENCH_VERIFY=full hashes everything.
FULL_HASH_BYTES = 64 << 20
_SAMPLE = 1 << 20

# Packages whose versions change results; recorded when installed.
_TRACKED_PACKAGES = (
    "zh-workbench", "torch", "transformers", "tokenizers", "datasets", "pyarrow",
    "jieba", "deepspeed", "datasketch", "rensa", "opencc", "pandas", "numpy",
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
def atomic_output_dir(final: str | Path, *, stage: str | None = None, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a fresh temp dir beside `final`; on success it replaces `final` in one rename.

    On an exception the temp dir is removed and `final` (if it existed) is untouched. The
    output is claimed first (``claim_output``: ownership, inputs, lock, leftovers) unless
    this process already holds it; a stage that works long before writing claims it at its
    start. File modes follow the umask (0644 / 0755 by default), whatever the libraries
    that wrote the files chose (safetensors writes 0600).
    """
    final = Path(final)
    with claim_output(final, stage=stage, inputs=inputs):
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            _normalise_modes(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if final.exists() and exchange_paths(tmp, final):
            # One atomic step (Linux renameat2 RENAME_EXCHANGE): `final` is the new output and
            # `tmp` now holds the old one, which is deleted (a kill here leaves a `.tmp-*`
            # leftover that the next start sweeps; `final` is complete throughout).
            shutil.rmtree(tmp, ignore_errors=True)
            return
        old = None
        if final.exists():
            # No atomic exchange on this system / file system. rename() cannot replace a
            # non-empty directory: move the old one aside first, so there is never a moment
            # when `final` holds a mix of old and new files. A crash between the two renames
            # leaves `.old-*` complete; the next run's sweep puts it back before anything else.
            old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            final.rename(old)
        try:
            tmp.rename(final)
        except BaseException:
            if old is not None and not final.exists():
                old.rename(final)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def exchange_paths(a: str | Path, b: str | Path) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(..., RENAME_EXCHANGE)``, glibc
    >= 2.28). False when the system or file system cannot (then the caller falls back to two
    renames); other errors raise OSError."""
    import ctypes

    if not sys.platform.startswith("linux") or os.environ.get("WORKBENCH_NO_EXCHANGE"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def sibling_temp_dir(final: str | Path) -> Path:
    """A new, empty directory beside `final` named like its temp dirs
    (`.<name>.tmp-<pid>-<id>`): if the process dies before it is removed, the next run of the
    stage (or `workbench clean`) sweeps it as a leftover; the caller removes it otherwise."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@contextlib.contextmanager
def scratch_dir(final: str | Path) -> Iterator[Path]:
    """A work directory beside `final` named like its temp dirs (`.<name>.tmp-<pid>-<id>`),
    removed at the end; a killed run's is swept at the next start like any leftover (a
    directory in the system temp dir would stay there forever)."""
    work = sibling_temp_dir(final)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normalise_modes(directory: Path) -> None:
    """Files 0666 & ~umask, directories 0777 & ~umask (0644 / 0755 with the usual umask)."""
    mask = _umask()
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o777 & ~mask)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, 0o666 & ~mask)
    os.chmod(directory, 0o777 & ~mask)


# --------------------------------------------------------------------------- ownership
def resolved_path(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path)))).resolve()


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def config_inputs(cfg: Any) -> list[Path]:
    """Every existing path named in a stage config (input, model, train, lexicon paths,
    key files, ...) except the output keys: what the stage reads, and so what its output
    must not be, contain or lie inside. Globs are expanded."""
    data = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else dict(cfg)
    found: list[Path] = []

    def walk(value: Any, key: str) -> None:
        if key in ("output", "run", "key_file"):
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif (isinstance(value, str) and len(value) < 4096 and "\n" not in value
              and any(c.isalnum() for c in value)):  # not "-", ".", "," ...
            try:
                if any(c in value for c in "*?["):
                    found.extend(Path(p) for p in glob.glob(os.path.expanduser(value), recursive=True))
                elif os.path.exists(os.path.expanduser(value)):
                    found.append(Path(value))
            except (OSError, ValueError):
                pass

    walk(data, "")
    return found


def check_output_target(final: str | Path, *, stage: str | None, inputs: Iterable[str | Path] = (),
                        stages: tuple[str, ...] | None = None, is_own: Callable[[Path], bool] | None = None) -> None:
    """Refuse to write `final` when that would destroy something that is not this stage's.

    - `final` must not be, contain or lie inside any of `inputs`;
    - an existing `final` must be an empty directory or an earlier output of `stage` (or
      of one of `stages`): its manifest.json says so (or `is_own(final)`, for directories
      without a manifest such as pretrain's checkpoints).
    Raises OutputRefusedError naming both paths and the fix."""
    final = Path(final)
    target = resolved_path(final)
    for inp in inputs:
        src = resolved_path(inp)
        if target == src:
            raise OutputRefusedError(f"output {final} is also an input of this stage; writing it would destroy the "
                                     "input.\n  fix: choose another output= (e.g. a new directory under runs/)")
        if _within(src, target):
            raise OutputRefusedError(f"output {final} contains the input {inp}; replacing the output would delete it."
                                     "\n  fix: choose an output= directory that holds none of the stage's inputs")
        if _within(target, src):
            raise OutputRefusedError(f"output {final} lies inside the input {inp}; writing it would change the input."
                                     "\n  fix: choose an output= directory outside the input")
    if not (final.exists() or final.is_symlink()):
        return
    wanted = stages or ((stage,) if stage else ())
    if is_own is not None and not final.is_symlink() and final.is_file():  # a file output (predictions, key)
        if final.stat().st_size == 0 or is_own(final):
            return
        raise OutputRefusedError(
            f"output file {final} already exists and was not written by `{stage}`; refusing to overwrite it.\n"
            "  fix: choose another output file, or move that one away yourself")
    if final.is_symlink() or not final.is_dir():
        raise OutputRefusedError(f"output {final} exists and is {'a symlink' if final.is_symlink() else 'a file'}, "
                                 "not an earlier output directory of this stage; refusing to replace it.\n"
                                 "  fix: choose another output=, or move it away yourself")
    try:
        entries = os.listdir(final)
    except OSError as e:
        raise OutputRefusedError(f"output {final} cannot be read ({e.strerror}); refusing to replace it") from None
    if not entries:
        return
    if is_own is not None:
        if is_own(final):
            return
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputRefusedError(
            f"{final} already exists and was not written by `{stage}` ({shown}); refusing to replace or write into it."
            "\n  fix: choose another directory, or move that one away yourself")
    try:
        manifest = read_manifest(final)
    except StageInputError:
        manifest = None
    owner = (manifest or {}).get("stage") if isinstance(manifest, dict) else None
    if owner is None or (wanted and owner not in wanted):
        what = f"a `{owner}` output" if owner else f"not a workbench output (no {MANIFEST})"
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise OutputRefusedError(
            f"output {final} already exists and is {what}, not an earlier `{'/'.join(wanted) or '?'}` output; "
            f"replacing it would delete what it holds ({shown}).\n"
            "  fix: choose another output= (the stage creates it), or move that directory away yourself")


# Outputs this process holds (claim_output is re-entrant: an inner claim of a held output is a no-op).
_HELD: set[Path] = set()


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def redacted_command(argv: list[str] | None = None) -> str:
    """The command line with the values of SECRET_KEYS replaced (`key_seed=<secret>`)."""
    argv = list(sys.argv if argv is None else argv)
    out = [Path(argv[0]).name] if argv else []
    # `key_seed=1`, `desensitise.key_seed = 1`, ` key_seed=1` all set the seed (the override
    # parser strips the key), so all are redacted.
    pattern = re.compile(r"^\s*((?:[\w-]+\s*\.\s*)*(?:%s))\s*=.*$" % "|".join(map(re.escape, SECRET_KEYS)), re.S)
    for a in argv[1:]:
        out.append(pattern.sub(lambda m: f"{m.group(1).strip()}={REDACTED}", a))
    return " ".join(out)


def _lock_paths(final: Path) -> tuple[Path, Path]:
    return final.parent / f".{final.name}.lock", final.parent / f".{final.name}.lock.json"


def lock_holder(final: str | Path) -> dict[str, Any] | None:
    """What the lock beside `final` says about its holder (pid, command, started), if anything."""
    info = _lock_paths(Path(final))[1]
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def leftovers(final: str | Path) -> list[Path]:
    """Temp / old directories of earlier runs beside `final` (`.<name>.tmp-*`, `.<name>.old-*`)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.iterdir()
                  if p.name.startswith((f".{final.name}.tmp-", f".{final.name}.old-")))


def _sweep(final: Path) -> None:
    """Remove the leftovers of dead runs; only called with the output's lock held, so no
    live writer can own them. A run killed between moving the old output aside and renaming
    the new one in leaves no `final`: the old output (`.old-*`, complete) is put back first."""
    junk = leftovers(final)
    if not junk:
        return
    if not (final.exists() or final.is_symlink()):
        olds = sorted((p for p in junk if f".{final.name}.old-" in p.name and p.is_dir()
                       and (p / MANIFEST).is_file()), key=lambda p: p.stat().st_mtime)
        if olds:
            olds[-1].rename(final)
            junk.remove(olds[-1])
            log.warning("restored %s from %s (a run was killed while swapping it)", final, olds[-1].name)
        if not junk:
            return
    size = sum(tree_size(p) for p in junk)
    for p in junk:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    log.warning("swept %d leftover(s) of interrupted runs beside %s (%.1f MB)", len(junk), final, size / 1e6)


def tree_size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


@contextlib.contextmanager
def claim_output(final: str | Path, *, stage: str | None, inputs: Iterable[str | Path] = (),
                 stages: tuple[str, ...] | None = None, is_own: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Make this process the one writer of `final` for the duration of the block.

    Checks ownership (``check_output_target``), takes the OS lock beside `final` (a second
    run fails at once with OutputBusyError naming the holder's pid and command), then sweeps
    the leftovers of dead runs. Re-entrant within a process; under a distributed launcher
    only rank 0 locks (the other ranks write nothing)."""
    final = Path(final)
    key = resolved_path(final)
    if key in _HELD:
        yield final
        return
    inputs = list(inputs)
    check_output_target(final, stage=stage, inputs=inputs, stages=stages, is_own=is_own)
    if _rank() != 0:
        yield final
        return
    _HELD.add(key)
    try:
        with hold_lock(final, stage):
            # Re-check under the lock: another run may have replaced `final` meanwhile.
            check_output_target(final, stage=stage, inputs=inputs, stages=stages, is_own=is_own)
            _sweep(final)
            yield final
    finally:
        _HELD.discard(key)


@contextlib.contextmanager
def hold_lock(final: str | Path, stage: str | None) -> Iterator[None]:
    """The OS lock beside `final` (`.<name>.lock`, via filelock) for the block, with the
    holder's pid, host, stage and redacted command in `.<name>.lock.json`; a second holder
    fails at once with OutputBusyError naming the first. Released when the process dies."""
    import filelock

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock_file, info_file = _lock_paths(final)
    lock = filelock.FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        holder = lock_holder(final) or {}
        raise OutputBusyError(
            f"output {final} is being written by another run: pid {holder.get('pid', '?')}"
            f"{' on ' + holder['host'] if holder.get('host') else ''}, started {holder.get('started', '?')}, "
            f"command: {holder.get('command', '?')}\n"
            "  fix: wait for that run to finish (or stop it), or choose another output=") from None
    try:
        tmp_info = info_file.with_name(info_file.name + f".{os.getpid()}")
        tmp_info.write_text(json.dumps({
            "pid": os.getpid(), "host": platform.node(), "stage": stage, "command": redacted_command(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}) + "\n", encoding="utf-8")
        tmp_info.replace(info_file)
        yield
    finally:
        info_file.unlink(missing_ok=True)
        lock.release()


def owns_output(stage: str, *, extra_inputs: Callable[[Any], Iterable[str | Path]] | None = None):
    """Decorator for a stage's ``run(cfg, ...)``: the stage claims ``cfg.output_path()``
    (``claim_output``) before it reads or computes anything, with every path named in its
    config (``config_inputs``) plus ``extra_inputs(cfg)`` as the inputs it must not destroy."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(cfg, *args, **kwargs):
            inputs = [*config_inputs(cfg), *(extra_inputs(cfg) if extra_inputs else ())]
            with claim_output(cfg.output_path(), stage=stage, inputs=inputs):
                return fn(cfg, *args, **kwargs)
        return run
    return wrap


def load_stage_dataset(directory: str | Path, *, needed_by: str, manifest: dict[str, Any] | None = None,
                       subdir: str = "dataset"):
    """``datasets.load_from_disk(directory/subdir)`` with a clear error instead of a
    traceback when the Arrow files cannot be read (truncated, replaced, wrong format), and
    its row counts checked against `manifest` (the one ``require_stage_output`` returned;
    read here when not given)."""
    import datasets

    path = Path(directory) / subdir
    try:
        dd = datasets.load_from_disk(str(path))
    except Exception as e:  # pyarrow.ArrowInvalid, OSError, FileNotFoundError, json errors ...
        raise StageInputError(
            f"{needed_by}: cannot read the dataset in {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            f"\n  fix: re-run the stage that wrote {directory} (the files are damaged or incomplete)") from None
    # Row counts against the writer's: prepare records documents per split, segment blocks.
    manifest = manifest if manifest is not None else (read_manifest(directory) or {})
    counts = manifest.get("counts") or {}
    recorded = counts.get("splits") or counts.get("blocks")
    if isinstance(recorded, dict) and hasattr(dd, "items"):
        wrong = [f"{name}: {len(d):,} rows, the manifest records {recorded[name]:,}"
                 for name, d in dd.items() if isinstance(recorded.get(name), int) and len(d) != recorded[name]]
        wrong += [f"{name}: missing" for name in recorded if name not in dd]
        if wrong and manifest.get("accepted_changes"):  # changed on purpose, recorded: say so, go on
            log.warning("%s: %s: %s (accepted change)", needed_by, path, "; ".join(wrong))
        elif wrong:
            raise StageInputError(f"{needed_by}: the dataset in {path} does not have the rows its manifest records ("
                                  + "; ".join(wrong) + f")\n  fix: re-run the stage that wrote {directory}")
    return dd


def verify_model_dir(model: str | Path | None, *, needed_by: str) -> dict[str, Any] | None:
    """Verify a model directory written by a workbench stage against its manifest (a plain
    save_pretrained directory without one, or a hub id, is left to the loader). Returns the
    manifest, if any."""
    if not model or not Path(model).is_dir():
        return None
    manifest = read_manifest(model)
    if manifest is None:
        return None
    return verify_output(model, manifest, needed_by=needed_by)


def _sample_sha256(path: Path, size: int) -> str:
    """sha256 of the size and three 1 MiB samples (start, middle, end): a cheap check that a
    large file is the one recorded (truncation and most replacements change it)."""
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in (0, max(size // 2 - _SAMPLE // 2, 0), max(size - _SAMPLE, 0)):
            f.seek(offset)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def file_records(directory: Path, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"size", "sha256"[, "sample_sha256"]}} of every file under `directory`."""
    out = {}
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and rel not in exclude:
            size = p.stat().st_size
            rec: dict[str, Any] = {"size": size, "sha256": sha256_file(p)}
            if size > FULL_HASH_BYTES:
                rec["sample_sha256"] = _sample_sha256(p, size)
            out[rel] = rec
    return out


def redact(value: Any) -> Any:
    """A copy of a config dict with the values of SECRET_KEYS (at any depth) replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if k in SECRET_KEYS and v is not None and v != REDACTED and not str(v).startswith("<")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def seal(manifest: dict[str, Any]) -> str:
    """Checksum of a manifest's content (without its own "seal")."""
    body = {k: v for k, v in manifest.items() if k != "seal"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def dump_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    manifest["seal"] = seal(manifest)
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
                                            encoding="utf-8")


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

    `files` records the size and sha256 of every file already in `directory` (what readers
    verify); `outputs` the sha256 of every file except names in `hash_exclude` (files that
    legitimately differ between identical runs), for comparing runs.
    """
    files = file_records(directory)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "stage": stage,
        "created": _dt.datetime.fromtimestamp(finished, _dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(finished - started, 3),
        "seed": seed,
        "config": redact(config),
        "inputs": inputs,
        "counts": counts,
        "outputs": {rel: rec["sha256"] for rel, rec in files.items() if rel not in hash_exclude},
        "files": files,
        "versions": package_versions(),
        "command": redacted_command(),
    }
    if extra:
        manifest.update(extra)
    dump_manifest(directory, manifest)
    return manifest


def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise StageInputError(f"{path}: not valid JSON ({e}); re-run the stage that wrote {directory}") from None


def require_stage_output(directory: str | Path, expected: str | tuple[str, ...], *, needed_by: str,
                         verify: bool = True) -> dict[str, Any]:
    """The manifest of `directory`, which must be a finished output of stage `expected`
    whose files are the ones its manifest records (``verify_output``).

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
    if verify:
        verify_output(directory, manifest, needed_by=needed_by)
    return manifest


def output_problems(directory: str | Path, manifest: dict[str, Any], *, full: bool | None = None) -> list[str]:
    """What in `directory` differs from what its manifest records (empty: it verifies).

    Checks the manifest's seal (an edited manifest), that every recorded file is there with
    its size, and its sha256 (files up to FULL_HASH_BYTES, or all with `full` /
    WORKBENCH_VERIFY=full; larger ones by three sampled MiB). Manifests from before
    version 2 have no sizes or seal: their recorded hashes are checked."""
    directory = Path(directory)
    if full is None:
        full = os.environ.get("WORKBENCH_VERIFY", "").lower() == "full"
    problems = []
    if "seal" in manifest and manifest["seal"] != seal(manifest):
        problems.append(f"{MANIFEST} was edited after the stage wrote it (its checksum does not match)")
    files = manifest.get("files")
    if files is None:  # manifest_version 1: hashes only
        files = {rel: {"sha256": h} for rel, h in (manifest.get("outputs") or {}).items()}
    for rel, rec in files.items():
        p = directory / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = p.stat().st_size
        if "size" in rec and size != rec["size"]:
            problems.append(f"{rel}: {size:,} bytes, the manifest records {rec['size']:,} (truncated or replaced)")
            continue
        if full or size <= FULL_HASH_BYTES or "sample_sha256" not in rec:
            if size > FULL_HASH_BYTES and not full and "size" not in rec:
                continue  # an old manifest: no cheap check for a large file
            if sha256_file(p) != rec["sha256"]:
                problems.append(f"{rel}: content differs from the manifest's sha256 (changed or replaced)")
        elif _sample_sha256(p, size) != rec["sample_sha256"]:
            problems.append(f"{rel}: content differs from the manifest's sampled hash (changed or replaced)")
    return problems


def verify_output(directory: str | Path, manifest: dict[str, Any] | None = None, *, needed_by: str) -> dict[str, Any]:
    """Raise StageInputError unless `directory` holds exactly what its manifest records.
    Changes accepted with `workbench verify accept=...` are logged each time they are read."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest is None:
        raise StageInputError(f"{needed_by}: {directory} has no {MANIFEST}; re-run the stage that writes it")
    problems = output_problems(directory, manifest)
    if problems:
        shown = "\n".join(f"    - {p}" for p in problems[:10]) + (f"\n    - ... {len(problems) - 10} more"
                                                                     if len(problems) > 10 else "")
        raise StageInputError(
            f"{needed_by}: {directory} does not match its {MANIFEST} (written by `workbench {manifest.get('stage')}` "
            f"at {manifest.get('created')}):\n{shown}\n"
            f"  fix: re-run `workbench {manifest.get('stage')}` to rebuild {directory}; if you changed it on purpose, "
            f"record that with `workbench verify input={directory} accept=\"<why>\"`")
    for change in manifest.get("accepted_changes") or []:
        log.warning("%s: %s holds changes accepted on %s: %s (%s)", needed_by, directory, change.get("when"),
                    change.get("reason"), ", ".join(change.get("changed", [])[:5]) or "manifest")
    if manifest.get("manifest_version", 0) < 2:
        log.warning("%s: %s was written by an older zh-workbench (no file sizes / seal): checked only its recorded "
                    "hashes; re-run `workbench %s` to get full verification", needed_by, directory, manifest.get("stage"))
    return manifest


def accept_changes(directory: str | Path, reason: str) -> dict[str, Any]:
    """Record that `directory` was changed on purpose: re-hash its files, list what changed
    in `accepted_changes` (when, who, why, which files), and re-seal the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise StageInputError(f"verify: {directory} has no {MANIFEST}; only a workbench stage output can be accepted")
    old_files = manifest.get("files") or {rel: {"sha256": h} for rel, h in (manifest.get("outputs") or {}).items()}
    new_files = file_records(directory)  # every file hashed once, in full
    changed = sorted(rel for rel in set(old_files) | set(new_files)
                     if old_files.get(rel, {}).get("sha256") != new_files.get(rel, {}).get("sha256"))
    problems = ([f"{MANIFEST} was edited after the stage wrote it (its checksum does not match)"]
                if "seal" in manifest and manifest["seal"] != seal(manifest) else [])
    problems += [f"{rel}: {'missing' if rel not in new_files else 'added' if rel not in old_files else 'changed'}"
                 for rel in changed]
    entry = {"when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "user": os.environ.get("USER") or os.environ.get("USERNAME") or str(os.getuid()),
             "reason": reason, "changed": changed, "problems": problems}
    manifest["accepted_changes"] = [*(manifest.get("accepted_changes") or []), entry]
    manifest["files"] = new_files
    hashed = set(manifest.get("outputs") or new_files) | (set(new_files) - set(old_files))
    manifest["outputs"] = {rel: rec["sha256"] for rel, rec in new_files.items() if rel in hashed}
    manifest["manifest_version"] = max(MANIFEST_VERSION, manifest.get("manifest_version", 0))
    dump_manifest(directory, manifest)
    return entry


def save_shards(dd, path: str | Path, shard_size: str) -> dict[str, list[str]]:
    """``DatasetDict.save_to_disk`` in Arrow shards of at most `shard_size` (e.g. "500MB")
    per split; the shard file names per split, in order (for the manifest). An empty split
    gets one (empty) shard: datasets writes zero shards for it, which load_from_disk cannot
    read back (datasets 5.2)."""
    from workbench.config import shard_bytes

    limit = shard_bytes(shard_size)
    dd.save_to_disk(str(path), num_shards={k: max(1, -(-d.data.nbytes // limit)) if len(d) else 1
                                           for k, d in dd.items()})
    return {k: sorted(f.name for f in (Path(path) / k).glob("data-*.arrow")) for k in dd}
