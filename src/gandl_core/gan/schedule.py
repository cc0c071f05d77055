"""When a run does what: metric ticks, SWD quality, fakes, snapshots, the time limit and stop requests.

:class:`Schedule` turns the config's kimg intervals into step counts and answers, for a finished
step, which of those events are due. :class:`StopRequest` collects the reasons to end a run early at
a step boundary: Ctrl-C or SIGTERM (a handler only sets a flag; the loop finishes the step and
writes the checkpoint) and the time limit. Nothing here touches torch except the agreement between
several processes, which all stop at the same step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass

__all__ = ["Schedule", "Due", "StopRequest"]


@dataclass(frozen=True)
class Due:
    """What happens after a step: a metrics line (``tick``), the SWD, a fakes grid, a checkpoint."""

    tick: bool = False
    quality: bool = False
    fakes: bool = False
    snapshot: bool = False
    last: bool = False


class Schedule:
    """Step counts of a run's events, from the config's kimg intervals (at least one step each)."""

    def __init__(self, config) -> None:
        self.batch = config.batch

        def steps_of(kimg: float) -> int:
            return max(1, int(round(kimg * 1000 / config.batch)))

        self.total = int(math.ceil(config.kimg * 1000 / config.batch))
        self.planned = self.total  # what progress bars show, even if a time limit ends the run sooner
        self.tick, self.snapshot, self.fakes = (steps_of(config.tick_kimg), steps_of(config.snapshot_kimg),
                                                steps_of(config.fakes_kimg))
        self.quality = steps_of(config.quality_kimg) if config.quality_kimg > 0 else 0

    def kimg(self, step: int) -> float:
        return step * self.batch / 1000.0

    def end_at(self, step: int) -> None:
        """Make ``step`` the last one (time limit or stop request)."""
        self.total = min(self.total, step)

    def due(self, step: int) -> Due:
        """Events after ``step`` steps are done. A quality step is also a tick (so the SWD is logged);
        the last step has every event."""
        last = step >= self.total
        quality = bool(self.quality) and (step % self.quality == 0 or last)
        return Due(tick=step % self.tick == 0 or last or quality, quality=quality,
                   fakes=step % self.fakes == 0 or last, snapshot=step % self.snapshot == 0 or last, last=last)


class StopRequest:
    """Ctrl-C, SIGTERM and the time limit, turned into "stop after this step".

    Use as a context manager around the loop: in the main thread it installs handlers for SIGINT
    and SIGTERM that only set :attr:`signal_name`; a second signal while the first is pending
    raises KeyboardInterrupt at once (the way out if a step hangs). The previous handlers come
    back on exit. In other threads (napari's worker) no handler is installed: closing the
    generator is how those stop.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, time_limit_s: float = 0.0) -> None:
        self.time_limit_s = float(time_limit_s)
        self.t0 = time.time()
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # asked twice: stop now, without the step's checkpoint
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def time_is_up(self) -> bool:
        return self.time_limit_s > 0 and time.time() - self.t0 >= self.time_limit_s

    def after_step(self, world: int, device) -> tuple[bool, bool]:
        """(signal, time up) after a step, agreed by every process (the max over ranks, so all stop
        at the same step). One small collective per step, only with several processes; a single
        process reads two host flags."""
        flags = (self.signal_name is not None, self.time_is_up())
        if world <= 1:
            return flags
        import torch

        from .distributed import any_rank

        t = any_rank(torch.tensor([float(flags[0]), float(flags[1])], device=device), world)
        sig, over = (bool(v) for v in t.tolist())
        if sig and self.signal_name is None:
            self.signal_name = "SIGTERM"  # another rank got it
        return sig, over
