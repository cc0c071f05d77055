"""Package metadata a napari-hub / PyPI listing reads, and the script that points it at the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_classifiers_state_licence_python_os_status():
    p = _project()
    cls = p["classifiers"]
    assert "Framework :: napari" in cls
    assert "License :: OSI Approved :: BSD License" in cls and "BSD 3-Clause" in (REPO / "LICENSE").read_text()
    assert any(c.startswith("Development Status ::") for c in cls)
    assert any(c.startswith("Operating System ::") for c in cls)
    lowest = re.match(r">=\s*3\.(\d+)", p["requires-python"])
    versions = [int(c.rsplit(".", 1)[1]) for c in cls if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert lowest and versions and min(versions) == int(lowest.group(1))
    assert f"3.{sys.version_info.minor}" in [f"3.{v}" for v in versions]  # the Python tests run on is claimed


def test_extras_hold_what_the_tests_and_formats_import():
    extras = _project()["optional-dependencies"]
    names = lambda reqs: {re.split(r"[<>=!\[; ]", r, maxsplit=1)[0].lower() for r in reqs}  # noqa: E731
    assert {"ome-zarr", "pycytominer", "pytest"} <= names(extras["test"])
    assert {"bioio", "bioio-ome-tiff", "bioio-tifffile", "bioio-nd2", "bioio-czi", "bioio-imagexpress"} <= names(
        extras["formats"])
    deps = names(_project()["dependencies"])
    assert {"zarr", "copairs", "torch"} <= deps
    assert "formats" in (REPO / ".ci" / "setup").read_text()  # CI runs the bioio tests instead of skipping them


def test_set_repository_url_makes_links_absolute(tmp_path):
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    readme = (tmp_path / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images and all(not i.startswith("http") for i in images)  # relative until the repository exists
    cmd = [sys.executable, str(REPO / "scripts" / "set_repository_url.py"), "https://github.com/example/napari-gandl",
           "--root", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    new = (tmp_path / "README.md").read_text()
    after = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", new)
    assert after == ["https://raw.githubusercontent.com/example/napari-gandl/main/" + i for i in images]
    assert "(https://github.com/example/napari-gandl/blob/main/docs/training.md)" in new
    assert "](#use-with)" in new  # in-page anchors stay
    urls = tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Source Code"] == "https://github.com/example/napari-gandl"
    assert urls["Bug Tracker"].endswith("/issues") and urls["Documentation"].endswith("/tree/main/docs")
    before = (tmp_path / "pyproject.toml").read_text(), new
    r = subprocess.run(cmd, capture_output=True, text=True)  # a second run changes nothing
    assert r.returncode == 0 and r.stdout == ""
    assert ((tmp_path / "pyproject.toml").read_text(), (tmp_path / "README.md").read_text()) == before
