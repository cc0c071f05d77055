"""Helpers the benchmark scripts share (imported as a sibling module: each script puts its own folder
on ``sys.path`` first, so ``python benchmarks/<script>.py`` and importing a script by path both work)."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
