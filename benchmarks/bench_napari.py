"""GUI responsiveness of the napari plugin: the longest event-loop stall of each analyst action.

A 50 ms ``QTimer`` ticks through the whole run; for every action (triggered from inside the
running event loop, as a click would be) the script records the largest gap between two ticks
from the trigger until the action's result is on screen (layers updated, plot drawn) plus a
short settle time. A gap of 50 ms is a perfectly idle loop; ``stall = max gap - 50 ms`` is the
time the GUI thread was busy (or waited for the CPU or the GIL) in one go. On a shared machine the
wall-clock gap grows with the load, so the GUI thread's own CPU time inside its longest gap is
recorded too (``time.thread_time``): what the gap would be on an idle machine of the same speed.
The floor row (a plain canvas refresh with nothing of the plugin running) shows what the machine
itself costs per frame.

Actions: open a real plate (BBBC022 Cell Painting sample, LoadData CSV, 520x696 uint16), open the
synthetic sample screen (2 plates), a well click, a plate switch, mark wells as C+, colour by a
text column, training (cpu-tiny, real core) until the first fakes are shown, embedding every
well, Fit, an E2-scatter click and a compound change.

Usage (headless: wrap in xvfb-run; the figures in docs/benchmarks.md)::

    OMP_NUM_THREADS=1 xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/bench_napari.py \
        --json bench_napari.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # sibling helpers, also when loaded by path
from _bench_common import cpu_model  # noqa: E402

TICK_MS = 50
PROFILE: list[str] = []  # action names (substrings) to profile on the GUI thread (--profile)
REPO = Path(__file__).resolve().parents[1]


class StallMeter:
    """Records the time of every tick of a 50 ms QTimer; ``max_gap(t0, t1)`` is the longest gap in a window."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[tuple[float, float]] = []  # (wall clock, GUI thread's CPU clock)
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.ticks.append((time.perf_counter(), time.thread_time())))
        self.timer.start()

    def max_gap(self, t0: float, t1: float) -> tuple[float, float]:
        """(longest wall-clock gap, most GUI-thread CPU time spent inside one gap) in [t0, t1]."""
        inside = [t for t in self.ticks if t0 <= t[0] <= t1]
        before = [t for t in self.ticks if t[0] < t0][-1:]
        after = [t for t in self.ticks if t[0] > t1][:1]
        pts = before + inside + after
        if len(pts) < 2:
            return t1 - t0, float("nan")
        wall = max(b[0] - a[0] for a, b in zip(pts, pts[1:]))
        cpu = max(b[1] - a[1] for a, b in zip(pts, pts[1:]))
        return wall, cpu


def run_until(cond: Callable[[], bool], timeout: float) -> None:
    """Run the Qt event loop until ``cond()`` (checked every 5 ms) or the timeout."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    t0 = time.perf_counter()
    poll = QTimer()
    poll.setInterval(5)

    def check() -> None:
        if cond() or time.perf_counter() - t0 > timeout:
            loop.quit()

    poll.timeout.connect(check)
    poll.start()
    if not cond():
        loop.exec_()
    poll.stop()
    if not cond():
        raise TimeoutError(f"not done after {timeout:.0f} s")


def measure(meter: StallMeter, name: str, trigger: Callable[[], Any], done: Callable[[], bool], *,
            timeout: float = 300.0, settle: float = 0.5, results: list) -> dict:
    """Trigger an action from inside the event loop; wait until done + settle; record the max gap."""
    from qtpy.QtCore import QTimer

    box: dict = {}

    def fire() -> None:
        box["t0"] = time.perf_counter()
        box["out"] = trigger()
        box["fired"] = True

    prof = None
    if PROFILE and any(p in name for p in PROFILE):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    QTimer.singleShot(0, fire)
    run_until(lambda: box.get("fired", False) and done(), timeout)
    t_done = time.perf_counter()
    end = t_done + settle
    run_until(lambda: time.perf_counter() >= end, settle + 5)
    if prof is not None:
        import io
        import pstats

        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(45)
        print(out.getvalue()[:9000])
    gap, cpu = meter.max_gap(box["t0"], end)
    row = {"action": name, "max_gap_s": round(gap, 3), "stall_s": round(max(gap - TICK_MS / 1000, 0), 3),
           "max_gui_cpu_s": round(cpu, 3), "duration_s": round(t_done - box["t0"], 2),
           "load1": round(os.getloadavg()[0], 1)}
    results.append(row)
    print(f"{name:52s} max gap {gap:6.3f} s, GUI CPU in it {cpu:6.3f} s (done in {row['duration_s']:6.2f} s, "
          f"load {row['load1']})", flush=True)
    return box


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bbbc022", type=Path, default=REPO.parent / "shared" / "data" / "bbbc022_cellpainting_sample"
                    / "load_data.csv", help="a LoadData CSV to open (default: the BBBC022 sample)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--kimg", type=float, default=0.05, help="training length (cpu-tiny)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", action="append", default=[], help="profile actions whose name contains this")
    args = ap.parse_args(argv)
    PROFILE.extend(args.profile)
    if not args.bbbc022.is_file():
        args.bbbc022 = REPO / "tests" / "data" / "bbbc022_crop" / "load_data.csv"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-napari-"))
    os.environ.setdefault("NAPARI_GANDL_CACHE", str(work / "cache"))

    import warnings

    warnings.filterwarnings("ignore")
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_gandl._hub import hub_of
    from napari_gandl._sample_data import sample_screen_path

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    sample_screen_path()  # generate the sample screen outside the measured window
    viewer = napari.Viewer(show=True, title="bench")
    viewer.window.resize(1600, 1000)
    app = QApplication.instance()
    meter = StallMeter()
    run_until(lambda: False or time.perf_counter() - t_start > 0, 1)
    hub = hub_of(viewer)
    _, gandl = viewer.window.add_plugin_dock_widget("napari-gandl", "GAN-DL (all steps, tabbed)")
    res: list[dict] = []
    run_until(lambda: len(meter.ticks) > 10, 30)

    def opened(prev):
        return lambda: hub.session is not None and hub.session is not prev and hub.ready and not hub.building

    prev = hub.session
    measure(meter, "open BBBC022 sample (LoadData, 5 ch uint16)", lambda: viewer.open(str(args.bbbc022),
            plugin="napari-gandl"), opened(prev), results=res)
    floor_layer = viewer.layers[0]
    measure(meter, "floor: one canvas refresh (no plugin work)", lambda: floor_layer.refresh(), lambda: True,
            results=res)
    prev = hub.session
    measure(meter, "open the synthetic sample screen (2 plates)",
            lambda: viewer.open_sample("napari-gandl", "synthetic_screen"), opened(prev), results=res)
    s = hub.session
    pm = hub.plate_map
    rows = np.flatnonzero(s.plate_mask())

    def idle() -> bool:
        return not hub.reading

    measure(meter, "well click (site read + 5 layers updated)", lambda: setattr(pm, "selected_data", {int(rows[5])}),
            idle, results=res)
    other = [p for p in s.plates if p != s.plate][0]
    measure(meter, "plate switch", lambda: gandl.plate.plate_box.setCurrentText(other), idle, results=res)
    rows = np.flatnonzero(s.plate_mask())
    pm.selected_data = {int(rows[0]), int(rows[1])}
    run_until(idle, 30)
    measure(meter, "mark 2 wells as C+", lambda: gandl.plate.mark("C+"), lambda: True, results=res)
    measure(meter, "colour wells by a text column", lambda: gandl.plate.colour_by.setCurrentText("Metadata_CellType"),
            lambda: True, results=res)
    gandl.plate.colour_by.setCurrentText("(none)")

    # training (real core, cpu-tiny) until the first fakes are on screen
    train = gandl.train
    train.out.value = str(work / "run")
    train.preset.value = "cpu-tiny"
    train._advanced["kimg"].value = args.kimg
    train.FAKES_S = 0.0
    box = measure(meter, "train: Start until the first progress", lambda: train.start(),
                  lambda: train.progress_seen > 0, results=res)
    measure(meter, "train: first fakes (layer created)", lambda: None,
            lambda: "fakes" in viewer.layers and not hub.building, results=res)
    measure(meter, "train: running to the end (progress, plot, fakes)", lambda: None,
            lambda: box["out"] is not None and box["out"].done, timeout=900, results=res)
    ckpt = train.last_checkpoint
    embed = gandl.embed
    embed.checkpoint.value = str(ckpt)
    measure(meter, f"embed all {len(s.index)} sites (worker, progress)", lambda: embed.start(),
            lambda: embed.worker is not None and embed.worker.done, timeout=900, results=res)
    ana = gandl.analysis
    ana.refresh_choices()
    ana.column.value = "Metadata_Role"
    ana.positive.value, ana.negative.value = "positive", "negative"
    box = measure(meter, "Fit (worker) + colours + E2 scatter + dose-response",
                  lambda: ana.fit(), lambda: box_done(ana), timeout=300, results=res)
    measure(meter, "E2 scatter click", lambda: ana.select_scatter_point(3), idle, results=res)
    comps = list(ana.compound.choices)
    if len(comps) > 1:
        measure(meter, "compound change (Hill fit in a worker)", lambda: setattr(ana.compound, "value", comps[1]),
                lambda: ana.dr_worker is None or ana.dr_worker.done, results=res)
    load1 = os.getloadavg()
    info = {"cpu": cpu_model(), "switch_interval_s": sys.getswitchinterval(), "cores": os.cpu_count(), "python": platform.python_version(),
            "napari": napari.__version__, "load_before": [round(x, 1) for x in load0],
            "load_after": [round(x, 1) for x in load1], "tick_ms": TICK_MS, "results": res,
            "total_s": round(time.perf_counter() - t_start, 1)}
    print(json.dumps({k: v for k, v in info.items() if k != "results"}))
    if args.json:
        args.json.write_text(json.dumps(info, indent=1))
    print("\n| action | max event-loop gap (s) | GUI-thread CPU in the longest gap (s) | done in (s) | load |\n"
          "|---|---|---|---|---|")
    for r in res:
        print(f"| {r['action']} | {r['max_gap_s']:.3f} | {r['max_gui_cpu_s']:.3f} | {r['duration_s']:.2f} | "
              f"{r['load1']} |")
    viewer.close()
    return 0


def box_done(ana: Any) -> bool:
    """Fit finished, scatter drawn and the dose-response worker (if any) done."""
    w, d = ana.worker, ana.dr_worker
    return w is not None and w.done and (d is None or d.done)


if __name__ == "__main__":
    sys.exit(main())
