"""Take the documentation screenshots of the napari-gandl plugin on the synthetic sample screen.

The analyst path, driven through the real dock (the tabbed GAN-DL dock; no shortcuts around it):

1. File > Open Sample > napari-gandl > Synthetic screen (generated on first use);
2. Train tab: preset ``cpu-tiny`` for ``--kimg`` kimg -> losses and the fakes layer;
3. Embed tab: the run's checkpoint on every well of both plates;
4. Analyse tab: controls = Metadata_Role positive / negative, Fit -> plate map coloured by On score,
   E2 scatter, dose-response of the first compound, a treated well selected;
5. Plate tab: wells coloured by role, two wells selected.

Each view is taken at 1920x1080 and at 1366x768 (a laptop screen): ``napari-<view>-<width>.png``.

Usage (needs a display; on a headless machine wrap it in xvfb-run with a 1920x1080 screen)::

    OMP_NUM_THREADS=2 xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/screenshot_plugin.py --out docs/images

PNG files are written below 300 kB (palette-quantised when needed). Numbers seen (Z', time) are
printed at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SIZES = [(1920, 1080), (1366, 768)]


def wait(app, cond, timeout: float) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout} s")


def settle(app, seconds: float = 0.6) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        time.sleep(0.02)


def close_toasts(viewer) -> None:
    """Close notification toasts (e.g. napari's PyQt5 deprecation notice) that cover the canvas."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def save_png(img, path: Path, max_bytes: int = 300_000) -> int:
    """Save an RGBA screenshot as PNG; quantise to 256 colours when it would exceed ``max_bytes``."""
    from PIL import Image

    im = Image.fromarray(img).convert("RGB")
    im.save(path, optimize=True)
    if path.stat().st_size > max_bytes:
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    scale = 0.9
    while path.stat().st_size > max_bytes and scale > 0.4:
        small = im.resize((int(im.width * scale), int(im.height * scale)), Image.LANCZOS)
        small.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        scale -= 0.1
    return path.stat().st_size


def shoot(viewer, app, out: Path, view: str, tab: int, gandl) -> None:
    """The window at each size with the GAN-DL dock on ``tab``."""
    win = viewer.window._qt_window
    for w, h in SIZES:
        win.showNormal()
        win.resize(w, h)
        gandl.tabs.setCurrentIndex(tab)
        settle(app)
        viewer.reset_view()
        close_toasts(viewer)
        settle(app, 0.4)
        shot = viewer.screenshot(canvas_only=False, flash=False)
        name = out / f"napari-{view}-{w}.png"
        print(f"{name.name}: {shot.shape[1]}x{shot.shape[0]}, {save_png(shot, name)} bytes")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--run", type=Path, default=Path("/tmp/napari-gandl-shots/run"))
    ap.add_argument("--kimg", type=float, default=0.2)
    ap.add_argument("--checkpoint", type=Path, default=None, help="skip training, embed with this checkpoint")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import warnings

    # The PyQt5 deprecation notice would sit on top of the canvas as a toast.
    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    import numpy as np
    from qtpy.QtWidgets import QApplication

    from napari_gandl._hub import hub_of

    t_start = time.monotonic()
    viewer = napari.Viewer(show=True, title="napari-gandl")
    viewer.window._qt_window.resize(*SIZES[0])
    app = QApplication.instance()
    hub = hub_of(viewer)
    viewer.open_sample("napari-gandl", "synthetic_screen")
    wait(app, lambda: hub.ready and hub.session is not None and not hub.building, 600)
    session = hub.session
    print(f"sample: {len(session.index)} sites, {len(session.wells)} wells, plates {session.plates}")
    _, gandl = viewer.window.add_plugin_dock_widget("napari-gandl", "GAN-DL (all steps, tabbed)")

    ckpt = args.checkpoint
    if ckpt is None:
        train = gandl.train
        gandl.tabs.setCurrentIndex(1)
        train.out.value = str(args.run)
        train.preset.value = "cpu-tiny"
        train._advanced["kimg"].value = args.kimg
        train.FAKES_S = 0.5
        t0 = time.monotonic()
        worker = train.start(resume=(args.run / "checkpoints" / "latest.pt").is_file())
        wait(app, lambda: worker is not None and worker.done, 3600)
        wait(app, lambda: not hub.building, 60)
        print(f"training to {args.kimg} kimg (cpu-tiny): {time.monotonic() - t0:.1f} s, checkpoint "
              f"{train.last_checkpoint}")
        ckpt = train.last_checkpoint
        shoot(viewer, app, args.out, "train", 1, gandl)

    embed = gandl.embed
    embed.checkpoint.value = str(ckpt)
    t0 = time.monotonic()
    worker = embed.start()
    wait(app, lambda: worker is not None and worker.done, 3600)
    print(f"embedding {len(embed.sites)} sites: {time.monotonic() - t0:.1f} s")

    ana = gandl.analysis
    ana.refresh_choices()
    ana.column.value = "Metadata_Role"
    ana.positive.value, ana.negative.value = "positive", "negative"
    worker = ana.fit()
    wait(app, lambda: worker.done and (ana.dr_worker is None or ana.dr_worker.done), 600)
    print(f"projection: {len(ana.scores)} wells, {ana.z_label.text()}")
    comps = list(ana.compound.choices)
    if comps:
        ana.compound.value = comps[0]
        wait(app, lambda: ana.dr_worker is None or ana.dr_worker.done, 120)
        print("dose-response:", ana.dr_label.text())
    treated = session.plate_wells()
    treated = treated[treated.get("Metadata_Role", "") == "treated"]
    rows = ana._scatter_rows
    if len(treated) and rows is not None:
        well = str(treated["Metadata_Well"].iloc[len(treated) // 2])
        hit = np.flatnonzero((rows["Metadata_Plate"] == session.plate).to_numpy() & (rows["Metadata_Well"] == well).to_numpy())
        if hit.size:
            ana.select_scatter_point(int(hit[0]))
            wait(app, lambda: not hub.reading, 60)
    shoot(viewer, app, args.out, "analyse", 3, gandl)

    from napari_gandl._session import Colouring

    session.set_colouring(Colouring("Metadata_Role"))
    pm = hub.plate_map
    pos = session.rows_of(list(zip(session.plate_wells()["Metadata_Plate"], session.plate_wells()["Metadata_Well"])))
    pm.selected_data = {int(pos[0]), int(pos[1])}
    wait(app, lambda: not hub.reading, 60)
    shoot(viewer, app, args.out, "plate", 0, gandl)
    print(f"total {time.monotonic() - t_start:.1f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
