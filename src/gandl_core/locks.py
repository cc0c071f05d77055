"""One writer per output: an advisory lock on a run folder or an output file.

``with output_lock(path, command="embed"):`` holds an exclusive lock for as long as the block
runs. A second writer of the same output gets :class:`OutputBusyError` naming the holder (pid,
host, command, start time) instead of silently mixing its results with the first one's.

The lock is an OS lock (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on a small file
next to the output (``<file>.lock``) or inside it (``<folder>/.gandl.lock``). The operating
system releases it when the holding process dies, however it dies, so a lock left by a killed
run never blocks the next one: the stale file is simply locked again. The holder's description
in the file is for the message only; it is never trusted to decide anything.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import GandlError

LOCK_NAME = ".gandl.lock"


class OutputBusyError(GandlError):
    """Another process is writing the same output."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file guarding ``target``: inside it for a folder, beside it for a file."""
    target = Path(target)
    if target.is_dir():
        return target / LOCK_NAME
    return target.with_name(target.name + ".lock")


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"('{info.get('command', '?')}', since {when})")


@contextmanager
def output_lock(target: str | os.PathLike, *, command: str = "gandl-core") -> Iterator[Path]:
    """Hold the exclusive writer lock of ``target`` (a run folder or an output file).

    Parameters
    ----------
    target
        The output being written. A folder is locked through ``<folder>/.gandl.lock`` (created
        with its parents if needed); a file through ``<file>.lock`` beside it.
    command
        What the holder is doing, shown to a second writer.

    Raises
    ------
    OutputBusyError
        Another live process holds the lock; the message names it and the fix.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise OutputBusyError(
                f"{target} is being written by {_holder(path)}. Wait for that run to finish (or stop it), "
                "or write to another output.")
        # The file may have been unlinked by a holder that released it between our open and lock:
        # then we locked an orphan inode and must retry on the path's current file.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        _unlock(fd)
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0) if hasattr(os, "pwrite") else os.write(fd, json.dumps(info).encode())
        yield path
    finally:
        try:
            path.unlink()
        except OSError:
            pass
        _unlock(fd)
        os.close(fd)
