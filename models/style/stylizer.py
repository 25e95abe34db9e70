"""The feed-forward stylizer family: Johnson's transformer net, conditioned per style or per style embedding.

Johnson, Alahi, Fei-Fei 2016 ("Perceptual losses for real-time style transfer"): reflection padding,
two stride-2 downsampling convs, residual blocks, nearest-upsample + conv instead of transposed convs
(Odena et al. 2016, no checkerboard). Dumoulin, Shlens, Kudlur 2017 ("A learned representation for artistic
style"): every instance norm carries one scale/shift per style; a style is a row of those parameters, and a
convex mixture of rows interpolates between styles (sec. 4). Ghiasi et al. 2017 ("Exploring the structure of a
real-time, arbitrary neural artistic stylization network"): the scale/shift come from a style embedding through
dense maps instead of a table, so any painting's embedding is a style.

One network class describes every member by ``StylizerConfig``:

=====================  ===============  ==================  ==================
                       Johnson + CIN    Magenta 26 styles   Ghiasi arbitrary
=====================  ===============  ==================  ==================
channels               32, 64, 128,     32, 32, 32, 8, 4    8, 16, 32, 16, 8
                       64, 32 (width)
residual blocks        5                6                   5
conv biases            yes              no                  yes
norm on contraction    yes              yes                 no (bias + ReLU)
head                   linear (clamp)   norm + sigmoid      norm + sigmoid
pixel scale            0-255            0-1                 0-1
conditioning           N style rows     26 style rows       100-d embedding
=====================  ===============  ==================  ==================

Layer names follow pytorch/examples ``fast_neural_style`` (``conv1.conv2d``, ``in1``, ``res1.conv1`` …) so their
single-style checkpoints map onto a one-style network key by key; the head's norm is ``in6``.
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Stride-2 downsampling twice: spatial sizes must be multiples of 4 to come back to the input size.
SIZE_MULTIPLE = 4
HEADS = ("linear", "norm_sigmoid")


@dataclass(frozen=True)
class StylizerConfig:
    """Architecture of one stylizer. Old checkpoints stored only the first three fields; the defaults of the
    others are Johnson's network as this project first trained it, so they still load unchanged."""

    num_styles: int  # rows of the style tables; 0 when conditioned on an embedding
    width: float = 1.0  # channel multiplier of Johnson's 32/64/128 when ``channels`` is not given
    num_residual: int = 5
    # (conv1, conv2, conv3 = residual width, deconv1, deconv2); None: Johnson's widths times ``width``
    channels: tuple[int, int, int, int, int] | None = None
    conv_bias: bool = True
    contract_norm: bool = True  # conditional norm after conv1-3; False: bias + ReLU only (Ghiasi et al.)
    head: str = "linear"  # "linear": last conv on the pixel scale; "norm_sigmoid": norm + sigmoid (Magenta)
    pixel_scale: float = 255.0  # the network sees [0, pixel_scale]: 255 for pytorch/examples, 1 for Magenta
    embedding_size: int = 0  # > 0: conditioned on a style embedding through dense maps, not on style rows

    def __post_init__(self):
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
            if len(self.channels) != 5:
                raise ValueError(f"channels needs 5 widths (conv1-3, deconv1-2), got {self.channels}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if (self.num_styles > 0) == (self.embedding_size > 0):
            raise ValueError("a stylizer has either style rows (num_styles) or an embedding_size, not both")

    @property
    def code_size(self) -> int:
        """Length of the conditioning vector: a mixture over styles, or a style embedding."""
        return self.embedding_size or self.num_styles

    def layer_channels(self) -> tuple[int, int, int, int, int]:
        if self.channels is not None:
            return self.channels
        c1, c2, c3 = (max(4, round(c * self.width)) for c in (32, 64, 128))
        return c1, c2, c3, c2, c1

    def to_dict(self) -> dict:
        document = dataclasses.asdict(self)
        if self.channels is not None:
            document["channels"] = list(self.channels)
        return document


class ConditionalInstanceNorm2d(nn.Module):
    """Instance norm whose scale/shift are an affine map of a per-image conditioning vector.

    Style rows (Dumoulin et al.): ``weight``/``bias`` are ``(num_styles, C)`` tables and the vector is a mixture
    ``(B, num_styles)`` summing to 1, so ``mix @ weight`` blends rows. Embedding (Ghiasi et al.): the same tables
    are ``(embedding_size, C)`` dense maps and ``weight_base``/``bias_base`` ``(C,)`` their constant terms.
    """

    def __init__(self, num_features: int, code_size: int, with_base: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(code_size, num_features))
        self.bias = nn.Parameter(torch.zeros(code_size, num_features))
        if with_base:
            self.weight.data.zero_()
            self.weight_base = nn.Parameter(torch.ones(num_features))
            self.bias_base = nn.Parameter(torch.zeros(num_features))
        else:
            self.weight_base = self.bias_base = None

    def scale_shift(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, code_size)`` → per-image ``(B, C)`` scale and shift."""
        codes = codes.to(self.weight.dtype)
        scale, shift = codes @ self.weight, codes @ self.bias
        if self.weight_base is not None:
            scale, shift = scale + self.weight_base, shift + self.bias_base
        return scale, shift

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        # Instance norm (biased variance, eps 1e-5) and the affine map folded into one centred * a + b, with the
        # statistics in two passes of plain means. Not F.instance_norm (batch norm on a (1, B*C, H, W) view, which
        # copies channels-last tensors twice) nor torch.var_mean (a Welford loop): on CPU, 1 thread, the Magenta
        # net at 256² took 232 ms with the first, 143 ms with the second and ~2x less again with this form, at
        # the same distance to onnxruntime (6.8e-4 max).
        mean = x.mean((2, 3), keepdim=True)
        centred = x - mean
        var = (centred * centred).mean((2, 3), keepdim=True)
        scale, shift = self.scale_shift(codes)
        a = scale[:, :, None, None].to(x.dtype) * torch.rsqrt(var + 1e-5)
        return torch.addcmul(shift[:, :, None, None].to(x.dtype), centred, a)


class ConvLayer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        upsample: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.upsample = upsample
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv2d(self.pad(x))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, code_size: int, bias: bool = True, with_base: bool = False):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, bias=bias)
        self.in1 = ConditionalInstanceNorm2d(channels, code_size, with_base)
        self.conv2 = ConvLayer(channels, channels, 3, bias=bias)
        self.in2 = ConditionalInstanceNorm2d(channels, code_size, with_base)

    def forward(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        y = self.in1(self.conv1(x), codes).relu_()  # in place: the norm's output is fresh
        return x + self.in2(self.conv2(y), codes)


class MultiStyleTransformer(nn.Module):
    """A stylizer of the family. ``forward`` for training, ``stylize`` for inference.

    The conditioning vector of each image (``style_weights`` below) is a style mixture ``(B, num_styles)`` or a
    style embedding ``(B, embedding_size)``, per ``config``.
    """

    def __init__(self, config: StylizerConfig):
        super().__init__()
        self.config = config
        c1, c2, c3, d1, d2 = config.layer_channels()
        n, bias, base = config.code_size, config.conv_bias, config.embedding_size > 0

        def norm(channels: int) -> ConditionalInstanceNorm2d | None:
            return ConditionalInstanceNorm2d(channels, n, base)

        contract_norm = norm if config.contract_norm else (lambda _: None)
        self.conv1, self.in1 = ConvLayer(3, c1, 9, bias=bias), contract_norm(c1)
        self.conv2, self.in2 = ConvLayer(c1, c2, 3, stride=2, bias=bias), contract_norm(c2)
        self.conv3, self.in3 = ConvLayer(c2, c3, 3, stride=2, bias=bias), contract_norm(c3)
        for i in range(config.num_residual):
            self.add_module(f"res{i + 1}", ResidualBlock(c3, n, bias, base))
        self.deconv1, self.in4 = ConvLayer(c3, d1, 3, upsample=True, bias=bias), norm(d1)
        self.deconv2, self.in5 = ConvLayer(d1, d2, 3, upsample=True, bias=bias), norm(d2)
        self.deconv3 = ConvLayer(d2, 3, 9, bias=bias)
        self.in6 = norm(3) if config.head == "norm_sigmoid" else None

    @property
    def num_styles(self) -> int:
        return self.config.num_styles

    @property
    def code_size(self) -> int:
        return self.config.code_size

    def forward(self, images: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1], ``(B, code_size)`` conditioning → ``(B, 3, H, W)`` stylised (the linear
        head is not clamped).

        Any H, W: the input is reflection-padded at the bottom/right to a multiple of 4 and the output cropped
        back (as the Magenta models' own runtime does).
        """
        check_style_weights(style_weights, images.shape[0], self.code_size)
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % SIZE_MULTIPLE, -width % SIZE_MULTIPLE
        x = images * self.config.pixel_scale if self.config.pixel_scale != 1 else images
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > 4 else "replicate")
        y = x
        for conv, norm in ((self.conv1, self.in1), (self.conv2, self.in2), (self.conv3, self.in3)):
            y = conv(y)
            y = (norm(y, style_weights) if norm is not None else y).relu_()
        for i in range(self.config.num_residual):
            y = getattr(self, f"res{i + 1}")(y, style_weights)
        y = self.in4(self.deconv1(y), style_weights).relu_()
        y = self.in5(self.deconv2(y), style_weights).relu_()
        y = self.deconv3(y)
        if self.in6 is not None:
            return torch.sigmoid(self.in6(y, style_weights))[..., :height, :width]
        y = y[..., :height, :width]
        return y / self.config.pixel_scale if self.config.pixel_scale != 1 else y

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

    def norms(self) -> list[ConditionalInstanceNorm2d]:
        return [m for m in self.modules() if isinstance(m, ConditionalInstanceNorm2d)]

    def style_parameters(self) -> list[nn.Parameter]:
        """The per-style rows (CIN scale/shift): all that adding a style trains (Dumoulin et al. 2017, sec. 3)."""
        return [p for m in self.norms() for p in (m.weight, m.bias)]

    def shared_parameters(self) -> list[nn.Parameter]:
        style_ids = {id(p) for p in self.style_parameters()}
        return [p for p in self.parameters() if id(p) not in style_ids]

    def with_extra_styles(self, count: int) -> "MultiStyleTransformer":
        """A copy with ``count`` more styles; new rows start as the mean of the existing ones."""
        if self.config.embedding_size:
            raise ValueError("an embedding-conditioned stylizer has no style rows; bake() styles into one first")
        grown = MultiStyleTransformer(dataclasses.replace(self.config, num_styles=self.num_styles + count))
        grown.to(next(self.parameters()).device)
        state = {}
        for name, tensor in self.state_dict().items():
            if grown.state_dict()[name].shape != tensor.shape:  # a CIN row table
                tensor = torch.cat([tensor, tensor.mean(0, keepdim=True).expand(count, -1)], 0)
            state[name] = tensor
        grown.load_state_dict(state)
        return grown

    @torch.no_grad()
    def bake(self, embeddings: torch.Tensor) -> "MultiStyleTransformer":
        """An embedding-conditioned network → a fixed-style one whose row ``s`` is the style of
        ``embeddings[s]`` ``(N, embedding_size)``. A mixture of rows equals the mixed embedding (the maps are
        affine and mixtures sum to 1), so the baked network keeps Ghiasi's interpolation between its styles."""
        if not self.config.embedding_size:
            raise ValueError("bake() needs an embedding-conditioned stylizer")
        if embeddings.dim() != 2 or embeddings.shape[1] != self.config.embedding_size:
            raise ValueError(f"embeddings must be (N, {self.config.embedding_size}), got {tuple(embeddings.shape)}")
        config = dataclasses.replace(self.config, num_styles=embeddings.shape[0], embedding_size=0)
        baked = MultiStyleTransformer(config)
        norms = {id(m): name for name, m in self.named_modules() if isinstance(m, ConditionalInstanceNorm2d)}
        state = {}
        for name, tensor in self.state_dict().items():
            if name.endswith(("weight_base", "bias_base")):
                continue
            module_name, _, param = name.rpartition(".")
            module = self.get_submodule(module_name) if module_name else self
            if id(module) in norms:
                scale, shift = module.scale_shift(embeddings.to(tensor.dtype).to(tensor.device))
                tensor = scale if param == "weight" else shift
            state[name] = tensor
        baked.load_state_dict(state)
        return baked.to(next(self.parameters()).device)


def check_style_weights(style_weights: torch.Tensor, batch: int, code_size: int) -> None:
    if style_weights.shape != (batch, code_size):
        raise ValueError(f"style_weights must be ({batch}, {code_size}), got {tuple(style_weights.shape)}")


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
    codes = one_hot([0], model.num_styles) if model.num_styles else torch.zeros(1, model.code_size)
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, height, width), codes)
    finally:
        for h in hooks:
            h.remove()
    return flops
