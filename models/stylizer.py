"""Feed-forward multi-style network: Johnson's transformer net with conditional instance norm.

Johnson, Alahi, Fei-Fei 2016 ("Perceptual losses for real-time style transfer"): reflection padding,
two stride-2 downsampling convs, five residual blocks, nearest-upsample + conv instead of transposed
convs (Odena et al. 2016, no checkerboard). Dumoulin, Shlens, Kudlur 2017 ("A learned representation for
artistic style"): every instance norm carries one scale/shift per style; a style is a row of those
parameters, and a convex mixture of rows interpolates between styles (sec. 4).

Layer names follow pytorch/examples ``fast_neural_style`` (``conv1.conv2d``, ``in1``, ``res1.conv1`` …)
so their single-style checkpoints map onto a one-style network key by key.
"""

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Stride-2 downsampling twice: spatial sizes must be multiples of 4 to come back to the input size.
SIZE_MULTIPLE = 4


@dataclass(frozen=True)
class StylizerConfig:
    num_styles: int
    width: float = 1.0  # channel multiplier: 32/64/128 channels at 1.0; 0.5 is ~4x fewer FLOPs
    num_residual: int = 5

    def channels(self) -> tuple[int, int, int]:
        return tuple(max(4, round(c * self.width)) for c in (32, 64, 128))

    def to_dict(self) -> dict:
        return asdict(self)


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose affine parameters are a mixture of per-style rows.

    ``weight``/``bias``: ``(num_styles, C)``. ``style_weights``: ``(B, num_styles)``, rows summing to 1.
    """

    def __init__(self, num_features: int, num_styles: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        normalised = F.instance_norm(x, eps=1e-5)
        mix = style_weights.to(self.weight.dtype)
        scale = (mix @ self.weight)[:, :, None, None]
        shift = (mix @ self.bias)[:, :, None, None]
        return normalised * scale.to(x.dtype) + shift.to(x.dtype)


class ConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(self.pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, num_styles: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = ConditionalInstanceNorm2d(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = ConditionalInstanceNorm2d(channels, num_styles)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x), style_weights))
        return x + self.in2(self.conv2(y), style_weights)


class MultiStyleTransformer(nn.Module):
    """N styles in one network. ``forward`` for training, ``stylize`` for inference."""

    def __init__(self, config: StylizerConfig):
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels()
        n = config.num_styles
        self.conv1, self.in1 = ConvLayer(3, c1, 9), ConditionalInstanceNorm2d(c1, n)
        self.conv2, self.in2 = ConvLayer(c1, c2, 3, stride=2), ConditionalInstanceNorm2d(c2, n)
        self.conv3, self.in3 = ConvLayer(c2, c3, 3, stride=2), ConditionalInstanceNorm2d(c3, n)
        for i in range(config.num_residual):
            self.add_module(f"res{i + 1}", ResidualBlock(c3, n))
        self.deconv1, self.in4 = ConvLayer(c3, c2, 3, upsample=True), ConditionalInstanceNorm2d(c2, n)
        self.deconv2, self.in5 = ConvLayer(c2, c1, 3, upsample=True), ConditionalInstanceNorm2d(c1, n)
        self.deconv3 = ConvLayer(c1, 3, 9)

    @property
    def num_styles(self) -> int:
        return self.config.num_styles

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1], ``(B, N)`` mixtures → ``(B, 3, H, W)`` stylised, not clamped.

        Any H, W: the input is reflection-padded to a multiple of 4 and the output cropped back.
        Internally pixels are on the 0–255 scale of pytorch/examples, so imported weights work unchanged.
        """
        check_style_weights(style_weights, images.shape[0], self.num_styles)
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = images * 255.0
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > 4 else "replicate")
        y = F.relu(self.in1(self.conv1(x), style_weights))
        y = F.relu(self.in2(self.conv2(y), style_weights))
        y = F.relu(self.in3(self.conv3(y), style_weights))
        for i in range(self.config.num_residual):
            y = getattr(self, f"res{i + 1}")(y, style_weights)
        y = F.relu(self.in4(self.deconv1(y), style_weights))
        y = F.relu(self.in5(self.deconv2(y), style_weights))
        y = self.deconv3(y)
        return y[..., :height, :width] / 255.0

    @torch.inference_mode()
    def stylize(self, images: torch.Tensor, style_weights: torch.Tensor, alpha: float | torch.Tensor = 1.0):
        """Inference: stylise, blend with the input by ``alpha`` (scalar or ``(B,)``), clamp to [0, 1].

        ``alpha = 0`` returns the input exactly; ``alpha = 1`` the fully stylised image.
        """
        stylised = self(images, style_weights).to(images.dtype)
        if not torch.is_tensor(alpha):
            if alpha == 1.0:
                return stylised.clamp_(0, 1)
            alpha = torch.tensor(float(alpha))
        alpha = alpha.to(device=images.device, dtype=images.dtype).reshape(-1, 1, 1, 1)
        return torch.lerp(images, stylised, alpha).clamp_(0, 1)

    def style_parameters(self) -> list[nn.Parameter]:
        """The per-style rows (CIN scale/shift): all that adding a style trains (Dumoulin et al. 2017, sec. 3)."""
        return [p for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d) for p in (m.weight, m.bias)]

    def shared_parameters(self) -> list[nn.Parameter]:
        style_ids = {id(p) for p in self.style_parameters()}
        return [p for p in self.parameters() if id(p) not in style_ids]

    def with_extra_styles(self, count: int) -> "MultiStyleTransformer":
        """A copy with ``count`` more styles; new rows start as the mean of the existing ones."""
        config = StylizerConfig(self.config.num_styles + count, self.config.width, self.config.num_residual)
        grown = MultiStyleTransformer(config).to(next(self.parameters()).device)
        state = {}
        for name, tensor in self.state_dict().items():
            if grown.state_dict()[name].shape != tensor.shape:  # a CIN row table
                tensor = torch.cat([tensor, tensor.mean(0, keepdim=True).expand(count, -1)], 0)
            state[name] = tensor
        grown.load_state_dict(state)
        return grown


def check_style_weights(style_weights: torch.Tensor, batch: int, num_styles: int) -> None:
    if style_weights.shape != (batch, num_styles):
        raise ValueError(f"style_weights must be ({batch}, {num_styles}), got {tuple(style_weights.shape)}")


def one_hot(indices, num_styles: int) -> torch.Tensor:
    """Style indices → ``(B, N)`` float one-hot mixtures."""
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_styles):
        raise ValueError(f"style index out of range for {num_styles} styles: {indices.tolist()}")
    return F.one_hot(indices, num_styles).float()


def count_flops(model: MultiStyleTransformer, height: int, width: int) -> int:
    """Multiply-accumulates ×2 of every convolution for one ``height × width`` image (norms/ReLUs ignored, <1%)."""
    flops = 0
    hooks = []

    def hook(module, inputs, output):
        nonlocal flops
        k_h, k_w = module.kernel_size
        flops += 2 * output.numel() // output.shape[0] * module.in_channels * k_h * k_w // module.groups

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width), one_hot([0], model.num_styles))
    finally:
        for h in hooks:
            h.remove()
    return flops
