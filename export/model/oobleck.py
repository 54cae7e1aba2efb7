"""Oobleck convolutional encoder and decoder: the conv stacks of the Stable Audio Open VAE.

Our own implementation of the architecture of stable-audio-tools 0.0.20 (``OobleckEncoder``,
``OobleckDecoder`` and their blocks). Attribute names and ``nn.Sequential`` indices follow that
code on purpose: its state dicts then load into these modules with identical keys
(``layers.1.layers.0.layers.1.weight_g`` ...), under ``load_state_dict(strict=True)``.

Tensors are (B, C, T): batch, channels, time. Only the SAO configuration is supported: no
anti-aliased activations, no nearest-neighbour upsampling, no depthwise convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _WeightNormConv(nn.Module):
    """Weight-normalised convolution weight: ``weight = g * v / ||v||``.

    Parameters carry the names that ``torch.nn.utils.weight_norm(conv, dim=0)`` gives them
    (``weight_g``, ``weight_v``, ``bias``). The norm runs over every dim but 0, so ``weight_g``
    has shape (weight.shape[0], 1, 1): (out, 1, 1) for a conv, (in, 1, 1) for a transposed conv.
    """

    def __init__(
        self,
        weight_shape: tuple[int, int, int],
        bias_channels: int,
        *,
        bias: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.weight_g = nn.Parameter(torch.empty(weight_shape[0], 1, 1, **factory))
        self.weight_v = nn.Parameter(torch.empty(weight_shape, **factory))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(bias_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same init as torch's Conv1d, then g = ||v|| as weight_norm does, so a fresh module
        # starts as the plain conv it wraps.
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        with torch.no_grad():
            self.weight_g.copy_(self._v_norm())
        if self.bias is not None:
            fan_in = self.weight_v.shape[1] * self.weight_v.shape[2]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _v_norm(self) -> Tensor:
        return self.weight_v.norm(p=2, dim=(1, 2), keepdim=True)

    @property
    def weight(self) -> Tensor:
        """The effective convolution weight, same shape as ``weight_v``."""
        return self.weight_v * (self.weight_g / self._v_norm())


class WNConv1d(_WeightNormConv):
    """Weight-normalised ``Conv1d``: (B, in, T) -> (B, out, T')."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            (out_channels, in_channels, kernel_size),
            out_channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.stride = stride
        self.padding = padding
        self.dilation = dilation

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def folded(self) -> nn.Conv1d:
        """A plain ``nn.Conv1d`` with the current effective weight; same outputs."""
        out_channels, in_channels, kernel_size = self.weight_v.shape
        conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias is not None,
            device=self.weight_v.device,
            dtype=self.weight_v.dtype,
        )
        _copy_folded(self, conv)
        return conv


class WNConvTranspose1d(_WeightNormConv):
    """Weight-normalised ``ConvTranspose1d``: (B, in, T) -> (B, out, T').

    The weight is stored (in, out, kernel) as in torch, so ``weight_g`` is (in, 1, 1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            (in_channels, out_channels, kernel_size),
            out_channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding)

    def folded(self) -> nn.ConvTranspose1d:
        """A plain ``nn.ConvTranspose1d`` with the current effective weight; same outputs."""
        in_channels, out_channels, kernel_size = self.weight_v.shape
        conv = nn.ConvTranspose1d(
            in_channels,
            out_channels,
            kernel_size,
            stride=self.stride,
            padding=self.padding,
            bias=self.bias is not None,
            device=self.weight_v.device,
            dtype=self.weight_v.dtype,
        )
        _copy_folded(self, conv)
        return conv


def _copy_folded(source: _WeightNormConv, target: nn.Conv1d | nn.ConvTranspose1d) -> None:
    with torch.no_grad():
        target.weight.copy_(source.weight)
        if source.bias is not None and target.bias is not None:
            target.bias.copy_(source.bias)
    target.requires_grad_(source.weight_v.requires_grad)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace every weight-normalised conv in ``module`` by a plain conv, in place.

    Outputs are unchanged: the plain conv holds exactly the weight the module computed per call,
    so the graph only loses the per-call norm, which ONNX export and inference do not need.
    State-dict keys change from ``weight_g``/``weight_v`` to ``weight``, so fold after loading a
    checkpoint, never before. Returns ``module`` (or the folded conv when ``module`` itself is one).
    """
    if isinstance(module, (WNConv1d, WNConvTranspose1d)):
        return module.folded()
    for name, child in module.named_children():
        if isinstance(child, (WNConv1d, WNConvTranspose1d)):
            setattr(module, name, child.folded())
        else:
            fold_weight_norm(child)
    return module


class SnakeBeta(nn.Module):
    """Per-channel periodic activation ``x + sin(a x)^2 / b`` (BigVGAN, arXiv 2206.04658).

    ``alpha`` and ``beta`` hold log a and log b (the log-scale variant SAO uses), one per
    channel, initialised to 0 so a = b = 1. Shape-preserving on (B, C, T).
    """

    # Keeps 1/b finite should exp(log b) underflow to zero; SAT's value, kept for parity.
    _EPS = 1e-9

    def __init__(
        self,
        channels: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))
        self.beta = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        freq = self.alpha.exp()[:, None]  # (C, 1), broadcasts over (B, C, T)
        inv_mag = 1.0 / (self.beta.exp()[:, None] + self._EPS)
        return x + inv_mag * torch.sin(x * freq) ** 2


def _activation(
    channels: int, use_snake: bool, device: torch.device | str | None, dtype: torch.dtype | None
) -> nn.Module:
    if use_snake:
        return SnakeBeta(channels, device=device, dtype=dtype)
    return nn.ELU()


class ResidualUnit(nn.Module):
    """``x + conv1x1(act(conv7_dilated(act(x))))``; (B, C, T) -> (B, C, T).

    The dilated conv is padded by 3 * dilation, so time length is preserved.
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        *,
        use_snake: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.layers = nn.Sequential(
            _activation(channels, use_snake, **factory),
            WNConv1d(channels, channels, 7, dilation=dilation, padding=3 * dilation, **factory),
            _activation(channels, use_snake, **factory),
            WNConv1d(channels, channels, 1, **factory),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


# Dilations of the three residual units in every encoder and decoder block.
_DILATIONS = (1, 3, 9)


class EncoderBlock(nn.Module):
    """Three residual units, then a strided conv: (B, C_in, T) -> (B, C_out, T / stride).

    The strided conv has kernel 2 * stride and padding ceil(stride / 2), which divides the
    length exactly by an even stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        use_snake: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.layers = nn.Sequential(
            *(ResidualUnit(in_channels, d, use_snake=use_snake, **factory) for d in _DILATIONS),
            _activation(in_channels, use_snake, **factory),
            WNConv1d(
                in_channels,
                out_channels,
                2 * stride,
                stride=stride,
                padding=math.ceil(stride / 2),
                **factory,
            ),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """A transposed strided conv, then three residual units: (B, C_in, T) -> (B, C_out, T * stride).

    Mirrors ``EncoderBlock``: kernel 2 * stride, padding ceil(stride / 2), exact for even strides.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        *,
        use_snake: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.layers = nn.Sequential(
            _activation(in_channels, use_snake, **factory),
            WNConvTranspose1d(
                in_channels,
                out_channels,
                2 * stride,
                stride=stride,
                padding=math.ceil(stride / 2),
                **factory,
            ),
            *(ResidualUnit(out_channels, d, use_snake=use_snake, **factory) for d in _DILATIONS),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def _widths(channels: int, c_mults: Sequence[int]) -> list[int]:
    # The stem runs at `channels`; block i maps widths[i] -> widths[i + 1].
    return [channels * m for m in (1, *c_mults)]


class OobleckEncoder(nn.Module):
    """Audio (B, audio_channels, T) -> pre-bottleneck features (B, out_channels, T / prod(strides)).

    Layout of ``layers``: 7-tap stem conv, one ``EncoderBlock`` per stride, activation, 3-tap
    output conv. For the VAE, ``out_channels`` is twice the latent dim (mean and scale).
    """

    def __init__(
        self,
        audio_channels: int,
        channels: int,
        c_mults: Sequence[int],
        strides: Sequence[int],
        out_channels: int,
        *,
        use_snake: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        widths = _widths(channels, c_mults)
        self.layers = nn.Sequential(
            WNConv1d(audio_channels, widths[0], 7, padding=3, **factory),
            *(
                EncoderBlock(widths[i], widths[i + 1], s, use_snake=use_snake, **factory)
                for i, s in enumerate(strides)
            ),
            _activation(widths[-1], use_snake, **factory),
            WNConv1d(widths[-1], out_channels, 3, padding=1, **factory),
        )

    def forward(self, audio: Tensor) -> Tensor:
        return self.layers(audio)


class OobleckDecoder(nn.Module):
    """Latents (B, latent_dim, T) -> audio (B, audio_channels, T * prod(strides)).

    Layout of ``layers``: 7-tap stem conv, one ``DecoderBlock`` per stride in reverse order,
    activation, bias-free 7-tap output conv, then tanh or identity.
    """

    def __init__(
        self,
        audio_channels: int,
        channels: int,
        c_mults: Sequence[int],
        strides: Sequence[int],
        latent_dim: int,
        *,
        use_snake: bool,
        final_tanh: bool,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        widths = _widths(channels, c_mults)
        self.layers = nn.Sequential(
            WNConv1d(latent_dim, widths[-1], 7, padding=3, **factory),
            *(
                DecoderBlock(widths[i + 1], widths[i], strides[i], use_snake=use_snake, **factory)
                for i in reversed(range(len(strides)))
            ),
            _activation(widths[0], use_snake, **factory),
            WNConv1d(widths[0], audio_channels, 7, padding=3, bias=False, **factory),
            # Kept as a (parameter-free) layer even when off so the indices match SAT's.
            nn.Tanh() if final_tanh else nn.Identity(),
        )

    def forward(self, latents: Tensor) -> Tensor:
        return self.layers(latents)
