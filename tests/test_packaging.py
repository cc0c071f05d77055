"""Package metadata a napari-hub / PyPI listing reads, and the script that points it at the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


def test_wheel_carries_the_hub_metadata_and_the_manifest(tmp_path):
    """What PyPI and the napari hub read comes from the built wheel: its METADATA (summary, markdown
    README, classifiers, keywords, licence) and the npe2 manifest as a real file next to the code, with the
    napari.manifest entry point (editable installs hide a wheel that lacks it)."""
    import email
    import zipfile

    pytest.importorskip("setuptools")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                        "-w", str(tmp_path / "dist"), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = (tmp_path / "dist").glob("napari_gandl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(info))
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        manifest = z.read("napari_gandl/napari.yaml")
    assert meta["Name"] == "napari-gandl" and 20 < len(meta["Summary"]) < 200 and "\n" not in meta["Summary"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "## Quick start" in meta.get_payload()  # the README is the long description
    assert "Framework :: napari" in meta.get_all("Classifier")
    assert "napari" in meta["Keywords"].split(",") and "BSD" in (meta["License"] or meta["License-Expression"])
    # no invented repository address: [project.urls] appears only once scripts/set_repository_url.py ran
    assert all("example" not in u for u in (meta.get_all("Project-URL") or []))
    assert "[napari.manifest]" in entry and "napari-gandl = napari_gandl:napari.yaml" in entry
    assert manifest == (REPO / "napari.yaml").read_bytes()
    (tmp_path / "napari.yaml").write_bytes(manifest)
    npe2 = Path(sys.executable).with_name("npe2")
    if npe2.exists():
        v = subprocess.run([str(npe2), "validate", str(tmp_path / "napari.yaml")], capture_output=True, text=True)
        assert v.returncode == 0 and "valid" in v.stdout, v.stdout + v.stderr
