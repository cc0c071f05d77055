"""DenseNet-121 counterparts: torchvision-compatible names, parameter count, weights handling, no network."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from gandl_core.errors import CheckpointError, ConfigError
from gandl_core.featurizers.densenet import (DENSENET121_PARAMS, DenseNetFeaturizer, densenet121, fit_collapse,
                                             load_densenet121)

# A few names exactly as torchvision.models.densenet121().state_dict() writes them.
TORCHVISION_KEYS = [
    "features.conv0.weight",
    "features.norm0.running_var",
    "features.denseblock1.denselayer1.norm1.weight",
    "features.denseblock1.denselayer6.conv2.weight",
    "features.transition1.conv.weight",
    "features.denseblock3.denselayer24.norm2.num_batches_tracked",
    "features.transition3.norm.bias",
    "features.denseblock4.denselayer16.conv1.weight",
    "features.norm5.running_mean",
    "classifier.weight",
    "classifier.bias",
]


@pytest.fixture(scope="module")
def net():
    return densenet121(seed=0)


def test_keys_and_parameter_count_match_torchvision(net):
    keys = set(net.state_dict())
    assert all(k in keys for k in TORCHVISION_KEYS)
    assert sum(p.numel() for p in net.parameters()) == DENSENET121_PARAMS == 7_978_856
    assert net.state_dict()["features.denseblock4.denselayer16.conv1.weight"].shape == (128, 992, 1, 1)
    assert net.state_dict()["classifier.weight"].shape == (1000, 1024)


def test_state_dict_file_loads_strict_and_reproduces(tmp_path, net):
    path = tmp_path / "densenet121.pth"
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["features.norm5.running_mean"] += 0.5  # a distinguishable value survives the round trip
    torch.save(sd, path)
    loaded = load_densenet121(path)
    assert torch.equal(loaded.state_dict()["features.norm5.running_mean"], sd["features.norm5.running_mean"])
    f = DenseNetFeaturizer(["DNA", "ER"], weights=path, input_size=32)
    assert f.identity()["weights"]["path"].endswith("densenet121.pth")
    # DataParallel-prefixed files load too
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "dp.pth")
    load_densenet121(tmp_path / "dp.pth")


def test_wrong_file_names_the_keys(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pth.*missing keys"):
        load_densenet121(path)


def test_missing_weights_says_where_and_how(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pth not found") as err:
        DenseNetFeaturizer(["DNA"], weights=tmp_path / "nope.pth")
    for hint in ("--weights", "IMAGENET1K_V1", "torch.save", "Nothing is downloaded"):
        assert hint in str(err.value)
    with pytest.raises(ConfigError, match="--weights FILE is missing"):
        DenseNetFeaturizer(["DNA"])
    with pytest.raises(ConfigError, match="collapsed"):
        DenseNetFeaturizer(["DNA"], mode="sum", random_weights=True)


def test_shapes_determinism_batch_invariance_no_network(monkeypatch):
    def no_net(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_net)
    monkeypatch.setattr(socket, "create_connection", no_net)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 40, 52, generator=gen) * 2 - 1
    for mode, prefix, width in (("collapsed", "DNc_", 1024), ("concat", "DNx_", 3 * 1024)):
        f = DenseNetFeaturizer(["DNA", "ER", "RNA"], mode=mode, random_weights=True, seed=1, input_size=32)
        assert f.prefix == prefix and f.n_features == width and f.resolution is None
        y = f(x)
        assert y.shape == (3, width) and torch.isfinite(y).all()
        assert torch.allclose(f(x[1:2]), y[1:2], atol=1e-5)  # batch-invariant
        g = DenseNetFeaturizer(["DNA", "ER", "RNA"], mode=mode, random_weights=True, seed=1, input_size=32)
        assert torch.allclose(g(x), y, atol=1e-6)  # deterministic given the seed
    # concat: channel k's block = the collapsed network fed that channel alone on all of RGB
    f = DenseNetFeaturizer(["A", "B"], mode="concat", random_weights=True, input_size=32)
    one = DenseNetFeaturizer(["A"], mode="collapsed", random_weights=True, input_size=32)
    y = f(x[:, :2])
    assert torch.allclose(y[:, 1024:], one(x[:, 1:2]), atol=1e-5)


def test_channel_averaging_default_and_fit_collapse():
    f = DenseNetFeaturizer(["A", "B", "C", "D"], random_weights=True, input_size=32)
    w = np.asarray(f.identity()["collapse_weight"])
    assert w.shape == (3, 4) and np.allclose(w, 0.25)
    assert f.identity()["collapse"] == "channel-average"
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 4, 32, 32, generator=gen) * 2 - 1
    x[4:, 2] = 1.0  # class 1 is bright in channel C only
    fit_collapse(f, x, [0] * 4 + [1] * 4, steps=10, lr=0.05)
    w2 = np.asarray(f.identity()["collapse_weight"])
    assert f.identity()["collapse"] == "fitted" and not np.allclose(w2, 0.25)
    assert f.identity()["collapse_fit"]["classes"] == ["0", "1"]
    with pytest.raises(ConfigError, match="single class"):
        fit_collapse(f, x, [0] * 8)
