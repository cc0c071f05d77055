"""The run folder: one writer, metrics lines, pictures and checkpoints that survive kills and full disks.

Layout::

    RUN_DIR/config.json, normalizer.json, metrics.jsonl
    RUN_DIR/fakes/fakes-<kimg>.png, latest.png, reals.png
    RUN_DIR/checkpoints/latest.pt, ckpt-<kimg>.pt (the last ``keep``), best.pt (lowest SWD)

Guarantees:

* **One writer.** :meth:`RunFolder.open` holds :func:`gandl_core.locks.output_lock` on the folder
  for the whole run; a second ``train`` into it is refused naming the holder.
* **A loadable latest.pt, always.** A checkpoint is written once, atomically (temporary file,
  fsync, rename), as ``latest.pt``; the snapshot ``ckpt-<kimg>.pt`` and ``best.pt`` are hard links
  to that file (a copy where the file system has no links), made only after it is complete. A kill
  or a full disk at any moment leaves the previous ``latest.pt`` intact and no snapshot newer than it.
* **Full disk = one clear line** (:class:`OutOfSpaceError`, naming the file and what is kept).
* **No litter.** Temporary files of a write that was killed are removed when the next run opens
  the folder (under the lock, so never another live writer's).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import GandlError

__all__ = ["RunFolder", "OutOfSpaceError"]


class OutOfSpaceError(GandlError):
    """A file of the run could not be written: the disk (or quota) is full, or the write failed."""


_TORCH_WRITE_ERRORS = ("file write failed", "PytorchStreamWriter failed", "iostream error", "unexpected pos")


def _write_failed(exc: BaseException) -> bool:
    """An OS-level write failure, or torch.save's RuntimeError for one (it reports a full disk as
    "basic_ios::clear: iostream error", "unexpected pos ..." or "... file write failed")."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO, errno.EFBIG,
                             errno.EROFS)
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITE_ERRORS)


def _no_space(exc: BaseException, folder: Path, need: int) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    try:  # torch does not say why: look at the disk (the partial file is already removed)
        return shutil.disk_usage(folder).free < max(need, 1 << 20)
    except OSError:
        return False


def _nbytes(obj) -> int:
    """Bytes of the tensors in a (nested) checkpoint payload: about what torch.save will write."""
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return obj.numel() * obj.element_size() if hasattr(obj, "element_size") else 0


class RunFolder:
    """The files of one training run (rank 0 writes; other ranks hold a RunFolder that writes nothing)."""

    def __init__(self, out: str | os.PathLike, *, writer: bool = True, keep: int = 3) -> None:
        self.out = Path(out)
        self.checkpoints, self.fakes = self.out / "checkpoints", self.out / "fakes"
        self.latest, self.best = self.checkpoints / "latest.pt", self.checkpoints / "best.pt"
        self.metrics = self.out / "metrics.jsonl"
        self.writer, self.keep = writer, int(keep)
        self.saved_step: int | None = None  # step of latest.pt as written by this run (None: not yet)
        self.failed = False  # a write failed for lack of space: nothing more is attempted

    # ---------------------------------------------------------------------------- opening
    @contextmanager
    def open(self, command: str = "train") -> Iterator["RunFolder"]:
        """Create the folder, hold its writer lock and clean what a killed writer left (rank 0 only)."""
        if not self.writer:
            yield self
            return
        from ..locks import output_lock

        existed = self.out.exists()
        with self._writing(self.out):
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            with output_lock(self.out, command=command):
                self.clean_temp_files()
                yield self  # checkpoints/ and fakes/ appear with their first file
        finally:
            if not existed and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()  # refused before writing anything: leave no empty folder behind

    def clean_temp_files(self) -> list[Path]:
        """Remove temporary files of interrupted writes (``.<name>.<random>.tmp``/``.png``) and a
        metrics line cut off mid-write. Returns what was removed."""
        from ..locks import LOCK_NAME

        removed = []
        for folder, suffixes in ((self.out, (".tmp",)), (self.checkpoints, (".tmp",)), (self.fakes, (".tmp", ".png"))):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name != LOCK_NAME and p.name.endswith(suffixes) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        if self.metrics.is_file():
            text = self.metrics.read_text()
            if text and not text.endswith("\n"):
                self.metrics.write_text(text[:text.rfind("\n") + 1])
        return removed

    def forget_after(self, step: int) -> None:
        """On resume: drop metrics lines of steps after ``step`` (work lost with the process that wrote them)."""
        if not (self.writer and self.metrics.is_file()):
            return
        keep = [ln for ln in self.metrics.read_text().splitlines(keepends=True)
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        from ..tables import write_text_atomic

        with self._writing(self.metrics):
            write_text_atomic(self.metrics, "".join(keep))

    # ----------------------------------------------------------------------------- writing
    @contextmanager
    def _writing(self, path: Path, need: int = 0) -> Iterator[None]:
        """Turn a failed write (full disk, I/O error) into one line naming the file and what is kept."""
        try:
            yield
        except (OSError, RuntimeError) as exc:
            if not _write_failed(exc):
                raise
            self.failed = True
            step = f" (step {self.saved_step})" if self.saved_step is not None else ""
            kept = (f"{self.latest}{step} is intact and --resume continues from it"
                    if self.saved_step is not None or self.latest.is_file() else "no checkpoint could be written")
            detail = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}" if str(exc) else exc.__class__.__name__
            if _no_space(exc, path.parent, need):
                raise OutOfSpaceError(f"{path}: no space left on the disk ({detail}). Free space in {path.parent} or "
                                      f"train into a folder on another disk; {kept}.") from exc
            raise OutOfSpaceError(f"{path}: could not be written ({detail}); {kept}.") from exc

    def log(self, record: dict) -> None:
        """Append one JSON line to metrics.jsonl."""
        if self.writer:
            with self._writing(self.metrics), open(self.metrics, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def write_text(self, name: str, text: str) -> None:
        """A small text file in the run folder (config.json, normalizer.json), atomically."""
        from ..tables import write_text_atomic

        if self.writer:
            with self._writing(self.out / name):
                write_text_atomic(self.out / name, text)

    def png(self, name: str, rgb) -> Path:
        """A picture in fakes/, atomically."""
        from .images import save_png

        path = self.fakes / name
        if self.writer:
            with self._writing(path):
                save_png(path, rgb)
        return path

    def save(self, payload: dict, step: int, kimg: float, *, best: bool = False) -> Path:
        """Write ``payload`` as latest.pt, then the snapshot ckpt-<kimg>.pt (and best.pt) as links to it;
        keep the newest ``keep`` snapshots. Returns the snapshot's path."""
        from ..checkpoint import save_checkpoint

        snap = self.checkpoints / f"ckpt-{kimg:09.3f}.pt"
        if not self.writer:
            return snap
        if self.keep > 0:  # room first: the snapshots that this one pushes out go before it is written
            self.prune(self.keep - 1)
        with self._writing(self.latest, need=_nbytes(payload)):
            save_checkpoint(self.latest, payload)
        self.saved_step = step
        with self._writing(snap):
            self._link(self.latest, snap)
            if best:
                self._link(self.latest, self.best)
        self.prune()
        return snap

    @staticmethod
    def _link(src: Path, dst: Path) -> None:
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise
            shutil.copyfile(src, tmp)  # no hard links on this file system
        os.replace(tmp, dst)

    def prune(self, keep: int | None = None) -> list[Path]:
        """Delete all but the newest ``keep`` (default ``self.keep``) snapshots; ``self.keep`` 0 keeps all.
        latest.pt and best.pt are separate links: their data stays."""
        keep = self.keep if keep is None else keep
        snaps = sorted(self.checkpoints.glob("ckpt-*.pt"))
        if self.keep <= 0 or len(snaps) <= keep:
            return []
        old = snaps[:len(snaps) - keep]
        for p in old:
            p.unlink(missing_ok=True)
        return old
