"""jieba tokenizers whose dictionary cache lives in a private directory.

jieba keeps its prefix dictionary (~9 MB) in ``jieba.cache`` / ``jieba.u<md5>.cache`` under
``tempfile.gettempdir()`` by default and ``marshal``-loads any file of that name it finds
there. In a shared /tmp another user can plant that file first, and every jieba run then
loads their data (and trusts it as the dictionary). So every tokenizer the workbench builds
goes through ``new_jieba_tokenizer()``, which points its ``tmp_dir`` at

    $WORKBENCH_CACHE_DIR/jieba            (when set), else
    $XDG_CACHE_HOME/zh-workbench/jieba    (XDG_CACHE_HOME defaults to ~/.cache)

created with mode 0700. A directory there that is a symlink, is not ours, or is group- or
world-writable is not used (a warning says why): the cache then goes to a fresh private
directory (``mkdtemp``, 0700) that is removed when the process exits, so each run builds
its dictionary once more (~1 s) instead of reading a file others could have written.
jieba's global tokenizer ``jieba.dt`` (behind ``jieba.lcut`` and ``jieba.posseg``) gets the
same directory the first time, so code beside the workbench stays off /tmp too.
rjieba (jieba-rs) compiles its dictionary in and writes no cache.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("workbench.segment")

_warned: set[str] = set()


def cache_root() -> Path:
    """$WORKBENCH_CACHE_DIR, else $XDG_CACHE_HOME/zh-workbench (~/.cache/zh-workbench)."""
    root = os.environ.get("WORKBENCH_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "zh-workbench"


def _unsafe(path: Path) -> str | None:
    """Why `path` must not hold a cache that gets unmarshalled, or None when it is safe:
    a real directory of ours that nobody else may write to."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to the current user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def jieba_cache_dir() -> Path | None:
    """The private jieba cache directory (created 0700), or None when it cannot be used safely."""
    d = cache_root() / "jieba"
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
        why = _unsafe(d)
    except OSError as e:
        why = f"it cannot be created ({e.strerror or e})"
    if why is None:
        return d
    if str(d) not in _warned:
        _warned.add(str(d))
        log.warning("jieba cache dir %s is not used: %s. The cache goes to a private temporary directory "
                    "removed at exit instead (the dictionary is built again each run, ~1 s); fix: remove %s, or "
                    "point WORKBENCH_CACHE_DIR at a directory of yours (created with mode 0700)", d, why, d)
    return None


_fallback_dir: str | None = None


def _process_private_dir() -> str:
    """A 0700 directory of this process (mkdtemp: an unguessable new name), removed at exit."""
    global _fallback_dir
    if _fallback_dir is None or not os.path.isdir(_fallback_dir):
        _fallback_dir = tempfile.mkdtemp(prefix="zh-workbench-jieba-")
        atexit.register(shutil.rmtree, _fallback_dir, True)
    return _fallback_dir


def use_private_cache(tok):
    """Point a jieba Tokenizer (not yet initialised) at the private cache; returns it."""
    d = jieba_cache_dir()
    tok.tmp_dir = str(d) if d is not None else _process_private_dir()
    return tok


def new_jieba_tokenizer(dictionary: str | None = None):
    """``jieba.Tokenizer(dictionary)`` with its cache in the private directory (and jieba's
    logging at WARNING, so building it prints nothing)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    if jieba.dt.tmp_dir is None and not jieba.dt.initialized:
        use_private_cache(jieba.dt)  # jieba.lcut / jieba.posseg.cut elsewhere in this process
    tok = jieba.Tokenizer() if dictionary is None else jieba.Tokenizer(dictionary)
    return use_private_cache(tok)
