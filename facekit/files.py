"""Writing files without loss: unique temporary names, atomic replacement, facekit's cache.

Every file facekit writes that someone may read at the same time (a run's
``state.json``, the shared index caches that the workers of a cluster write at
once) goes through a temporary file of its own in the target's folder and a
rename, so a reader sees the old file or the new one, whole.  Light: the
standard library only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """facekit's cache folder: $FACEKIT_CACHE, else $XDG_CACHE_HOME/facekit, else ~/.cache/facekit."""
    if os.environ.get("FACEKIT_CACHE"):
        return Path(os.environ["FACEKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "facekit"


@contextlib.contextmanager
def unique_temporary(target: str | Path):
    """A temporary path beside ``target`` that no other process uses; removed unless the
    block moved it into place (``os.replace(temporary, target)``)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a unique temporary file and a rename: readers,
    and other processes writing the same file, see the old or the new file whole."""
    with unique_temporary(path) as temporary:
        temporary.write_text(text)
        os.replace(temporary, path)
