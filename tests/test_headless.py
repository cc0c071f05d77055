"""gandl_core must stay headless: importing every module never pulls in napari, Qt or magicgui."""

from __future__ import annotations

import subprocess
import sys


def test_core_never_imports_gui() -> None:
    code = (
        "import importlib, pkgutil, sys, gandl_core\n"
        "mods = [m.name for m in pkgutil.walk_packages(gandl_core.__path__, 'gandl_core.')]\n"
        "mods = [m for m in mods if not m.endswith('__main__')]\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in {'napari','qtpy','PyQt5','PySide2','PySide6','magicgui','vispy'})\n"
        "print(len(mods)); print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert int(out[0]) >= 5  # the walk really imported the package's modules
    assert out[1] == "", f"gandl_core imported GUI modules: {out[1]}"


def test_cli_help_is_fast_and_lists_steps() -> None:
    code = "import sys; from gandl_core.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", "building the CLI parser imported torch: keep torch imports inside run()"
