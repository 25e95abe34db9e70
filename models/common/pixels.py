"""The one pixel convention of the project and the only conversions to and from it.

Networks take and return float32 RGB ``(B, 3, H, W)`` (or one ``(3, H, W)`` image) in [0, 1]. Decoders, encoders and
Beam workers exchange uint8 RGB ``(..., H, W, 3)`` arrays: 4x fewer bytes than float, and what Pillow speaks.
ImageNet-trained networks normalise inside themselves (``ImageNetNormalize``), so callers never see those statistics.
"""

import numpy as np
import torch
from PIL import Image
from torch import nn

# The per-channel statistics torchvision's ImageNet weights were trained with (torchvision.transforms.Normalize in
# every ImageNet recipe of torchvision's reference scripts).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def uint8_to_float(pixels: np.ndarray | torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """``(H, W, 3)`` / ``(B, H, W, 3)`` uint8 → ``(3, H, W)`` / ``(B, 3, H, W)`` float32 in [0, 1], contiguous.

    A tensor stays on its device (upload uint8, convert there); an array that numpy marks read-only (e.g.
    ``np.asarray`` of a PIL image) is copied, since ``torch.from_numpy`` would share memory it may not write.
    ``channels_last``: keep the pixels' HWC layout in memory (``torch.channels_last`` strides, no reordering copy),
    which is what oneDNN's convolutions want; otherwise the result is in the default contiguous layout (CPU kernels
    are picked by layout too, so results that must match bit for bit should agree on it).
    """
    if isinstance(pixels, np.ndarray):
        pixels = np.ascontiguousarray(pixels)
        pixels = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    images = pixels.movedim(-1, -3)
    return (images if channels_last else images.contiguous()).float().div_(255.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` / ``(B, 3, H, W)`` float in [0, 1] → ``(H, W, 3)`` / ``(B, H, W, 3)`` uint8 on the same device;
    values are clamped to [0, 1] and rounded to the nearest level."""
    return images.detach().float().clamp(0, 1).mul_(255.0).round_().to(torch.uint8).movedim(-3, -1)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """One ``(3, H, W)`` (or ``(1, 3, H, W)``) float image in [0, 1] → an RGB PIL image."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    return Image.fromarray(np.ascontiguousarray(float_to_uint8(image).cpu().numpy()), "RGB")


class ImageNetNormalize(nn.Module):
    """``(B, 3, H, W)`` in [0, 1] → normalised with ``IMAGENET_MEAN``/``IMAGENET_STD`` (buffers, not saved)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std
