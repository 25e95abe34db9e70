"""The one small CNN every arm trains, its training loop, classic augmentation and the metrics.

Every arm gets the same network, the same optimiser and the same number of steps and images per step: arms
differ only in what the training images are (``TrainingSet``) and in the per-batch transform applied to them.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# A batch transform: (images (B, 3, S, S) float in [0, 1], keys (B,) int64, epoch) → images; with a consistency term
# (``TrainSettings.consistency`` > 0), ``(views × B, 3, S, S)``: the originals first, then each further view.
BatchTransform = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class TrainingSet:
    """What one arm trains on. ``pixels`` ``(N, S, S, 3)`` uint8, ``labels`` ``(N,)`` int64, ``keys`` ``(N,)`` int64
    per-sample seeds for online draws; ``stylised`` ``(N,)`` bool marks rows that came from the augment job."""

    pixels: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    stylised: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    width: int = 16  # channels of the stem; x2, x4, x8 in the blocks after it
    # AugMix's Jensen-Shannon consistency (Hendrycks et al. 2020): loss = CE(originals) + consistency × JS(p_original,
    # p_view1, ..., p_viewV-1) over the transform's ``views``; 0 is plain cross-entropy on every image.
    consistency: float = 0.0
    views: int = 1  # images the transform returns per drawn image; ``batch_size`` counts them all (like for like)


class SmallCNN(nn.Module):
    """A 5×5 stride-2 stem, three 3×3 conv blocks (batch norm, ReLU; max-pool after the first two), global average
    pool, linear: 64 px → 8×8 features, ~31 MFLOPs per 64² image at width 16."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()

        def block(inputs: int, outputs: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
            conv = nn.Conv2d(inputs, outputs, kernel, stride, padding=kernel // 2, bias=False)
            return [conv, nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, width, 5, 2),
            *block(width, width * 2),
            nn.MaxPool2d(2),
            *block(width * 2, width * 4),
            nn.MaxPool2d(2),
            *block(width * 4, width * 8),
        )
        self.head = nn.Linear(width * 8, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in [0, 1] → ``(B, num_classes)`` logits."""
        features = self.features(images - 0.5)
        return self.head(features.mean(dim=(2, 3)))


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 → ``(B, 3, H, W)`` float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


def train_classifier(
    data: TrainingSet,
    num_classes: int,
    settings: TrainSettings,
    seed: int,
    transform: BatchTransform | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[SmallCNN, dict]:
    """Train a fresh ``SmallCNN`` for ``settings.steps`` steps; epochs are shuffled passes over ``data`` (the last
    batch of a pass is dropped, so every step sees ``batch_size`` images). Returns the model in eval mode and
    timings. ``seed`` fixes the initial weights and the order; ``transform`` draws from its own seeds."""
    torch.manual_seed(seed)
    # channels-last lets oneDNN skip layout reorders around each conv: 1.4x per step here (64², batch 64, 1 thread)
    model = SmallCNN(num_classes, settings.width).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, settings.lr, total_steps=settings.steps, pct_start=0.15)
    order = np.random.default_rng([seed, len(data)])
    batch = min(settings.batch_size // settings.views, len(data))
    per_epoch = len(data) // batch
    labels = torch.from_numpy(data.labels)
    keys = torch.from_numpy(data.keys)
    transform_s = 0.0
    started = time.perf_counter()
    model.train()
    step = 0
    while step < settings.steps:
        epoch = step // per_epoch
        permutation = order.permutation(len(data))
        for start in range(0, per_epoch * batch, batch):
            if step >= settings.steps:
                break
            index = np.sort(permutation[start : start + batch])
            images = to_tensor(data.pixels[index])
            if transform is not None:
                began = time.perf_counter()
                images = transform(images, keys[index], epoch)
                transform_s += time.perf_counter() - began
            logits = model(images.contiguous(memory_format=torch.channels_last))
            if settings.consistency > 0:
                views = logits.reshape(settings.views, len(index), -1)
                loss = F.cross_entropy(views[0], labels[index]) + settings.consistency * jensen_shannon(views)
            else:
                loss = F.cross_entropy(logits, labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            if progress is not None:
                progress(step)
    model.eval()
    return model, {"train_s": time.perf_counter() - started, "transform_s": transform_s, "epochs": epoch + 1}


def jensen_shannon(logits: torch.Tensor) -> torch.Tensor:
    """``(V, B, C)`` logits → the generalised Jensen-Shannon divergence of the V predicted distributions, averaged
    over the batch: mean over views of KL(p_v ‖ M), M = the views' mean distribution (natural log), AugMix's term:
    0 for identical distributions, ln V at most. M is clamped to [1e-7, 1] before its log, as AugMix does."""
    probabilities = logits.softmax(dim=-1)
    mixture = probabilities.mean(dim=0).clamp(1e-7, 1).log()
    return sum(F.kl_div(mixture, p, reduction="batchmean") for p in probabilities) / len(probabilities)


@torch.no_grad()
def predict(model: SmallCNN, pixels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 → ``(N,)`` predicted classes."""
    return np.concatenate(
        [
            model(to_tensor(pixels[i : i + batch_size]).contiguous(memory_format=torch.channels_last)).argmax(1).numpy()
            for i in range(0, len(pixels), batch_size)
        ]
    )


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions == labels).mean())


def shape_bias(predictions: np.ndarray, shape_labels: np.ndarray, texture_labels: np.ndarray) -> float | None:
    """Geirhos et al. 2019: of the cue-conflict images classified as either their shape's or their texture's class,
    the fraction classified by shape. ``None`` when no image was (the network followed neither cue)."""
    shape_hits = int((predictions == shape_labels).sum())
    texture_hits = int((predictions == texture_labels).sum())
    if shape_hits + texture_hits == 0:
        return None
    return shape_hits / (shape_hits + texture_hits)


class ClassicAugment:
    """Crop/flip/colour jitter, the usual recipe (torchvision's ``RandomResizedCrop(scale=(0.6, 1))``,
    ``RandomHorizontalFlip``, ``ColorJitter(0.4, 0.4, 0.4, 0.02)``), on a whole batch at once, with each sample's
    parameters drawn from ``(seed, key, epoch)``. The hue jitter is ±0.02 of the wheel, a fifth of the 0.1 between
    the generated classes' hues (torchvision's customary 0.1 equals that spacing: it would move one class's colour
    onto the next, a colour randomisation, not a jitter)."""

    def __init__(self, seed: int = 0, scale=(0.6, 1.0), jitter=(0.4, 0.4, 0.4, 0.02)):
        self.seed = seed
        self.scale = scale
        self.brightness, self.contrast, self.saturation, self.hue = jitter

    def _draw(self, key: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(key), int(epoch), 1])  # stream 1: apart from style draws
        area = rng.uniform(*self.scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        width, height = min(1.0, np.sqrt(area * aspect)), min(1.0, np.sqrt(area / aspect))
        cx, cy = rng.uniform(-1 + width, 1 - width), rng.uniform(-1 + height, 1 - height)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        b, c, s = (rng.uniform(1 - j, 1 + j) for j in (self.brightness, self.contrast, self.saturation))
        h = rng.uniform(-self.hue, self.hue)
        return np.array([width * flip, height, cx, cy, b, c, s, h], np.float32)

    def __call__(self, images: torch.Tensor, keys: torch.Tensor, epoch: int) -> torch.Tensor:
        params = torch.from_numpy(np.stack([self._draw(k, epoch) for k in keys.tolist()]))
        count = images.shape[0]
        theta = torch.zeros(count, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = params[:, 0], params[:, 1]
        theta[:, 0, 2], theta[:, 1, 2] = params[:, 2], params[:, 3]
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        b, c, s, h = (params[:, i].reshape(-1, 1, 1, 1) for i in range(4, 8))
        out = (out * b).clamp(0, 1)
        grey = (out * LUMA.reshape(1, 3, 1, 1)).sum(1, keepdim=True)
        out = ((out - grey.mean(dim=(2, 3), keepdim=True)) * c + grey.mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
        grey = (out * LUMA.reshape(1, 3, 1, 1)).sum(1, keepdim=True)
        out = ((out - grey) * s + grey).clamp(0, 1)
        return rotate_hue(out, h.reshape(-1)).clamp(0, 1)


LUMA = torch.tensor([0.299, 0.587, 0.114])


def rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by ``turns`` (fractions of the colour wheel) about the grey axis (YIQ)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    angle = turns * 2 * np.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(turns), 3, 3)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    matrix = from_yiq @ rotation @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images)


class ColourRandomise:
    """The cheap rival of style augmentation: destroy colour and fine texture, keep the outline. Per sample and epoch
    (from ``(seed, key, epoch)``): a hue rotation anywhere on the wheel, greyscale with probability 0.2, a Gaussian
    blur (sigma 0–1.5 px) with probability 0.5, and Gaussian noise (std 0–0.06)."""

    def __init__(self, seed: int = 0, grey: float = 0.2, blur: float = 0.5, max_sigma: float = 1.5, noise=0.06):
        self.seed, self.grey, self.blur, self.max_sigma, self.noise = seed, grey, blur, max_sigma, noise

    def _draw(self, key: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(key), int(epoch), 2])  # stream 2: apart from classic and style
        hue = rng.uniform(0, 1)
        grey = float(rng.random() < self.grey)
        sigma = rng.uniform(0.0, self.max_sigma) if rng.random() < self.blur else 0.0
        return np.array([hue, grey, sigma, rng.uniform(0, self.noise), rng.integers(2**31)], np.float64)

    def __call__(self, images: torch.Tensor, keys: torch.Tensor, epoch: int) -> torch.Tensor:
        params = np.stack([self._draw(k, epoch) for k in keys.tolist()])
        out = rotate_hue(images, torch.from_numpy(params[:, 0]).float()).clamp(0, 1)
        grey = (out * LUMA.reshape(1, 3, 1, 1)).sum(1, keepdim=True).expand_as(out)
        out = torch.where(torch.from_numpy(params[:, 1] > 0).reshape(-1, 1, 1, 1), grey, out)
        blurred = []
        for image, sigma in zip(out, params[:, 2], strict=True):
            blurred.append(_gaussian_blur(image, float(sigma)) if sigma > 0.05 else image)
        out = torch.stack(blurred)
        noise = torch.stack(
            [
                torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(int(p[4]))) * float(p[3])
                for p in params
            ]
        )
        return (out + noise).clamp(0, 1)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(3, H, W)`` blurred with a separable Gaussian of ``sigma`` px (reflected edges)."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    channels = image.shape[0]
    horizontal = F.conv2d(padded, kernel.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(horizontal, kernel.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)[0]
