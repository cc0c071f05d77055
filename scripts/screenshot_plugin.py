"""Take the documentation screenshots of the napari-gandl plugin on the synthetic sample screen.

The analyst path, driven through the real docks (no shortcuts around the widgets):

1. File > Open Sample > napari-gandl > Synthetic screen (generated on first use);
2. Train GAN dock: preset ``cpu-tiny`` for ``--kimg`` kimg -> screenshot with losses and fakes;
3. Embed wells dock: the run's checkpoint on every well of both plates;
4. Projection and activity dock: controls = Metadata_Role positive / negative, Fit -> plate map
   coloured by On score, overlay on the site, E2 scatter, dose-response -> screenshot.

Usage (needs a display; on a headless machine wrap it in ``xvfb-run -a``)::

    OMP_NUM_THREADS=2 xvfb-run -a python scripts/screenshot_plugin.py --out docs/images --kimg 0.5

PNG files are written below 300 kB (palette-quantised when needed). Numbers seen (Z', time) are
printed at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def wait(app, cond, timeout: float) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout} s")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--run", type=Path, default=Path("/tmp/napari-gandl-shots/run"))
    ap.add_argument("--kimg", type=float, default=0.5)
    ap.add_argument("--resume", action="store_true", help="continue the run in --run up to --kimg (Resume button)")
    ap.add_argument("--train-only", action="store_true", help="stop after the training screenshot")
    ap.add_argument("--checkpoint", type=Path, default=None, help="skip training, embed with this checkpoint")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import warnings

    # The PyQt5 deprecation notice would sit on top of the canvas as a toast.
    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_gandl import _layers as L

    t_start = time.monotonic()
    viewer = napari.Viewer(show=True, title="napari-gandl")
    viewer.window.resize(1700, 1000)
    app = QApplication.instance()
    viewer.open_sample("napari-gandl", "synthetic_screen")
    pm = L.find_plate_map(viewer)
    session = pm.metadata[L.SESSION_KEY]
    print(f"sample: {len(session.index)} sites, {len(session.wells)} wells, plates {session.plates}")

    _, train_w = viewer.window.add_plugin_dock_widget("napari-gandl", "Train GAN")
    ckpt = args.checkpoint
    if ckpt is None:
        train_w.out.value = str(args.run)
        train_w._advanced["kimg"].value = args.kimg
        t0 = time.monotonic()
        latest = args.run / "checkpoints" / "latest.pt"
        if args.resume and latest.is_file():
            train_w.last_checkpoint = latest
        worker = train_w.start(resume=bool(args.resume and latest.is_file()))
        wait(app, lambda: worker is not None and not worker.is_running and train_w.start_btn.enabled, 1800)
        print(f"training {args.kimg} kimg (cpu-tiny): {time.monotonic() - t0:.1f} s, checkpoint {train_w.last_checkpoint}")
        ckpt = train_w.last_checkpoint
        for _ in range(20):
            app.processEvents()
            time.sleep(0.02)
        viewer.reset_view()
        close_toasts(viewer)
        for _ in range(10):
            app.processEvents()
        shot = viewer.screenshot(canvas_only=False, flash=False)
        print("train dock:", save_png(shot, args.out / "napari-train.png"), "bytes")
    if args.train_only:
        viewer.close()
        return 0
    viewer.window.remove_dock_widget(train_w)
    for layer in [ly for ly in viewer.layers if ly.metadata.get(L.KIND_KEY) == "fakes"]:
        viewer.layers.remove(layer)

    _, embed_w = viewer.window.add_plugin_dock_widget("napari-gandl", "Embed wells")
    embed_w.checkpoint.value = str(ckpt)
    t0 = time.monotonic()
    worker = embed_w.start()
    wait(app, lambda: worker is not None and not worker.is_running and embed_w.sites is not None, 1800)
    print(f"embedding {len(embed_w.sites)} sites: {time.monotonic() - t0:.1f} s")
    viewer.window.remove_dock_widget(embed_w)
    _, plate_w = viewer.window.add_plugin_dock_widget("napari-gandl", "Plate browser")

    _, ana_w = viewer.window.add_plugin_dock_widget("napari-gandl", "Projection and activity")
    ana_w.refresh_choices()
    scores = ana_w.fit()
    print(f"projection: {len(scores)} wells, Z' = {ana_w.z_prime:.3f}")
    comps = list(ana_w.compound.choices)
    if comps:
        ana_w.compound.value = comps[0]
        print("dose-response:", ana_w.dr_label.text())
    # show a treated well: select it in the plate map (the overlay takes its On score)
    treated = session.plate_wells()
    treated = treated[treated.get("Metadata_Role", "") == "treated"]
    if len(treated):
        L.select_well(viewer, session.plate, str(treated["Metadata_Well"].iloc[0]))
    # let the docks settle (they narrow the canvas), then fit the view to every layer
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    viewer.reset_view()
    close_toasts(viewer)
    for _ in range(10):
        app.processEvents()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    print("analysis dock:", save_png(shot, args.out / "napari-activity.png"), "bytes")
    print(f"total {time.monotonic() - t_start:.1f} s")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
