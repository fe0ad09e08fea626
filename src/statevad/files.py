"""Crash-safe file writing: every output is written to a hidden temporary sibling and renamed into place.

A crash or a kill therefore never leaves a half-written file under a real name that a later run could take
for a finished one. Temporary names carry the writer's process id (``.<stem>.p<pid>-<random>.tmp<suffix>``)
so that :func:`remove_stale_temps` deletes only the leftovers of writers that are dead, never the files of a
run still writing beside this one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

_TEMP_PID = re.compile(r"^\..*\.p(\d+)-[^.]*\.tmp")


def temp_sibling(dest: Path, suffix: str | None = None) -> tuple[int, Path]:
    """Create an empty temporary file beside ``dest`` with the usual file mode; return (fd, path).

    The name keeps ``dest``'s suffix (or ``suffix``) so that writers which pick the format from the
    extension (``np.save``, ``cv2.VideoWriter``, matplotlib) still work.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    sfx = dest.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.p{os.getpid()}-", suffix=f".tmp{sfx}", dir=dest.parent)
    chmod_default(Path(tmp))
    return fd, Path(tmp)


def chmod_default(path: Path) -> None:
    """Give a ``mkstemp`` file (always 0600) the mode plain ``open`` gives: outputs are meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it over ``dest`` only if the block succeeds."""
    dest = Path(dest)
    fd, tmp_path = temp_sibling(dest, suffix)
    os.close(fd)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(dest, json_text(obj))


def atomic_save_npy(dest: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(dest, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(array), allow_pickle=False)


def atomic_write_with(dest: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` and publish the result at ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        writer(tmp)


def json_text(obj: Any) -> str:
    """``obj`` as the JSON text :func:`atomic_write_json` writes (numpy numbers and paths allowed)."""
    return json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n"


def write_temp(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a synced temporary sibling of ``dest`` and return its path (not yet renamed).

    For writers that publish several files together: write every temp first, then ``os.replace`` them all,
    so a failure (a full disk) leaves none of them under a real name. The temp is removed if writing fails.
    """
    dest = Path(dest)
    fd, tmp = temp_sibling(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


class StreamFile:
    """A text file written line by line to a temporary sibling and renamed into place on :meth:`close`.

    :meth:`close` is :meth:`sync` (flush, fsync, close the temp: this is where a full disk shows) followed by
    :meth:`publish` (the rename), so that a writer of several files can sync them all before renaming any.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        fd, self.tmp = temp_sibling(dest)
        self.fh: IO[str] = os.fdopen(fd, "w", encoding="utf-8", newline="")

    def sync(self) -> None:
        if not self.fh.closed:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            finally:
                self.fh.close()

    def publish(self) -> None:
        os.replace(self.tmp, self.dest)

    def close(self) -> None:
        self.sync()
        self.publish()

    def abort(self) -> None:
        try:
            self.fh.close()
        except OSError:  # the buffered rest could not be written (full disk): the temp is dropped anyway
            pass
        self.tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: Path, stem: str | None = None) -> None:
    """Delete temporary files (of ``stem``'s writers, or of all) that dead writers left in ``folder``.

    They are never read as outputs; this only reclaims space. A temp whose writer is still alive (another
    run in the same folder) is kept; one without a process id in its name predates that naming and is
    deleted.
    """
    if not folder.is_dir():
        return
    for tmp in folder.glob(f".{stem}.*.tmp*" if stem else ".*.tmp*"):
        m = _TEMP_PID.match(tmp.name)
        writing = m is not None and (int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))))
        if tmp.is_file() and not writing:
            tmp.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
