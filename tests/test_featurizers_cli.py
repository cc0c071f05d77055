"""featurize / train-convae commands and the method registry, end to end on the synthetic screen."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from gandl_core.cli import main
from gandl_core.errors import ConfigError
from gandl_core.featurizers.registry import available_methods, describe, make_featurizer
from gandl_core.tables import read_table

WELLS = "B02,B03,C02"


def test_registry_errors():
    assert available_methods() == ["gan", "random-d", "handcrafted", "convae", "densenet-collapsed",
                                   "densenet-concat"]
    with pytest.raises(ConfigError, match="--method 'vgg'.*handcrafted"):
        make_featurizer("vgg", ["DNA"])
    with pytest.raises(ConfigError, match="does not use --weights"):
        make_featurizer("handcrafted", ["DNA"], weights="x.pth")
    with pytest.raises(ConfigError, match="--method convae needs --checkpoint.*train-convae"):
        make_featurizer("convae", ["DNA"])


@pytest.mark.parametrize("method,extra,prefix", [
    ("handcrafted", [], "HC_"),
    ("random-d", ["--preset", "cpu-tiny"], "RandD_"),
    ("densenet-concat", ["--random-weights", "--input-size", "32"], "DNx_"),
])
def test_featurize_methods(tmp_path, synth_screen, monkeypatch, method, extra, prefix):
    def no_net(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", no_net)
    out = tmp_path / "t.parquet"
    rc = main(["featurize", str(synth_screen), "-m", method, "-o", str(out), "--wells", WELLS,
               "--workers", "0", "--batch-size", "4", *extra])
    assert rc == 0
    df = read_table(out)
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    assert len(df) == 12  # 3 wells on each of the 2 plates, 2 sites each
    assert all(c.startswith(prefix) for c in feats) and np.isfinite(df[feats].to_numpy()).all()
    assert describe(out)["prefix"] == prefix
    # same command with another batch size (and for one method a loader worker) -> same table
    out2 = tmp_path / "t2.parquet"
    workers = "1" if method == "handcrafted" else "0"  # a worker process costs seconds of start-up
    assert main(["featurize", str(synth_screen), "-m", method, "-o", str(out2), "--wells", WELLS,
                 "--workers", workers, "--batch-size", "3", *extra]) == 0
    np.testing.assert_allclose(read_table(out2)[feats].to_numpy(), df[feats].to_numpy(), rtol=1e-4, atol=1e-5)


def test_handcrafted_raw_intensities_through_the_engine(tmp_path, synth_screen):
    out = tmp_path / "raw.parquet"
    assert main(["featurize", str(synth_screen), "-m", "handcrafted", "--intensity", "raw", "-o", str(out),
                 "--wells", "B02", "--workers", "0"]) == 0
    df = read_table(out)
    ident = df.attrs["gandl"]["featurizer"]
    assert ident["intensity"] == "raw"
    p99 = df[f"HC_{ident['feature_labels'].index('Intensity_p99_DNA'):03d}"]
    assert (p99 > 1.5).all()  # raw 16-bit counts, not the [0, 1] normalized scale


def test_train_convae_then_featurize(tmp_path, synth_screen, capsys):
    run = tmp_path / "cae"
    assert main(["train-convae", str(synth_screen), "-o", str(run), "--resolution", "16", "--kimg", "0.008",
                 "--batch", "4", "--width", "4"]) == 0
    assert (run / "checkpoints" / "latest.pt").is_file()
    out = tmp_path / "cae.parquet"
    assert main(["featurize", str(synth_screen), "-m", "convae", "-c", str(run), "-o", str(out),
                 "--wells", "B02", "--workers", "0"]) == 0
    df = read_table(out)
    assert df.filter(like="CAE_").shape[1] == 1024 and df.attrs["gandl"]["featurizer"]["name"] == "convae"


def test_cli_errors_name_the_option(tmp_path, synth_screen, capsys):
    assert main(["featurize", str(synth_screen), "-m", "densenet-collapsed", "-o", str(tmp_path / "x.parquet")]) == 1
    assert "--weights FILE is missing" in capsys.readouterr().err
    assert main(["featurize", str(synth_screen), "-m", "handcrafted", "--nuclear-channel", "Nuc",
                 "-o", str(tmp_path / "x.parquet")]) == 1
    assert "--nuclear-channel 'Nuc'" in capsys.readouterr().err
    assert main(["train-convae", str(synth_screen), "-o", str(tmp_path / "r"), "--resolution", "12"]) == 1
    assert "--resolution 12" in capsys.readouterr().err
