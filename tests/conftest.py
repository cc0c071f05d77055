"""Test-wide settings: one thread per process (2-core CI), Qt via PyQt5, offscreen fallback."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("QT_API", "pyqt5")

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # trylast: runs after pytest-xvfb's pytest_configure has started Xvfb and set DISPLAY.
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        warnings.warn("No DISPLAY: Qt falls back to 'offscreen' (no OpenGL; napari layer tests may fail).")
        os.environ["QT_QPA_PLATFORM"] = "offscreen"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Folder of small real fixtures shipped with the tests (see tests/data/README.md)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only ../shared/data folder beside the checkout; tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic screen in RxRx layout, made once per test session."""
    from gandl_core.synth import make_screen

    return make_screen(tmp_path_factory.mktemp("synth") / "screen", seed=0, image_size=48)


@pytest.fixture(scope="session")
def small_index(synth_screen):
    """The first 24 sites of ``synth_screen``: plenty for a few cpu-tiny training steps. Shared by
    the test modules: do not modify it in place."""
    from gandl_core.plates import build_index

    return build_index(synth_screen).iloc[:24].reset_index(drop=True)


@pytest.fixture(scope="session")
def small_index_parquet(small_index, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_index`` as an index .parquet: CLI subprocesses (and torchrun ranks) start faster on it
    than on the whole screen."""
    path = tmp_path_factory.mktemp("small_index") / "index.parquet"
    small_index.to_parquet(path)
    return path
