"""ImageNet DenseNet-121 counterparts: ``densenet-collapsed`` (``DNc_``) and ``densenet-concat`` (``DNx_``).

The GAN-DL paper compares its embedding with an ImageNet-pretrained DenseNet-121 used as a frozen
feature extractor (the 1024-d globally pooled output of the last dense block). Fluorescence plates
have C stains, ImageNet networks take 3 colours, so two ways are offered:

``densenet-collapsed`` (prefix ``DNc_``, 1024 features)
    A 1x1 convolution maps the C channels to 3. By default it is *fixed to channel averaging*
    (every RGB plane = mean of the C stains), which needs no labels. As in the paper, the
    1x1 layer can instead be fitted briefly on a labelled downstream task
    (:func:`fit_collapse`: the DenseNet stays frozen, only the 1x1 conv and a temporary linear
    head are trained with cross-entropy); the fitted weights are recorded in the table metadata.
``densenet-concat`` (prefix ``DNx_``, 1024 x C features)
    Each channel alone is replicated to the three RGB planes and passed through the network;
    the C feature vectors are concatenated (channel 0's 1024 features first).

Inputs: the engine's normalized intensities (about [-1, 1]) are mapped to [0, 1], the whole field
is resized to ``input_size`` x ``input_size`` (224 by default, bilinear with antialiasing; a
non-square field is stretched) and standardized with the ImageNet mean/std of each RGB plane.

Weights are **never downloaded**. :class:`DenseNet121` is our own definition whose
``state_dict`` keys equal torchvision's ``densenet121`` names (``features.conv0.weight``,
``features.denseblock1.denselayer1.norm1.weight``, ``features.transition1.conv.weight``,
``features.norm5.*``, ``classifier.*``), so a torchvision ImageNet file loads with
``strict=True``. To get one, on a machine with internet::

    import torch, torchvision
    m = torchvision.models.densenet121(weights="IMAGENET1K_V1")
    torch.save(m.state_dict(), "densenet121.pth")

and pass ``--weights densenet121.pth``. ``--random-weights`` (``random_weights=True``) builds a
seeded random network instead, for tests and demos only (its features are not ImageNet features).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import CheckpointError, ConfigError
from .base import ModuleFeaturizer, file_sha256

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision densenet121 parameter count, classifier included.
DENSENET121_PARAMS = 7_978_856
FEATURE_DIM = 1024
DEFAULT_INPUT_SIZE = 224

WEIGHTS_HELP = (
    "Put an ImageNet DenseNet-121 state_dict file on this machine and pass it with --weights "
    "(Python: weights=...). To make one on a machine with internet: "
    "import torch, torchvision; torch.save(torchvision.models.densenet121(weights='IMAGENET1K_V1')"
    ".state_dict(), 'densenet121.pth'), then copy densenet121.pth here. Nothing is downloaded. "
    "For tests/demos only, --random-weights uses a random network instead."
)


# The network's class definitions live inside functions so that importing gandl_core does not import
# torch (built once, by _classes()); the input adapter is in _build_input_class.
def _build_module_classes():
    """Define the torch modules on first use (torch is imported lazily)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class _DenseLayer(nn.Module):
        # Attribute names are torchvision's: they become the state_dict keys.
        def __init__(self, num_input: int, growth: int, bn_size: int) -> None:
            super().__init__()
            self.norm1 = nn.BatchNorm2d(num_input)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(num_input, bn_size * growth, 1, stride=1, bias=False)
            self.norm2 = nn.BatchNorm2d(bn_size * growth)
            self.relu2 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, stride=1, padding=1, bias=False)

        def forward(self, inputs: list) -> "torch.Tensor":
            x = torch.cat(inputs, 1)
            x = self.conv1(self.relu1(self.norm1(x)))
            return self.conv2(self.relu2(self.norm2(x)))

    class _DenseBlock(nn.ModuleDict):
        def __init__(self, num_layers: int, num_input: int, growth: int, bn_size: int) -> None:
            super().__init__()
            for i in range(num_layers):
                self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input + i * growth, growth, bn_size))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            feats = [x]
            for layer in self.values():
                feats.append(layer(feats))
            return torch.cat(feats, 1)

    class _Transition(nn.Sequential):
        def __init__(self, num_input: int, num_output: int) -> None:
            super().__init__()
            self.norm = nn.BatchNorm2d(num_input)
            self.relu = nn.ReLU(inplace=True)
            self.conv = nn.Conv2d(num_input, num_output, 1, stride=1, bias=False)
            self.pool = nn.AvgPool2d(2, stride=2)

    class DenseNet121(nn.Module):
        """DenseNet-121 (growth 32, blocks 6/12/24/16, bn_size 4) with torchvision's key names.

        ``forward(x [N,3,H,W]) -> [N,1024]``: the ReLU'd, globally average-pooled output of
        ``features.norm5`` (the layer the GAN-DL paper uses). ``classify(x)`` adds the 1000-way
        ``classifier`` (kept so ImageNet files load with ``strict=True``).
        """

        def __init__(self, growth: int = 32, block_config: Sequence[int] = (6, 12, 24, 16),
                     num_init_features: int = 64, bn_size: int = 4, num_classes: int = 1000) -> None:
            super().__init__()
            layers: list = [
                ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
            n = num_init_features
            for i, num_layers in enumerate(block_config):
                layers.append((f"denseblock{i + 1}", _DenseBlock(num_layers, n, growth, bn_size)))
                n += num_layers * growth
                if i != len(block_config) - 1:
                    layers.append((f"transition{i + 1}", _Transition(n, n // 2)))
                    n //= 2
            layers.append(("norm5", nn.BatchNorm2d(n)))
            self.features = nn.Sequential(OrderedDict(layers))
            self.classifier = nn.Linear(n, num_classes)
            self.num_features = n
            # torchvision's initialisation (kaiming conv, unit BN, zero linear bias).
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.constant_(m.bias, 0)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            y = F.relu(self.features(x))
            return torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)

        def classify(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.classifier(self.forward(x))

    return DenseNet121, _build_input_class(torch, nn, F)


def _build_input_class(torch, nn, F):
    """The input adapter (C channels -> ImageNet RGB), defined with the network's lazily imported torch."""

    class DenseNetInput(nn.Module):
        """C-channel normalized fields -> ImageNet-ready RGB batches, then the 1024-d features.

        ``mode="collapsed"``: a 1x1 conv C->3 (``self.collapse``) then one pass.
        ``mode="concat"``: each channel replicated to RGB, one pass per channel, concatenated.
        """

        def __init__(self, net: nn.Module, channels: int, mode: str, input_size: int) -> None:
            super().__init__()
            self.net = net
            self.mode = mode
            self.input_size = int(input_size)
            self.collapse = nn.Conv2d(channels, 3, 1, bias=True)
            with torch.no_grad():  # fixed channel averaging
                self.collapse.weight.fill_(1.0 / channels)
                self.collapse.bias.zero_()
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def prepare(self, x: "torch.Tensor") -> "torch.Tensor":
            """[N,C,H,W] in about [-1,1] -> [N,C,S,S] in [0,1] (S = input_size)."""
            x = ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)
            if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
                x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            return x

        def rgb(self, x: "torch.Tensor") -> "torch.Tensor":
            return (x - self.mean) / self.std

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x = self.prepare(x)
            if self.mode == "collapsed":
                return self.net(self.rgb(self.collapse(x)))
            n, c = x.shape[:2]
            planes = x.reshape(n * c, 1, *x.shape[-2:]).expand(-1, 3, -1, -1)
            feats = self.net(self.rgb(planes))  # [N*C, 1024], channel-major within each site
            return feats.reshape(n, c * feats.shape[1])

    return DenseNetInput


_CLASSES: tuple | None = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _build_module_classes()
    return _CLASSES


def densenet121(*, seed: int | None = 0) -> "torch.nn.Module":
    """A randomly initialised :class:`DenseNet121` (seeded for reproducibility).

    Parameters
    ----------
    seed
        Seed of the random initialisation (``None``: torch's current RNG).

    Returns
    -------
    torch.nn.Module
        The network in eval mode (7,978,856 parameters incl. the classifier).
    """
    import torch

    cls = _classes()[0]
    if seed is None:
        return cls().eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls().eval()


_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _clean_state_dict(state: Any, path: Path) -> dict:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: not a state_dict (a dict of tensors). " + WEIGHTS_HELP)
    out = {}
    for k, v in state.items():
        k = str(k)
        if k.startswith("module."):  # saved from DataParallel
            k = k[len("module."):]
        m = _OLD_KEY.match(k)  # very old torchvision files wrote 'norm.1' for 'norm1'
        if m:
            k = m.group(1) + m.group(2)
        out[k] = v
    return out


def load_densenet121(weights: str | os.PathLike) -> "torch.nn.Module":
    """Load a torchvision-format DenseNet-121 ImageNet ``state_dict`` file (strict, weights only).

    Parameters
    ----------
    weights
        Path of the ``.pth`` file (``torch.save(model.state_dict(), ...)``).

    Returns
    -------
    torch.nn.Module
        :class:`DenseNet121` in eval mode.

    Raises
    ------
    CheckpointError
        Missing file (the message says where to put one and how to make it), unreadable file,
        or keys/shapes that are not DenseNet-121's (names the first offending keys).
    """
    import torch

    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"DenseNet-121 weights file {path} not found. " + WEIGHTS_HELP)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise CheckpointError(f"{path}: cannot be read as a weights-only torch file ({exc}). "
                              + WEIGHTS_HELP) from exc
    state = _clean_state_dict(state, path)
    net = densenet121(seed=0)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = set(net.state_dict())
        missing = sorted(own - set(state))[:3]
        extra = sorted(set(state) - own)[:3]
        raise CheckpointError(
            f"{path} is not a torchvision DenseNet-121 state_dict: missing keys {missing}, "
            f"unexpected keys {extra} ({str(exc).splitlines()[0]}). " + WEIGHTS_HELP) from exc
    return net.eval()


class DenseNetFeaturizer(ModuleFeaturizer):
    """Frozen DenseNet-121 features of C-channel fields (see the module docstring).

    Parameters
    ----------
    channels
        Channel names of the data, in order (their count sets the 1x1 conv / the concatenation).
    mode
        ``"collapsed"`` (prefix ``DNc_``, 1024 features) or ``"concat"`` (``DNx_``, 1024 x C).
    weights
        torchvision DenseNet-121 ``state_dict`` file. Required unless ``random_weights``.
    random_weights
        Use a seeded random network (tests/demos; recorded in the table metadata).
    seed
        Seed of the random network.
    input_size
        Side the whole field is resized to before the network (224 = ImageNet).
    collapse_weight, collapse_bias
        Optional fitted 1x1 conv ([3, C] and [3]) replacing the channel averaging (collapsed mode);
        see :func:`fit_collapse`.
    normalizer
        The plate's ``IntensityNormalizer`` (``None``: the engine fits one on the plate).
    device
        Where the network runs.

    Raises
    ------
    ConfigError
        Unknown mode, no channels, bad input size, or neither ``weights`` nor ``random_weights``.
    CheckpointError
        Missing or malformed weights file.
    """

    def __init__(self, channels: Sequence[str], *, mode: str = "collapsed",
                 weights: str | os.PathLike | None = None, random_weights: bool = False, seed: int = 0,
                 input_size: int = DEFAULT_INPUT_SIZE, collapse_weight: Any = None,
                 collapse_bias: Any = None, normalizer: Any = None, device: str = "cpu") -> None:
        import torch

        if mode not in ("collapsed", "concat"):
            raise ConfigError(f"DenseNet mode={mode!r}: choose 'collapsed' (DNc_) or 'concat' (DNx_).")
        channels = [str(c) for c in channels]
        if not channels:
            raise ConfigError("DenseNet featurizer: the data has no channels.")
        if int(input_size) < 32:
            raise ConfigError(f"--input-size {input_size}: DenseNet-121 needs at least 32 px (5 halvings).")
        if weights is None and not random_weights:
            raise ConfigError("densenet needs ImageNet weights: --weights FILE is missing. " + WEIGHTS_HELP)
        if weights is not None and random_weights:
            raise ConfigError("give either --weights FILE or --random-weights, not both.")
        net = load_densenet121(weights) if weights is not None else densenet121(seed=seed)
        wrapper = _classes()[1](net, len(channels), mode, int(input_size))
        if collapse_weight is not None:
            w = torch.as_tensor(collapse_weight, dtype=torch.float32)
            if tuple(w.shape) != (3, len(channels)):
                raise ConfigError(f"collapse_weight has shape {tuple(w.shape)}; expected (3, {len(channels)}).")
            with torch.no_grad():
                wrapper.collapse.weight.copy_(w.view(3, len(channels), 1, 1))
                if collapse_bias is not None:
                    wrapper.collapse.bias.copy_(torch.as_tensor(collapse_bias, dtype=torch.float32).view(3))
        src = ({"path": str(Path(weights).resolve()), "sha256": file_sha256(weights)}
               if weights is not None else {"random_weights": True, "seed": int(seed)})
        info = {"name": f"densenet-{mode}", "weights": src, "input_size": int(input_size),
                "collapse": ("channel-average" if collapse_weight is None else "fitted")}
        if mode == "collapsed":
            info["collapse_weight"] = wrapper.collapse.weight.detach().view(3, -1).tolist()
            info["collapse_bias"] = wrapper.collapse.bias.detach().tolist()
        prefix = "DNc_" if mode == "collapsed" else "DNx_"
        n = FEATURE_DIM if mode == "collapsed" else FEATURE_DIM * len(channels)
        # NCHW: DenseNet's concatenations are slower in channels_last on CPU.
        super().__init__(wrapper, prefix=prefix, n_features=n, channels=channels, resolution=None,
                         normalizer=normalizer, info=info, device=device, channels_last=False)
        self.mode = mode


def fit_collapse(featurizer: DenseNetFeaturizer, images: "torch.Tensor", labels: Sequence[Any], *,
                 steps: int = 50, lr: float = 0.01, seed: int = 0) -> DenseNetFeaturizer:
    """Fit the collapsed featurizer's 1x1 conv (C->3) briefly on a labelled task, DenseNet frozen.

    As in the GAN-DL paper's DenseNet baseline: the channel-mixing layer is learned with a
    temporary linear classifier on the 1024-d features (cross-entropy, Adam); afterwards only
    the 1x1 conv is kept, so the features stay 1024-d and label-free at inference.

    Parameters
    ----------
    featurizer
        A ``mode="collapsed"`` :class:`DenseNetFeaturizer` (modified in place).
    images
        Normalized fields ``[N, C, H, W]`` (as the engine gives them).
    labels
        N class labels (any hashable values; at least 2 classes).
    steps, lr, seed
        Full-batch Adam steps, learning rate, seed of the head's initialisation.

    Returns
    -------
    DenseNetFeaturizer
        ``featurizer`` itself, with the fitted conv and its identity updated.

    Raises
    ------
    ConfigError
        Concat mode, fewer than 2 classes, or a label count that differs from N.
    """
    import numpy as np
    import torch
    from torch.nn import functional as F

    if featurizer.mode != "collapsed":
        raise ConfigError("fit_collapse needs a densenet-collapsed featurizer (concat has no 1x1 conv).")
    labels = list(labels)
    if len(labels) != len(images):
        raise ConfigError(f"fit_collapse: {len(labels)} labels for {len(images)} images.")
    classes, y = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    if len(classes) < 2:
        raise ConfigError("fit_collapse: the labels have a single class; give at least two.")
    wrapper = featurizer.module
    dev = featurizer.device
    x = wrapper.prepare(images.to(dev))
    target = torch.as_tensor(y, device=dev)
    gen = torch.Generator().manual_seed(int(seed))
    head = torch.nn.Linear(FEATURE_DIM, len(classes))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    head.to(dev)
    for p in wrapper.net.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(list(wrapper.collapse.parameters()) + list(head.parameters()), lr=lr)
    wrapper.eval()  # BatchNorm keeps its ImageNet statistics
    with torch.enable_grad():
        for _ in range(int(steps)):
            opt.zero_grad()
            loss = F.cross_entropy(head(wrapper.net(wrapper.rgb(wrapper.collapse(x)))), target)
            loss.backward()
            opt.step()
    featurizer._info["collapse"] = "fitted"
    featurizer._info["collapse_fit"] = {"n_images": len(labels), "classes": [str(c) for c in classes],
                                        "steps": int(steps), "final_loss": float(loss.detach())}
    featurizer._info["collapse_weight"] = wrapper.collapse.weight.detach().cpu().view(3, -1).tolist()
    featurizer._info["collapse_bias"] = wrapper.collapse.bias.detach().cpu().tolist()
    return featurizer


def __getattr__(name: str):
    # ``from gandl_core.featurizers.densenet import DenseNet121`` works, torch still lazy.
    if name == "DenseNet121":
        return _classes()[0]
    if name == "DenseNetInput":
        return _classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
