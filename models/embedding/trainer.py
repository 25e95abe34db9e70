"""Training loop of the text-supervised CNN: streamed examples in, checkpoints and loss curves out.

The loop knows nothing of Parquet or Beam: it takes ``train_examples(epoch)`` and ``heldout_examples()``,
callables returning iterables of ``Example``s (a post's id, its image as ``(S, S, 3)`` uint8, its text target).
Images arrive a little larger than ``image_size`` (``source_side``, the 256/224 ImageNet convention) and are
randomly cropped and flipped here; held-out images are centre-cropped.

Files in ``output_dir``: ``model.safetensors`` (model + text model, rewritten after every epoch),
``train_state.pt`` (optimizer, scaler, loss parameters, history: a checksummed ``models.common.resume`` state) for
``resume``, ``history.json`` and ``loss_curve.png``.
"""

import io
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from queue import Empty, Full, Queue
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from models.common.batching import in_fixed_passes
from models.common.errors import CheckpointError, TrainingDiverged, UsageError
from models.common.files import write_atomically
from models.common.loss_curve import Curve, draw_loss_curves
from models.common.pixels import uint8_to_float
from models.common.resume import check_same_settings, load_resume_state, save_resume_state
from models.embedding.net import EMBEDDING_KIND, EmbeddingNet, save_embedding_model
from models.embedding.text_targets import TextTargets

RESUME_KIND = f"{EMBEDDING_KIND}.resume"
RESUME_KEYS = ("epoch", "config", "model", "loss", "optimizer", "scaler", "history", "step_losses")


class Example(NamedTuple):
    id: str
    image: np.ndarray  # (S, S, 3) uint8
    target: np.ndarray  # (D,) float32


def source_side(image_size: int) -> int:
    """Side images are prepared at before cropping: 256 for 224, the ImageNet resize/crop ratio."""
    return round(image_size * 8 / 7)


def images_to_tensor(images: list[np.ndarray], size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(S, S, 3)`` uint8 arrays → ``(B, 3, size, size)`` float in [0, 1].

    With a ``generator``: a random crop and a random horizontal flip per image (training augmentation);
    without: the centre crop (evaluation, embedding).
    """
    batch = np.stack(images)
    _, height, width, _ = batch.shape
    if height < size or width < size:
        raise ValueError(f"images of {width}x{height} are smaller than the crop {size}")
    crops = []
    for image in batch:
        if generator is None:
            top, left = (height - size) // 2, (width - size) // 2
        else:
            top = int(torch.randint(height - size + 1, (1,), generator=generator))
            left = int(torch.randint(width - size + 1, (1,), generator=generator))
        crop = image[top : top + size, left : left + size]
        if generator is not None and torch.rand(1, generator=generator).item() < 0.5:
            crop = crop[:, ::-1]
        crops.append(crop)
    return uint8_to_float(np.stack(crops))


class ImageEmbedder:
    """The text-supervised CNN on a device, for prepared images (``(S, S, 3)`` uint8, ``S = source_side``): centre
    crop to ``image_size``, then forward passes of exactly ``batch_size`` (``models.common.batching``), so an image's
    embedding does not depend on its batch-mates. Create once per worker process; threads may share it."""

    def __init__(self, model: nn.Module, device: torch.device, image_size: int, batch_size: int):
        self.model = model.to(device).eval()
        self.device = device
        self.image_size = image_size
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """``[(S, S, 3) uint8, ...]`` → ``(B, out_dim)`` float32."""
        batch = images_to_tensor(images, self.image_size)
        passes = in_fixed_passes(
            lambda chunk: self.model.embed(chunk.to(self.device)).cpu().numpy(), (batch,), self.batch_size
        )
        return np.concatenate(passes)


def batched(examples: Iterable[Example], batch_size: int) -> Iterator[list[Example]]:
    batch = []
    for example in examples:
        batch.append(example)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def prefetched(items: Iterable, depth: int = 256) -> Iterator:
    """``items`` produced by a background thread, up to ``depth`` ahead: image decoding overlaps the training step.

    An exception in the producer is raised in the consumer; a consumer that stops early stops the producer.
    """
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
            queue.put(finished)
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put(_ProducerFailed(exc))

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is finished:
                return
            if isinstance(item, _ProducerFailed):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get(timeout=0.1)
            except Empty:
                pass


class _ProducerFailed:
    def __init__(self, error: BaseException):
        self.error = error


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    # Adam at 1e-3 for a head on a random backbone; lower (1e-4) when fine-tuning ImageNet weights.
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int = 224
    heldout_fraction: float = 0.1
    seed: int = 0


class EmbeddingTrainer:
    def __init__(
        self,
        model: EmbeddingNet,
        loss: nn.Module,
        text: TextTargets,
        config: TrainConfig,
        output_dir: str,
        device: torch.device | str = "cpu",
        progress: bool = True,
        extra_training_facts: dict | None = None,
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.loss = loss.to(self.device)
        self.text = text
        self.config = config
        self.output_dir = output_dir
        self.progress = progress
        self.facts = extra_training_facts or {}
        self.optimizer = torch.optim.AdamW(
            list(self.model.parameters()) + list(self.loss.parameters()), lr=config.lr, weight_decay=config.weight_decay
        )
        # AMP on CUDA only: bf16 where the GPU has it (no loss scaling needed), else fp16 with a GradScaler.
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.history: list[dict] = []
        self.step_losses: list[float] = []
        self.start_epoch = 0

    # files ---------------------------------------------------------------------------------------------------
    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)

    def resume(self) -> int:
        """Load ``train_state.pt``; return the number of epochs already done."""
        path = self.path("train_state.pt")
        state = load_resume_state(path, RESUME_KIND, RESUME_KEYS)
        if not isinstance(state["config"], dict):
            raise CheckpointError(f"resume state {path} is damaged (its config is not a dict)")
        # --epochs may grow; every other setting must be the run's (pipelines.train_embeddings checks the flags).
        recorded = {key: value for key, value in state["config"].items() if key != "epochs"}
        current = {key: value for key, value in asdict(self.config).items() if key != "epochs"}
        check_same_settings(path, recorded, current)
        try:
            self.model.load_state_dict(state["model"])
            self.loss.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
            self.history = json.loads(state["history"])
            self.step_losses = [float(loss) for loss in state["step_losses"]]
            self.start_epoch = int(state["epoch"])
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:  # a hand-made or foreign state
            raise CheckpointError(f"resume state {path} is damaged ({type(exc).__name__}: {exc})") from None
        return self.start_epoch

    def save(self, epoch: int) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        training = {"train": asdict(self.config), "epochs_done": epoch, "history": self.history, **self.facts}
        save_embedding_model(self.path("model.safetensors"), self.model, self.text, training)
        state = {
            "epoch": epoch,
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": json.dumps(self.history),
            "step_losses": torch.tensor(self.step_losses, dtype=torch.float64),
        }
        save_resume_state(self.path("train_state.pt"), RESUME_KIND, state)
        write_atomically(self.path("history.json"), json.dumps(self.history, indent=2).encode())
        draw_loss_curve(self.step_losses, self.history, self.path("loss_curve.png"))

    # loop ----------------------------------------------------------------------------------------------------
    def fit(
        self,
        train_examples: Callable[[int], Iterable[Example]],
        heldout_examples: Callable[[], Iterable[Example]] | None = None,
    ) -> list[dict]:
        """Train epochs ``start_epoch + 1 .. config.epochs``; checkpoint after each. Returns the history."""
        from tqdm import tqdm

        for epoch in range(self.start_epoch + 1, self.config.epochs + 1):
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
            self.model.train()
            total, count = 0.0, 0
            expected = self.history[-1]["train_examples"] if self.history else None
            bar = tqdm(
                total=expected,
                desc=f"epoch {epoch}/{self.config.epochs}",
                unit="img",
                file=sys.stderr,
                disable=not self.progress,
            )
            for batch in batched(prefetched(train_examples(epoch)), self.config.batch_size):
                if len(batch) < 2:  # BatchNorm cannot train on one image; it is seen again next epoch
                    continue
                loss = self.train_step(batch, generator)
                total, count = total + loss * len(batch), count + len(batch)
                self.step_losses.append(loss)
                bar.update(len(batch))
                bar.set_postfix(loss=f"{loss:.4f}")
            bar.close()
            if count == 0:
                raise UsageError("no training examples: every post was held out, rejected or had no usable caption")
            record = {"epoch": epoch, "train_loss": total / count, "train_examples": count}
            if heldout_examples is not None:
                record.update(self.evaluate(heldout_examples()))
            record["seconds"] = round(time.perf_counter() - started, 3)
            self.history.append(record)
            self.save(epoch)
        return self.history

    def train_step(self, batch: list[Example], generator: torch.Generator) -> float:
        images = images_to_tensor([e.image for e in batch], self.config.image_size, generator).to(self.device)
        targets = torch.from_numpy(np.stack([e.target for e in batch])).to(self.device)
        with torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            projection = self.model(images)
        loss = self.loss(projection.float(), targets)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"the loss diverged at step {len(self.step_losses) + 1} ({loss.item()}); lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()

    @torch.no_grad()
    def evaluate(self, examples: Iterable[Example]) -> dict:
        """Mean held-out loss (centre crops, eval mode)."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in batched(examples, self.config.batch_size):
            images = images_to_tensor([e.image for e in batch], self.config.image_size).to(self.device)
            targets = torch.from_numpy(np.stack([e.target for e in batch])).to(self.device)
            total += self.loss(self.model(images).float(), targets).item() * len(batch)
            count += len(batch)
        return {"heldout_loss": total / count if count else None, "heldout_examples": count}


def draw_loss_curve(step_losses: list[float], history: list[dict], path: str) -> None:
    """Write the loss-curve PNG: per-step training loss (grey), per-epoch train (blue) and held-out (red) loss."""
    per_epoch = max(len(step_losses), 1) / max(len(history), 1)
    curves = [Curve("step", range(len(step_losses)), step_losses, (170, 170, 170), width=1)]
    for key, name, colour in (
        ("train_loss", "epoch train", (30, 90, 200)),
        ("heldout_loss", "held-out", (210, 40, 40)),
    ):
        epochs = [(i + 1) * per_epoch for i, h in enumerate(history) if h.get(key) is not None]
        curves.append(Curve(name, epochs, [h[key] for h in history if h.get(key) is not None], colour, markers=True))
    title = f"loss over {len(history)} epochs"
    buffer = io.BytesIO()
    draw_loss_curves(curves, log_scale=False, title=title, steps=len(step_losses)).save(buffer, "PNG")
    write_atomically(path, buffer.getvalue())
