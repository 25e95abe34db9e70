"""The training loop every example shares: torchvision's resnet18 (random weights, so nothing is downloaded),
SGD, one pass over a loader of ``(images, class indices)`` batches, at most ``max_steps`` of them.

Each ``train_<format>.py`` beside it differs only in its loader call: that is the point of the examples.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.transforms import v2

IMAGE_SIZE = 224  # resnet18's ImageNet input size; the stylised images come in several sizes (README, --image-size)


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("output", type=Path, help="a finished pipelines.augment output folder (holds summary.json)")
    parser.add_argument("--max-steps", type=int, default=100, help="stop the epoch after this many batches")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side of the square crops trained on")
    return parser.parse_args()


def classes_of(output: Path) -> list[str]:
    """The job's sorted class list: a label index ``i`` is ``classes[i]``."""
    return json.loads((output / "summary.json").read_text())["classes"]


def image_transform(size: int) -> v2.Compose:
    """PIL image → ``(3, size, size)`` float in [0, 1], a random crop of it."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def train_one_epoch(loader, num_classes: int, max_steps: int) -> float:
    """Train a fresh resnet18 on ``loader`` for one epoch (or ``max_steps`` batches); return the last batch's loss."""
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    started, loss = time.perf_counter(), torch.tensor(float("nan"))
    for step, (images, labels) in enumerate(loader, start=1):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.3f} ({time.perf_counter() - started:.1f}s)")
        if step >= max_steps:
            break
    return loss.item()
