"""The command line as one tool (issue 14 item 4) and its output policy under faults (issue 12 items 6, 7, 10):
plain --help, one spelling of each option, exit codes, refuse-or-replace outputs, all-or-nothing folders,
a full disk."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gandl_core.cli import build_parser, main
from gandl_core.tables import write_table

REPO = Path(__file__).resolve().parents[1]


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_help_is_plain_text() -> None:
    helps = {"(top)": build_parser().format_help()} | {n: s.format_help() for n, s in _subparsers().items()}
    for name, text in helps.items():
        # RST (double backticks, 'Example::', roles, directives), unexpanded argparse %-fields, markdown bold
        for mark in ("``", "::", "%%", "%(", ":func:", ":class:", ":mod:", "**"):
            assert mark not in text, f"gandl-core {name} --help shows {mark!r}"
        assert not re.search(r"^\s*\.\. \w", text, re.M), f"gandl-core {name} --help shows an RST directive"


def test_data_and_channel_options_read_the_same_everywhere() -> None:
    """Every DATA argument names every form build_index reads (OME-Zarr, ND2/CZI/ImageXpress included),
    and every channel-list option has the same metavar."""
    seen_data = seen_channels = 0
    for name, sub in _subparsers().items():
        for a in sub._actions:
            if a.metavar == "DATA":
                seen_data += 1
                for form in ("RxRx", "LoadData", "TIFF", "OME-Zarr", "ND2/CZI", "ImageXpress", ".parquet"):
                    assert form in a.help, f"gandl-core {name}: DATA help lacks {form!r}"
            if {"--channels", "--names"} & set(a.option_strings):
                seen_channels += 1
                assert a.metavar == "A,B,...", f"gandl-core {name} {a.option_strings}: metavar {a.metavar!r}"
    assert seen_data >= 6 and seen_channels >= 6  # index, train, embed, featurize, train-convae, explain


def test_one_spelling_for_outputs_and_batch_sizes() -> None:
    for name, sub in _subparsers().items():
        flags = {s for a in sub._actions for s in a.option_strings if a.help != "==SUPPRESS=="}
        assert {"-o", "--out"} <= flags, f"{name} lacks -o/--out"
        assert "--output" not in flags and "--batch" not in flags, name
        if name in ("train", "train-convae", "embed", "featurize"):
            assert "--batch-size" in flags, name
    parser = build_parser()
    # the former spellings still work (hidden)
    assert parser.parse_args(["index", "plate", "--output", "x.parquet"]).out == "x.parquet"
    assert parser.parse_args(["train", "plate", "-o", "run", "--batch", "8"]).batch == 8
    assert parser.parse_args(["train", "plate", "-o", "run", "--batch-size", "8"]).batch == 8
    assert parser.parse_args(["train-convae", "plate", "-o", "run", "--batch", "4"]).batch == 4
    # synth and demo take OUT or -o OUT
    assert parser.parse_args(["synth", "-o", "s"]).out == "s"
    with pytest.raises(SystemExit) as bad:  # a preset that does not exist is a usage error (choices=)
        parser.parse_args(["train", "plate", "-o", "run", "--preset", "gpu-huge"])
    assert bad.value.code == 2


def test_exit_codes_user_error_1_usage_2(tmp_path, capsys) -> None:
    assert main(["profile", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "p.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.parquet" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as usage:
        main(["profile", "--no-such-option"])
    assert usage.value.code == 2


def test_demo_help_and_readme_agree_on_time() -> None:
    demo = _subparsers()["demo"].format_help()
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):][:1500]
    said = re.search(r"about (\d+) minutes", " ".join(demo.split())).group(1)
    assert f"about {said} minutes" in " ".join(quick.split()), (said, quick[:400])


# ----- outputs: refuse an existing one, replace it whole with --overwrite, never publish half ------------------

@pytest.fixture
def scores(tmp_path) -> Path:
    from gandl_core.analysis import dose_response as dr

    rng = np.random.default_rng(0)
    rows = []
    for name, (b, t) in {"good": (-1, 1), "dead": (-1, -1)}.items():
        for c in [0.01, 0.1, 1.0, 10.0, 100.0]:
            for _ in range(3):
                rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"W{len(rows):02d}", "Metadata_Treatment": name,
                             "Metadata_Concentration": c,
                             "Score": float(dr.hill(c, b, t, 1.0, 1.5)) + rng.normal(0, .1)})
    return write_table(pd.DataFrame(rows), tmp_path / "scores.parquet")


def _dose(scores, out, *extra):
    return main(["dose-response", str(scores), "--score-col", "Score", "-o", str(out), *extra])


def test_dose_response_refuses_then_replaces_whole_output(scores, tmp_path, capsys) -> None:
    out = tmp_path / "dose"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # another tool's file in the same folder
    assert _dose(scores, out, "--top", "2") == 0
    assert sorted(p.name for p in out.glob("dose_*.png")) == ["dose_dead.png", "dose_good.png"]
    capsys.readouterr()
    assert _dose(scores, out, "--top", "1") == 1  # an existing output is refused
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "dose_dead.png").is_file()
    assert _dose(scores, out, "--top", "1", "--overwrite") == 0
    # the rerun replaced the whole output: no stale plot of the first run for 'report' to pick up
    assert sorted(p.name for p in out.glob("dose_*.png")) == ["dose_good.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".gandl-stage")]


def test_dose_response_publishes_all_or_nothing(scores, tmp_path, monkeypatch) -> None:
    from gandl_core.analysis import plots

    def broken(*a, **k):
        raise RuntimeError("plotting backend failed")

    monkeypatch.setattr(plots, "dose_scatter", broken)
    out = tmp_path / "dose"
    with pytest.raises(RuntimeError):
        _dose(scores, out, "--top", "2")
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".gandl")], \
        "a failed dose-response left tables without its JSON"
    monkeypatch.undo()
    assert _dose(scores, out, "--top", "2") == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    monkeypatch.setattr(plots, "dose_scatter", broken)
    with pytest.raises(RuntimeError):
        _dose(scores, out, "--top", "1", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # the old result intact


@pytest.fixture
def profiles(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    rows = []
    for w in range(24):
        role = ["positive", "negative", "treated"][w % 3]
        f = rng.normal(size=5)
        f[0] += {"positive": 6.0, "negative": 0.0, "treated": 3.0}[role]
        rows.append({"Metadata_Plate": "P1", "Metadata_Well": f"{'ABCD'[w // 6]}{w % 6 + 1:02d}",
                     "Metadata_Role": role, **{f"GAN_{i}": v for i, v in enumerate(f)}})
    return write_table(pd.DataFrame(rows), tmp_path / "profiles.parquet")


@pytest.mark.parametrize("command, files", [
    (["evaluate", "--cv", "3"], ["evaluation.json", "confusion.png"]),
    (["project"], ["scores.parquet", "projection.json"]),
])
def test_folder_commands_refuse_existing_output(profiles, tmp_path, command, files, capsys) -> None:
    out = tmp_path / "o"
    argv = [command[0], str(profiles), *command[1:], "-o", str(out)]
    assert main(argv) == 0 and all((out / f).is_file() for f in files)
    stamp = {f: (out / f).stat().st_mtime_ns for f in files}
    capsys.readouterr()
    assert main(argv) == 1
    assert "already holds" in capsys.readouterr().err
    assert {f: (out / f).stat().st_mtime_ns for f in files} == stamp
    assert main(argv + ["--overwrite"]) == 0
    manifest = json.loads((out / f".gandl-{command[0]}.json").read_text())
    assert set(files) <= set(manifest["files"])


def test_index_report_compare_refuse_existing_output(profiles, tmp_path, test_data, capsys) -> None:
    idx = tmp_path / "index.parquet"
    assert main(["index", str(test_data / "bbbc022_crop"), "-o", str(idx)]) == 0
    capsys.readouterr()
    assert main(["index", str(test_data / "bbbc022_crop"), "-o", str(idx)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["index", str(test_data / "bbbc022_crop"), "--output", str(idx), "--overwrite"]) == 0

    ev = tmp_path / "ev"
    assert main(["evaluate", str(profiles), "--cv", "3", "-o", str(ev)]) == 0
    assert main(["report", str(ev)]) == 0
    assert main(["report", str(ev)]) == 1
    assert main(["report", str(ev), "--overwrite"]) == 0

    cmp_ = tmp_path / "cmp"
    assert main(["compare", str(profiles), "--no-map", "-o", str(cmp_)]) == 0
    assert main(["compare", str(profiles), "--no-map", "-o", str(cmp_)]) == 1
    assert main(["compare", str(profiles), "--no-map", "-o", str(cmp_), "--overwrite"]) == 0
    assert (cmp_ / "compare.json").is_file() and "compare.json" in capsys.readouterr().out


# ----- a full disk: one line, nothing half-written left behind -------------------------------------------------

def _fill_disk(monkeypatch) -> list[Path]:
    """Make every atomic write fail like a full disk after the temporary file got some bytes."""
    from contextlib import contextmanager

    from gandl_core import tables

    real = tables.atomic_write
    seen: list[Path] = []

    @contextmanager
    def full(path, suffix=".tmp", *, fsync=False):
        with real(path, suffix, fsync=fsync) as tmp:
            yield tmp
            seen.append(tmp)
            with open(tmp, "ab") as fh:
                fh.write(b"x" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(tables, "atomic_write", full)
    return seen


@pytest.mark.parametrize("command", ["index", "profile", "evaluate", "project", "dose-response", "compare"])
def test_disk_full_is_one_line_and_leaves_no_temp_file(command, profiles, scores, tmp_path, test_data,
                                                       monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    argv = {"index": ["index", str(test_data / "bbbc022_crop"), "-o", str(out / "i.parquet")],
            "profile": ["profile", str(profiles), "-o", str(out / "p.parquet")],
            "evaluate": ["evaluate", str(profiles), "--cv", "3", "-o", str(out)],
            "project": ["project", str(profiles), "-o", str(out)],
            "dose-response": ["dose-response", str(scores), "--score-col", "Score", "-o", str(out)],
            "compare": ["compare", str(profiles), "--no-map", "-o", str(out)]}[command]
    out.mkdir()
    seen = _fill_disk(monkeypatch)
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("gandl-core")]  # (progress bars aside)
    assert len(lines) == 1 and "disk is full" in lines[0] and "Traceback" not in err, err
    assert ".tmp" not in lines[0]
    assert seen, "no write was attempted"
    left = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in left if p.suffix == ".tmp" or ".gandl-stage" in str(p)], left
    assert all(not p.exists() for p in seen)


def test_disk_full_recognises_wrapped_errors() -> None:
    from gandl_core.cli import disk_full

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("writing failed") from inner
    except RuntimeError as exc:
        assert "disk is full" in disk_full(exc)
    torch_like = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                              "file data/3: file write failed")
    assert "full disk" in disk_full(torch_like)
    assert disk_full(RuntimeError("shape mismatch")) is None
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path) -> None:
    import os
    import time

    from gandl_core.tables import write_table as wt

    target = tmp_path / "t.parquet"
    stale = tmp_path / ".t.parquet.abc123.tmp"
    stale.write_bytes(b"")  # what a kill mid-write leaves
    fresh = tmp_path / ".t.parquet.def456.tmp"
    fresh.write_bytes(b"")  # a writer busy right now
    old = time.time() - 7200
    os.utime(stale, (old, old))
    wt(pd.DataFrame({"a": [1]}), target)
    assert target.is_file() and not stale.exists() and fresh.exists()


def test_non_finite_numbers_are_usage_errors(capsys) -> None:
    for argv in (["train", "plate", "-o", "run", "--lr-g", "nan"], ["train", "plate", "-o", "run", "--kimg", "inf"],
                 ["evaluate", "p.parquet", "-o", "ev", "--C", "nan"], ["demo", "--minutes=-inf"]):
        with pytest.raises(SystemExit) as bad:
            main(argv)
        assert bad.value.code == 2
        assert "is not a finite number" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only refusal")
def test_missing_device_is_one_line(tmp_path, test_data, capsys) -> None:
    for argv in (["train", str(test_data / "bbbc022_crop"), "-o", str(tmp_path / "run"), "--device", "cuda"],
                 ["featurize", str(test_data / "bbbc022_crop"), "-m", "handcrafted", "-o", str(tmp_path / "h.parquet"),
                  "--device", "cuda:1"],
                 ["embed", str(test_data / "bbbc022_crop"), "-c", "x.pt", "-o", str(tmp_path / "e.parquet"),
                  "--device", "tpu9"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("gandl-core ") and "--device" in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_report_publishes_page_and_json_together(profiles, tmp_path, monkeypatch) -> None:
    ev = tmp_path / "ev"
    assert main(["evaluate", str(profiles), "--cv", "3", "-o", str(ev)]) == 0
    _fill_disk(monkeypatch)
    assert main(["report", str(ev), "-o", str(tmp_path / "r.html")]) == 1
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gandl-stage")]


def test_second_writer_of_a_folder_is_refused(profiles, tmp_path, capsys) -> None:
    from gandl_core.locks import output_lock

    out = tmp_path / "proj"
    out.mkdir()
    with output_lock(out, command="project (another run)"):
        assert main(["project", str(profiles), "-o", str(out)]) == 1
        assert "another run" in capsys.readouterr().err
    assert not (out / "scores.parquet").exists()
    assert main(["project", str(profiles), "-o", str(out)]) == 0
