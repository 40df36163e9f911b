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

from facekit.errors import FacekitError


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of an outside file; a file that is not text gets one sentence
    naming it as ``what`` ("The pairs file")."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FacekitError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}).") from None
    except OSError as exc:
        raise FacekitError(f"{what} '{path}' cannot be read: {exc.strerror}.") from None


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


def require_new_folder(path: str | Path, what: str, hint: str = "choose another folder") -> Path:
    """``path`` as a folder a command may create and fill: missing, or an empty folder.

    The safe-output rule: a command never writes into a folder it did not create,
    so nothing the user had there can be overwritten, mixed with or deleted.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FacekitError(f"The {what} '{path}' is a file; {hint}.")
    if path.is_dir() and any(path.iterdir()):
        raise FacekitError(f"The {what} '{path}' already exists and is not empty; facekit "
                           f"writes only into a new or empty folder: {hint}.")
    return path


def require_apart(output: str | Path, *inputs: str | Path, what: str = "output") -> None:
    """Refuse an output that is one of the inputs, inside one, or holds one."""
    out = Path(output).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if out == source or source in out.parents or out in source.parents:
            raise FacekitError(f"The {what} '{output}' and the input '{source}' overlap (one "
                               "is inside the other); write somewhere apart from the input.")
