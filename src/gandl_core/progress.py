"""Progress reports yielded by long-running generators (training, embedding, featurizing, demo).

Long work in gandl_core is a generator: it yields :class:`Progress` objects and *returns* its
result (``return value`` inside the generator). The CLI renders the reports as a progress bar;
napari's ``thread_worker`` forwards them through ``yielded`` and delivers the return value through
``returned``. Closing the generator (``gen.close()``) stops the work cleanly between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generator, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress report.

    Parameters
    ----------
    done, total
        Work finished and work planned, in ``unit`` (e.g. kimg for training, sites for embedding).
        ``total`` may be ``None`` when unknown.
    unit
        Unit of ``done``/``total``.
    stage
        Short name of the current stage (``"train"``, ``"embed"``, ``"synth"``, ...).
    message
        One human-readable line (optional).
    metrics
        Scalar numbers worth showing or plotting (losses, augment p, sites/s, seconds left, ...).
    artifacts
        Paths or arrays produced at this step (e.g. ``{"checkpoint": Path, "fakes": ndarray}``).
    """

    done: float
    total: float | None = None
    unit: str = "steps"
    stage: str = ""
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """Fraction of the work done in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return max(0.0, min(1.0, float(self.done) / float(self.total)))


ProgressGenerator = Generator[Progress, None, T]


def run_to_end(gen: Generator[Progress, None, T]) -> T:
    """Exhaust a progress generator silently and return its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
