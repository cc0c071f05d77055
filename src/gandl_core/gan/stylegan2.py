"""StyleGAN2 generator and residual discriminator for any number of image channels.

Written from the papers (Karras et al. 2019, "A Style-Based Generator Architecture for GANs";
Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"), in plain PyTorch with
no compiled extensions, so it runs on CPU-only machines and on GPUs alike.

Pieces, in the paper's vocabulary:

* **Equalized learning rate** -- weights are stored as N(0, 1) / lr_mul and scaled at run time by
  ``lr_mul / sqrt(fan_in)``, so Adam sees every layer at the same scale.
* **Mapping network** -- pixel-norm of z, then ``mapping_layers`` fully connected layers with
  lr multiplier 0.01; keeps a running mean ``w_avg`` of w for the truncation trick.
* **Synthesis network** -- learned constant 4x4 input; per resolution two modulated/demodulated
  3x3 convolutions (the first one after a 2x upsampling), per-layer noise with a learned strength,
  and a "toImage" 1x1 modulated convolution producing ``channels`` outputs whose upsampled sum is
  the image (the *skip* generator).
* **Discriminator** -- "fromImage" 1x1 convolution reading ``channels`` inputs, residual blocks
  that halve the resolution down to 4x4, minibatch-standard-deviation layer, a 3x3 convolution,
  a fully connected layer to ``feature_dim`` (the GAN-DL embedding) and a linear score.

Resampling uses the [1, 3, 3, 1] FIR filter of the paper (our own implementation: one depthwise
4x4 convolution, :func:`fir_blur`). As in the paper, the generator's upsampling convolutions are
stride-2 *transposed* 3x3 convolutions followed by the blur, and the discriminator's downsampling
convolutions blur first and then stride by 2, so the 3x3 convolutions always run at the lower of
the two resolutions (4x fewer multiply-adds than resampling the feature maps first).

CPU speed: the networks are fastest in ``channels_last`` memory format
(``net.to(memory_format=torch.channels_last)`` and likewise for the input), see
benchmarks/bench_train.py and docs/benchmarks.md.

Tensor layout is [N, C, H, W] everywhere; ``channels`` is the number of image channels (stains).

Example::

    G = Generator(64, 5, channel_base=4096, channel_max=256)
    D = Discriminator(64, 5, channel_base=4096, channel_max=256)
    fakes = G(torch.randn(8, G.z_dim))        # [8, 5, 64, 64], about [-1, 1]
    scores = D(fakes)                         # [8, 1] logits (train mode: minibatch-std of the batch)
    emb = D.eval().features(fakes)            # [8, 512] batch-invariant GAN-DL embedding
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError

__all__ = [
    "MappingNetwork",
    "SynthesisNetwork",
    "Generator",
    "Discriminator",
    "channels_at",
    "check_resolution",
    "upsample2d",
    "fir_blur",
    "parameter_count",
]

# Gain applied after leaky ReLU(0.2) so activations keep unit variance (He et al. / StyleGAN).
# Convolutional layers return the raw leaky ReLU and the consumer folds this gain into its weight
# or style ("input_gain"): mathematically identical, one pass over the feature maps less per layer.
_LRELU_GAIN = math.sqrt(2.0)
_LRELU_SLOPE = 0.2


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def check_resolution(resolution: int, option: str = "resolution") -> int:
    """Return ``resolution`` as an int if it is a power of two >= 8.

    Raises
    ------
    ConfigError
        Naming ``option`` and the valid values otherwise.
    """
    try:
        r = int(resolution)
    except (TypeError, ValueError):
        r = -1
    if r != resolution or r < 8 or (r & (r - 1)) != 0:
        raise ConfigError(
            f"option '{option}' = {resolution!r} is not supported: the StyleGAN2 networks need a "
            "power of two >= 8 (valid values: 8, 16, 32, 64, 128, 256, 512, 1024, ...). "
            "Crop or resize your tiles to one of these sizes."
        )
    return r


def _check_positive_int(value: int, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"option '{option}' = {value!r} must be an integer >= {minimum}.")
    return value


def _check_sizes(resolution: int, channels: int, channel_base: int, channel_max: int) -> tuple[int, int]:
    """The size options every generator network takes, checked: ``(resolution, channels)``.

    Raises
    ------
    ConfigError
        Naming the option: a resolution that is not a power of two >= 8, or a non-positive count.
    """
    r, c = check_resolution(resolution), _check_positive_int(channels, "channels")
    _check_positive_int(channel_base, "channel_base")
    _check_positive_int(channel_max, "channel_max")
    return r, c


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at resolution ``res``: ``min(channel_base // res, channel_max)`` (at least 1)."""
    return max(1, min(channel_base // res, channel_max))


# --------------------------------------------------------------------------------------------
# FIR resampling with the [1, 3, 3, 1] filter
# --------------------------------------------------------------------------------------------

_FIR_1D = (1.0, 3.0, 3.0, 1.0)


def fir_blur(x: torch.Tensor, *, gain: float = 1.0, padding: int = 1) -> torch.Tensor:
    """Depthwise 4x4 [1,3,3,1] x [1,3,3,1] FIR filter (normalised to ``gain``), zero padding.

    One 4x4 depthwise convolution is faster on CPU than two separable 1-D passes (one memory
    sweep instead of two; oneDNN has a direct depthwise kernel, fastest in channels_last).
    With ``padding=1`` an input of size S gives S - 1 outputs, output m centred at input m + 1/2.
    """
    c = x.shape[1]
    k1 = torch.tensor(_FIR_1D, dtype=x.dtype, device=x.device)
    k = torch.outer(k1, k1)
    k = k * (gain / k.sum())
    return F.conv2d(x, k.expand(c, 1, 4, 4), padding=padding, groups=c)


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling with the [1,3,3,1] FIR filter: [N,C,H,W] -> [N,C,2H,2W] (border replicated).

    Zero insertion followed by the [1,3,3,1] filter (gain 2 per axis) gives, by its polyphase
    decomposition, ``0.75 x[i] + 0.25 x[i-1]`` and ``0.75 x[i] + 0.25 x[i+1]`` for the even and odd
    output samples -- exactly bilinear interpolation with half-pixel centres. So we let
    ``F.interpolate`` do it (a vectorised kernel, much faster than a convolution); the tests check
    it against an explicit zero-insertion + FIR implementation.
    """
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------
# Equalized-learning-rate layers
# --------------------------------------------------------------------------------------------


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN


class EqualizedLinear(nn.Module):
    """Fully connected layer with equalized learning rate (weight scaled by lr_mul/sqrt(fan_in))."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
        input_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        # input_gain: a constant factor of the input folded into the (small) weight matrix.
        self.weight_gain = lr_mul / math.sqrt(in_features) * input_gain
        self.bias_gain = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        return _lrelu(x) if self.activation else x


class EqualizedConv2d(nn.Module):
    """Convolution with equalized learning rate; ``down=True`` blurs (FIR) then strides by 2.

    With ``activation=True`` the output is ``leaky_relu(conv(x))`` *without* the sqrt(2) gain;
    every consumer of such an output folds that gain into its own weight (``input_gain``), which
    is exact and saves a full pass over the feature maps per layer.

    Blur-then-stride (as in StyleGAN2) puts the expensive convolution at the *output* resolution:
    a quarter of the multiply-adds of convolving first and downsampling after. The blur's
    ``padding=1`` leaves S - 1 samples centred at m + 1/2, so output j of the stride-2 convolution
    is centred at input 2j + 1/2, the centre of the 2x2 cell it summarises.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        activation: bool = False,
        down: bool = False,
        input_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = input_gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.activation = activation
        self.down = down
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        pad = self.kernel_size // 2
        if self.down:
            x = F.conv2d(fir_blur(x), w, self.bias, stride=2, padding=pad)
        else:
            x = F.conv2d(x, w, self.bias, padding=pad)
        # In place is safe: the convolution's backward needs its input and weight, not its output.
        return F.leaky_relu(x, _LRELU_SLOPE, inplace=True) if self.activation else x


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``num_layers`` equalized FC layers (lr multiplier 0.01).

    Keeps ``w_avg``, the running mean of w seen in training mode (EMA with ``w_avg_beta``), the
    centre of the truncation trick.
    """

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        num_layers: int = 3,
        *,
        lr_mul: float = 0.01,
        w_avg_beta: float = 0.995,
    ) -> None:
        super().__init__()
        _check_positive_int(z_dim, "z_dim")
        _check_positive_int(w_dim, "w_dim")
        _check_positive_int(num_layers, "mapping_layers")
        self.z_dim, self.w_dim, self.num_layers = z_dim, w_dim, num_layers
        self.w_avg_beta = w_avg_beta
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualizedLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activation=True) for i in range(num_layers)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, *, truncation_psi: float = 1.0) -> torch.Tensor:
        """Map latents ``z`` [N, z_dim] to styles ``w`` [N, w_dim].

        In training mode (and psi == 1) the running mean ``w_avg`` is updated. ``truncation_psi``
        < 1 pulls w toward ``w_avg`` (Karras 2019, sec. 3): better-looking, less diverse samples.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping network expects z of shape [N, {self.z_dim}], got {list(z.shape)}")
        # Pixel norm: put z on the sphere of radius sqrt(z_dim) so its scale carries no information.
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        if self.training and truncation_psi == 1.0:
            with torch.no_grad():
                # float(): under bf16 autocast x is bf16 while the running mean stays fp32
                self.w_avg.copy_(x.detach().float().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2 weight demodulation, sec. 2.2 of the paper).

    Implementation choice (measured on CPU): instead of building per-sample weights and running a
    grouped convolution, we scale the *input* activations by the style ``s`` (per sample, per input
    channel), run one ordinary batched convolution with the shared weight, and scale the *output*
    by the demodulation coefficient ``d = 1/sqrt(sum_{i,k} (w_oik s_i)^2)``. Both are
    mathematically identical (``conv(x*s, w) * d == conv(x, w*s*d)`` per sample), but the batched
    form lets oneDNN run one large convolution instead of N small ones. ``fused=True`` selects the
    grouped per-sample-weight path (kept to test the equivalence, and for GPUs with tiny batches).

    ``up=True`` makes it a stride-2 transposed convolution followed by the [1,3,3,1] blur (gain 4
    to make up for the inserted zeros): [N, Cin, H, W] -> [N, Cout, 2H, 2W].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        *,
        demodulate: bool = True,
        up: bool = False,
        fused: bool = False,
        input_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        # Styles start at 1 (bias_init=1) so a fresh network behaves like an unmodulated one.
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.up = up
        self.fused = fused
        # Constant factor of the input (the leaky ReLU gain of the layer before), applied together
        # with the style so it costs no extra pass; it must not enter the demodulation.
        self.input_gain = input_gain

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Modulated convolution of ``x`` [N, Cin, H, W] with styles from ``w`` [N, w_dim]."""
        x, d = self.forward_parts(x, w)
        return x if d is None else x * d[:, :, None, None]

    def forward_parts(self, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(undemodulated output, demodulation factors [N, Cout] or None if already applied).

        Lets the synthesis layer fold the demodulation into its bias addition (one pass less).
        """
        n = x.shape[0]
        s = self.affine(w)  # [N, Cin]
        weight = self.weight * self.weight_gain  # [Cout, Cin, k, k]
        k = self.kernel_size
        if self.fused:
            wn = weight.unsqueeze(0) * s[:, None, :, None, None]  # [N, Cout, Cin, k, k]
            if self.demodulate:
                wn = wn * torch.rsqrt(wn.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
            x = x.reshape(1, n * self.in_channels, *x.shape[2:]) * self.input_gain
            if self.up:
                wt = wn.transpose(1, 2).reshape(n * self.in_channels, self.out_channels, k, k)
                x = fir_blur(F.conv_transpose2d(x, wt, stride=2, groups=n), gain=4.0)
            else:
                x = F.conv2d(x, wn.reshape(n * self.out_channels, self.in_channels, k, k), padding=k // 2, groups=n)
            return x.reshape(n, self.out_channels, *x.shape[2:]), None
        x = x * (s * self.input_gain)[:, :, None, None]
        if self.up:
            # Transposed conv output is 2H+1; the blur (padding 1) brings it to 2H, centred so that
            # input pixel i covers output pixels 2i and 2i+1.
            x = fir_blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2), gain=4.0)
        else:
            x = F.conv2d(x, weight, padding=k // 2)
        if self.demodulate:
            # sum_{i,k} (w_oik s_i)^2 = (s^2) @ (sum_k w_oik^2)^T : [N, Cout]. A per-(sample, channel)
            # factor commutes with the blur, so applying it last is exact.
            d = torch.rsqrt(s.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8)
            return x, d
        return x, None


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (``up``: transposed, 2x upsampling), noise, bias, leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool = False,
                 input_gain: float = _LRELU_GAIN) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up, input_gain=input_gain)
        self.resolution = resolution
        # Noise strength starts at 0: the network learns how much stochastic detail each layer uses.
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """Returns ``leaky_relu(...)`` without the sqrt(2) gain: consumers fold it (``input_gain``)."""
        x, d = self.conv.forward_parts(x, w)
        bias = self.bias[None, :, None, None]
        # bias + x * d in one pass; the following in-place ops are autograd-safe (addcmul's
        # backward does not need its output, leaky_relu's uses its own output).
        x = torch.addcmul(bias, x, d[:, :, None, None]) if d is not None else x + bias
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, dtype=x.dtype, device=x.device)
            x = x.add_(noise * self.noise_strength)
        elif noise_mode == "const":
            x = x.add_(self.noise_const * self.noise_strength)
        return F.leaky_relu(x, _LRELU_SLOPE, inplace=True)


class ToImage(nn.Module):
    """1x1 modulated conv (no demodulation) from feature maps to ``channels`` image channels."""

    def __init__(self, in_channels: int, channels: int, w_dim: int) -> None:
        super().__init__()
        # Its input is a synthesis layer's output: leaky ReLU without the sqrt(2) gain.
        self.conv = ModulatedConv2d(in_channels, channels, 1, w_dim, demodulate=False, input_gain=_LRELU_GAIN)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


_NOISE_MODES = ("random", "const", "none")


# The generator's 4x4 input. "const" is StyleGAN2's learned constant: styles then only rescale its
# channels, so the coarse layout is shared by all samples unless training finds a way to vary it.
# That suits aligned images (faces) and very long runs; on fields of cells, where objects sit anywhere,
# a short run collapses to one layout (every fake shows the same blob positions; measured on the
# synthetic screen: docs/training.md). "mapped" adds a per-sample 4x4 map, an affine function of the
# first style w (as DCGAN projects z to its first feature map), so layouts differ from the first step.
INPUT_MODES = ("const", "mapped")


class SynthesisNetwork(nn.Module):
    """Styles ``ws`` [N, num_ws, w_dim] -> image [N, channels, resolution, resolution] (skip architecture).

    Style index use: the 4x4 conv takes ws[:,0] and its toImage ws[:,1]; the block at resolution
    2^k (k >= 3) takes ws[:, 2k-5] and ws[:, 2k-4] for its two convs and ws[:, 2k-3] for its
    toImage, so ``num_ws = 2*log2(resolution) - 2`` and consecutive layers can get different styles
    (style mixing).
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        *,
        w_dim: int = 512,
        channel_base: int = 32768,
        channel_max: int = 512,
        input_mode: str = "const",
    ) -> None:
        super().__init__()
        self.resolution, self.channels = _check_sizes(resolution, channels, channel_base, channel_max)
        if input_mode not in INPUT_MODES:
            raise ConfigError(f"option 'g_input' = {input_mode!r}: choose one of {', '.join(INPUT_MODES)}.")
        self.w_dim = w_dim
        log2 = int(math.log2(self.resolution))
        self.num_ws = 2 * log2 - 2
        c4 = channels_at(4, channel_base, channel_max)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        self.input_mode = input_mode
        # "mapped": the 4x4 input is the constant plus a per-sample map computed from w, so the
        # coarse layout (where the cells are) can change from sample to sample. See INPUT_MODES.
        self.input_map = EqualizedLinear(w_dim, c4 * 16) if input_mode == "mapped" else None
        self.conv4 = SynthesisLayer(c4, c4, w_dim, 4, input_gain=1.0)  # input: the learned constant
        self.img4 = ToImage(c4, channels, w_dim)
        self.blocks = nn.ModuleList()
        cin = c4
        for k in range(3, log2 + 1):
            res = 2**k
            cout = channels_at(res, channel_base, channel_max)
            block = nn.ModuleDict(
                {
                    "conv0": SynthesisLayer(cin, cout, w_dim, res, up=True),
                    "conv1": SynthesisLayer(cout, cout, w_dim, res),
                    "to_image": ToImage(cout, channels, w_dim),
                }
            )
            self.blocks.append(block)
            cin = cout

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "random") -> torch.Tensor:
        """Render images from per-layer styles ``ws`` [N, num_ws, w_dim]; returns [N, C, H, W]."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(
                f"synthesis network expects ws of shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}"
            )
        if noise_mode not in _NOISE_MODES:
            raise ConfigError(f"option 'noise_mode' = {noise_mode!r}: use one of {', '.join(_NOISE_MODES)}.")
        n = ws.shape[0]
        x = self.const.unsqueeze(0).expand(n, -1, -1, -1)
        if self.input_map is not None:
            x = (x + self.input_map(ws[:, 0]).reshape(n, *self.const.shape)) * math.sqrt(0.5)
        x = self.conv4(x, ws[:, 0], noise_mode)
        img = self.img4(x, ws[:, 1])
        for i, block in enumerate(self.blocks):
            x = block["conv0"](x, ws[:, 2 * i + 1], noise_mode)
            x = block["conv1"](x, ws[:, 2 * i + 2], noise_mode)
            img = upsample2d(img) + block["to_image"](x, ws[:, 2 * i + 3])
        assert img.shape[1:] == (self.channels, self.resolution, self.resolution)
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: z [N, z_dim] -> image [N, channels, resolution, resolution] in about [-1, 1].

    Parameters
    ----------
    resolution
        Output size, a power of two >= 8.
    channels
        Number of image channels (stains), >= 1.
    z_dim, w_dim
        Latent and style sizes (512 in StyleGAN2 / GAN-DL).
    mapping_layers
        Depth of the mapping network (3 in GAN-DL; 8 in StyleGAN2's FFHQ config).
    channel_base, channel_max
        Feature maps at resolution r are ``min(channel_base // r, channel_max)``.
    input_mode
        ``"const"`` (StyleGAN2's learned 4x4 constant) or ``"mapped"`` (constant plus a per-sample
        map from w); see :data:`INPUT_MODES`.

    Raises
    ------
    ConfigError
        For a resolution that is not a power of two >= 8 or a non-positive size option.

    Attributes
    ----------
    mapping : MappingNetwork
    synthesis : SynthesisNetwork
    num_ws : int
        Number of per-layer styles the synthesis network takes.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        *,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        input_mode: str = "const",
    ) -> None:
        super().__init__()
        self.resolution, self.channels = _check_sizes(resolution, channels, channel_base, channel_max)
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.synthesis = SynthesisNetwork(
            resolution, channels, w_dim=w_dim, channel_base=channel_base, channel_max=channel_max,
            input_mode=input_mode,
        )
        self.num_ws = self.synthesis.num_ws

    def styles(
        self,
        z: torch.Tensor,
        *,
        truncation_psi: float = 1.0,
        mixing_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-layer styles ws [N, num_ws, w_dim] for latents ``z``, with optional style mixing.

        With probability ``mixing_prob`` per sample, a second random latent takes over from a random
        crossover layer on (style-mixing regularization, Karras 2019 sec. 3.1), which keeps
        neighbouring styles from becoming correlated.

        Parameters
        ----------
        z
            Latents [N, z_dim].
        truncation_psi
            1 = no truncation; < 1 pulls styles toward the mean style.
        mixing_prob
            Probability in [0, 1] that a sample mixes two latents.
        generator
            Optional torch.Generator for the mixing draws (reproducible training).
        """
        w = self.mapping(z, truncation_psi=truncation_psi)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if mixing_prob > 0:
            if not 0.0 <= mixing_prob <= 1.0:
                raise ConfigError(f"option 'mixing_prob' = {mixing_prob!r} must be in [0, 1].")
            n = z.shape[0]
            dev = z.device
            # Without a generator, draw on z's device: a GPU step then never waits for a host copy.
            at = "cpu" if generator is not None else dev
            z2 = torch.randn(z.shape, generator=generator, device=at).to(dev, z.dtype)
            w2 = self.mapping(z2, truncation_psi=truncation_psi)
            cut = torch.randint(1, self.num_ws, (n,), generator=generator, device=at).to(dev)
            mix = torch.rand(n, generator=generator, device=at).to(dev) < mixing_prob
            cut = torch.where(mix, cut, torch.full_like(cut, self.num_ws))
            layer = torch.arange(self.num_ws, device=dev)[None, :]
            take2 = (layer >= cut[:, None]).unsqueeze(2)  # [N, num_ws, 1]
            ws = torch.where(take2, w2.unsqueeze(1), ws)
        return ws

    def forward(
        self,
        z: torch.Tensor,
        *,
        truncation_psi: float = 1.0,
        noise_mode: str = "random",
        mixing_prob: float = 0.0,
    ) -> torch.Tensor:
        """Generate images [N, channels, resolution, resolution] from latents ``z`` [N, z_dim].

        Parameters
        ----------
        z
            Latents [N, z_dim], usually standard normal.
        truncation_psi
            Truncation trick strength (1 = off).
        noise_mode
            ``"random"`` (fresh noise, training), ``"const"`` (fixed per-layer noise buffers:
            deterministic output) or ``"none"``.
        mixing_prob
            Style-mixing probability used during training (0 = off).
        """
        ws = self.styles(z, truncation_psi=truncation_psi, mixing_prob=mixing_prob)
        return self.synthesis(ws, noise_mode=noise_mode)


# --------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------


class MinibatchStd(nn.Module):
    """Minibatch standard deviation layer (Karras et al. 2018) with a batch-invariant eval mode.

    In training mode it appends one feature map holding the average (over features and pixels)
    standard deviation within groups of ``group_size`` batchmates -- the signal that lets D notice
    a generator that has collapsed to few modes. The group is ``min(group_size, N)`` lowered to the
    largest size that divides N, so any batch size works (a batch of 1 gets std 0).

    The training statistic mixes batchmates into every image's output, which would make an
    embedding depend on what else is in the batch. So the layer keeps ``running_std``, the running
    mean (EMA, momentum 0.01; the first batch initialises it) of the statistic seen in training,
    and in eval mode (and in :meth:`Discriminator.features`) it appends that constant instead.
    Features of one image are then a pure, deterministic function of that image.
    """

    def __init__(self, group_size: int = 4, momentum: float = 0.01) -> None:
        super().__init__()
        self.group_size = _check_positive_int(group_size, "mbstd_group")
        self.momentum = momentum
        self.register_buffer("running_std", torch.zeros([]))
        self.register_buffer("num_batches_tracked", torch.zeros([], dtype=torch.long))

    def group_for(self, n: int) -> int:
        """Largest group size <= ``group_size`` dividing a batch of ``n``."""
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        return g

    def forward(self, x: torch.Tensor, *, batch_stat: bool | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        use_batch = self.training if batch_stat is None else batch_stat
        if use_batch:
            g = self.group_for(n)
            y = x.reshape(g, n // g, c, h, w)
            y = y - y.mean(dim=0)
            y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [N/G, C, H, W]
            y = y.mean(dim=(1, 2, 3))  # [N/G]
            if self.training:
                with torch.no_grad():
                    m = y.detach().float().mean()  # fp32 buffer, also under bf16 autocast
                    # The first batch initialises the mean (weight 1), later ones move it by the
                    # momentum; chosen on the device, so training never waits to read the counter.
                    weight = torch.where(self.num_batches_tracked == 0, 1.0, self.momentum).to(m.dtype)
                    self.running_std.lerp_(m, weight)
                    self.num_batches_tracked += 1
            # Sample i belongs to group i % (N/G) (the reshape above), so tile groups along N.
            y = y.repeat(g).reshape(n, 1, 1, 1).expand(n, 1, h, w)
        else:
            y = self.running_std.to(x.dtype).expand(n, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: conv3x3 -> conv3x3 (down) plus a 1x1 downsampled skip, scaled by sqrt(1/2).

    Computes ``(sqrt2*lrelu(conv1(sqrt2*lrelu(conv0(g*x)))) + skip(g*x)) * sqrt(1/2)`` with every
    constant folded into a weight: ``lrelu(...) + skip'(x)``, one elementwise pass instead of six.
    ``input_gain`` g is sqrt(2) when ``x`` is a raw leaky ReLU output (the fromImage layer's).
    """

    def __init__(self, in_channels: int, out_channels: int, *, input_gain: float = 1.0) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation=True, input_gain=input_gain)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation=True, down=True, input_gain=_LRELU_GAIN)
        # sqrt(1/2) keeps the variance of the sum equal to that of each branch.
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=True,
                                    input_gain=input_gain * math.sqrt(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x)
        # conv1's raw activation times sqrt(2) (its gain) times sqrt(1/2) (residual scale) = itself.
        # (Not in place: leaky ReLU's backward needs conv1's output as it is.)
        return self.conv1(self.conv0(x)) + y


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator; its fc layer is the GAN-DL image embedding.

    Parameters
    ----------
    resolution
        Input size, a power of two >= 8.
    channels
        Number of image channels (stains), >= 1.
    channel_base, channel_max
        Feature maps at resolution r are ``min(channel_base // r, channel_max)``.
    mbstd_group
        Minibatch-std group size in training (see :class:`MinibatchStd`).
    feature_dim
        Width of the fc layer returned by :meth:`features` (512 in GAN-DL).

    Raises
    ------
    ConfigError
        For a resolution that is not a power of two >= 8 or a non-positive size option.

    Notes
    -----
    ``forward`` in training mode uses the real minibatch statistic (what the GAN game needs);
    ``forward`` in eval mode and :meth:`features` always use the running constant, so outputs
    are batch-invariant and deterministic.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        *,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        feature_dim: int = 512,
    ) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.channels = _check_positive_int(channels, "channels")
        _check_positive_int(channel_base, "channel_base")
        _check_positive_int(channel_max, "channel_max")
        self.feature_dim = _check_positive_int(feature_dim, "feature_dim")
        log2 = int(math.log2(self.resolution))
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.from_image = EqualizedConv2d(channels, ch(self.resolution), 1, activation=True)
        # fromImage's output is a raw leaky ReLU: the first block folds in its sqrt(2) gain.
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(ch(2**k), ch(2 ** (k - 1)), input_gain=_LRELU_GAIN if k == log2 else 1.0)
            for k in range(log2, 2, -1)
        )
        c4 = ch(4)
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualizedConv2d(c4 + 1, c4, 3, activation=True)
        # fc keeps its sqrt(2) gain (EqualizedLinear applies it): features are gain-corrected.
        self.fc = EqualizedLinear(c4 * 16, feature_dim, activation=True, input_gain=_LRELU_GAIN)
        self.out = EqualizedLinear(feature_dim, 1)

    def _check_input(self, img: torch.Tensor) -> None:
        expected = (self.channels, self.resolution, self.resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise DataError(
                f"the discriminator expects images of shape [N, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"(channels, height, width), got {list(img.shape)}. Check the channel selection and the "
                "tile size match the checkpoint's 'channels' and 'resolution'."
            )

    def _trunk(self, img: torch.Tensor, batch_stat: bool | None) -> torch.Tensor:
        self._check_input(img)
        x = self.from_image(img)
        for block in self.blocks:
            x = block(x)
        x = self.mbstd(x, batch_stat=batch_stat)
        x = self.conv(x)
        return self.fc(x.flatten(1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Realness scores [N, 1] (logits) for images [N, channels, resolution, resolution]."""
        return self.out(self._trunk(img, None))

    def stages(self, img: torch.Tensor) -> list[torch.Tensor]:
        """The trunk's feature maps, fine to coarse: fromImage, each block's output, the 4x4 conv.

        Batch-invariant like :meth:`features` (the minibatch-std stage uses its running constant).
        """
        self._check_input(img)
        x = self.from_image(img)
        maps = [x]
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        maps.append(self.conv(self.mbstd(x, batch_stat=False)))
        return maps

    def stage_widths(self) -> list[int]:
        """Channels of each map :meth:`stages` returns, in the same order."""
        convs = [self.from_image] + [b.conv1 for b in self.blocks] + [self.conv]
        return [int(c.weight.shape[0]) for c in convs]

    def feature_width(self, kind: str = "final") -> int:
        """Length of the vector :meth:`features` returns for ``kind``."""
        _check_kind(kind)
        return self.feature_dim if kind == "final" else 2 * sum(self.stage_widths())

    def features(self, img: torch.Tensor, kind: str = "final") -> torch.Tensor:
        """GAN-DL embedding of images [N, C, H, W].

        ``kind="final"`` (the paper's): the fc layer's activations, the input of the score,
        [N, feature_dim]. ``kind="multiscale"``: the spatial mean and standard deviation of every
        channel of every trunk stage (:meth:`stages`, fine to coarse; all means, then all standard
        deviations), [N, :meth:`feature_width`]: the early stages keep the fine texture (puncta,
        granules, edges) that the last layer has pooled away, and the standard deviations measure
        how strongly and how unevenly each learned filter fires (docs/embedding.md has the numbers).

        Both use the running minibatch-std constant regardless of train/eval mode, so the vector
        of one image does not depend on its batchmates and is identical across calls.
        """
        _check_kind(kind)
        if kind == "final":
            return self._trunk(img, False)
        maps = self.stages(img)
        means = [m.mean(dim=(2, 3)) for m in maps]
        stds = [m.std(dim=(2, 3), correction=0) for m in maps]
        return torch.cat(means + stds, dim=1)


def _check_kind(kind: str) -> None:
    # The user-facing check with the option's name is featurizers.base.check_feature_kind (torch-free).
    if kind not in ("final", "multiscale"):
        raise ConfigError(f"discriminator features {kind!r}: choose 'final' or 'multiscale'.")


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
