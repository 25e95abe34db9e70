"""Training the multi-style network with perceptual losses (Johnson et al. 2016; Dumoulin et al. 2017).

One step: a batch of content crops, one style per image (so a batch trains several styles at once, Dumoulin et
al. 2017 sec. 3), the network's output compared with the content through the loss network's content layers and
with the style's Gram matrices (precomputed once per style) through its style layers, plus total variation.
Adam on everything, or, when styles are added to a trained network, only on the new styles' CIN rows.

Next to the checkpoint ``NAME.safetensors`` the trainer writes ``NAME.samples.png`` (content × styles),
``NAME.loss.png`` (the loss curves) and ``NAME.resume.pt`` (weights, optimiser, step, RNG state and loss history:
a checksummed ``models.common.resume`` state) for ``--resume``.
"""

import contextlib
import io
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from models.common.errors import CheckpointError, TrainingDiverged, UsageError
from models.common.files import write_atomically
from models.common.loss_curve import Curve, draw_loss_curves, smoothed
from models.common.pixels import tensor_to_pil
from models.common.resume import check_same_settings, load_resume_state, save_resume_state
from models.style.checkpoint import STYLIZER_KIND, save_stylizer
from models.style.losses import content_loss, gram_matrix, style_loss, total_variation_loss
from models.style.runner import StylizerRunner
from models.style.stylizer import MultiStyleTransformer, one_hot

# Johnson et al. 2016, sec. 3.1 (VGG16): content at relu2_2, style at relu1_2, relu2_2, relu3_3, relu4_3.
CONTENT_LAYERS = ("relu2_2",)
STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
RESUME_KIND = f"{STYLIZER_KIND}.resume"
RESUME_KEYS = (
    "step",
    "settings",
    "style_names",
    "first_trainable_style",
    "model",
    "optimizer",
    "style_generator",
    "torch_rng",
    "history",
    "elapsed",
)
# What a resumed run may change: how far it trains and how often it saves. Every other setting changes the result,
# and a resume that changes one is refused (the checkpoint would record the new value beside weights trained with
# the old one). The base checkpoint's own facts follow from its digest.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "base_training", "base_source")
# Settings whose flag is not ``--`` + the key with dashes.
SETTING_FLAGS = {"style_files": "--style", "base_checkpoint": "--base", "content": "--content"}


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run does. Weights follow pytorch/examples fast_neural_style (content 1e5, style 1e10)
    for the conventions of ``models.style.losses`` (MSE of activations and of C·H·W-normalised Gram matrices)."""

    steps: int = 40_000  # Johnson et al. 2016: 40k iterations of batch 4 (two epochs of COCO)
    lr: float = 1e-3  # Johnson et al. 2016, sec. 4.1
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_order: str = "cycle"  # "cycle": image i of step t gets style (t·B + i) mod N; "random": drawn by seed
    checkpoint_every: int = 1000
    precision: str = "fp32"  # "bf16": forward passes under autocast, losses in fp32
    seed: int = 0

    def __post_init__(self):
        if self.style_order not in ("cycle", "random"):
            raise UsageError(f"unknown style order {self.style_order!r}: use cycle or random")
        if self.precision not in ("fp32", "bf16"):
            raise UsageError(f"unknown precision {self.precision!r}: use fp32 or bf16")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def training_settings(config: TrainingConfig, metadata: dict) -> dict:
    """The settings a resume must repeat: ``config`` and the caller's ``metadata`` (loss network, sizes, inputs)
    without ``RESUMABLE_CHANGES``."""
    settings = {**metadata, **config.to_dict()}
    return {key: value for key, value in settings.items() if key not in RESUMABLE_CHANGES}


def load_resumable(path: str, config: TrainingConfig, metadata: dict) -> dict:
    """The resume state at ``path``, refused in one line when it lacks a key or was trained with other settings
    than ``config`` and ``metadata`` (``models.common.resume.check_same_settings``: the flag and both values)."""
    state = load_resume_state(path, RESUME_KIND, RESUME_KEYS)
    if not isinstance(state["settings"], dict):
        raise CheckpointError(f"resume state {path} is damaged (its settings are not a dict)")
    check_same_settings(path, state["settings"], training_settings(config, metadata), SETTING_FLAGS)
    return state


@dataclass
class TrainingResult:
    step: int
    losses: dict[str, float]  # the last step's weighted terms: content, style, tv, total
    digest: str


def artefact_paths(output: str) -> dict[str, str]:
    """Files written next to checkpoint ``output``: ``samples``, ``loss_curve``, ``resume``."""
    stem = output[: -len(".safetensors")] if output.endswith(".safetensors") else output
    return {"samples": f"{stem}.samples.png", "loss_curve": f"{stem}.loss.png", "resume": f"{stem}.resume.pt"}


@torch.no_grad()
def style_grams(loss_network, style_images: Sequence[torch.Tensor], layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram targets of every style image: ``{layer: (N, C, C)}``. Images are ``(3, H, W)`` in [0, 1], any size
    (the C·H·W normalisation makes Grams of differently sized images comparable)."""
    per_style = []
    for image in style_images:
        features = loss_network(image[None].to(_device_of(loss_network)))
        per_style.append({layer: gram_matrix(features[layer].float())[0] for layer in layers})
    return {layer: torch.stack([grams[layer] for grams in per_style]) for layer in layers}


class StylizerTrainer:
    """Trains ``model``'s styles ``[first_trainable_style, N)`` against ``style_images`` (one per trainable style).

    ``first_trainable_style = 0``: a fresh network, every parameter trains. ``> 0``: styles were added to a
    trained network; only the new styles' CIN rows train and everything else stays bit-exact (Dumoulin et al.
    2017, sec. 4.2: a new style is a new set of scale/shift parameters).
    """

    def __init__(
        self,
        model: MultiStyleTransformer,
        loss_network,
        style_images: Sequence[torch.Tensor],
        style_names: Sequence[str],
        config: TrainingConfig,
        *,
        first_trainable_style: int = 0,
        preview_images: torch.Tensor | None = None,
        metadata: dict | None = None,
    ):
        if len(style_names) != model.num_styles:
            raise UsageError(f"{len(style_names)} style names for a {model.num_styles}-style network")
        if len(style_images) != model.num_styles - first_trainable_style:
            raise UsageError(f"{len(style_images)} style images for {model.num_styles - first_trainable_style} styles")
        missing = set(config.content_layers + config.style_layers) - set(loss_network.layers)
        if missing:
            raise UsageError(f"the loss network does not compute {', '.join(sorted(missing))}")
        self.model = model
        self.loss_network = loss_network
        self.style_names = list(style_names)
        self.style_images = [image.cpu() for image in style_images]
        self.config = config
        self.first_trainable_style = first_trainable_style
        self.preview_images = preview_images
        self.metadata = dict(metadata or {})
        self.device = _device_of(loss_network)
        self.targets = style_grams(loss_network, style_images, config.style_layers)
        self.model.to(self.device).train()
        self.optimizer = torch.optim.Adam(self._trainable_parameters(), lr=config.lr)
        self.style_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[list[float]] = []  # per step: content, style, tv, total (weighted)
        self.elapsed = 0.0

    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        if self.first_trainable_style == 0:
            return list(self.model.parameters())
        for parameter in self.model.shared_parameters():
            parameter.requires_grad_(False)
        first = self.first_trainable_style
        rows = self.model.style_parameters()
        for parameter in rows:
            # Old rows receive exactly zero gradient from one-hot batches of new styles already; the mask makes
            # that a guarantee (Adam with zero moments leaves them bit-exact).
            parameter.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:first]), grad[first:]]))
        return rows

    def resume(self, path: str) -> None:
        """Continue from the resume state at ``path`` (``artefact_paths(output)["resume"]``)."""
        self.resume_from(load_resumable(path, self.config, self.metadata), path)

    def resume_from(self, state: dict, path: str) -> None:
        """Continue from ``state``, read by ``load_resumable`` from ``path`` (named in errors)."""
        check_same_settings(path, state["settings"], self.settings(), SETTING_FLAGS)
        if state["style_names"] != self.style_names:
            raise CheckpointError(
                f"the resume state trains styles {state['style_names']}, this run {self.style_names}; "
                "pass the same --style files in the same order"
            )
        if state["first_trainable_style"] != self.first_trainable_style:
            raise CheckpointError("the resume state was not made in the same mode (train vs add-styles)")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"the resume state does not fit this network (--width?): {exc}") from None
        except (AttributeError, TypeError) as exc:
            raise CheckpointError(f"resume state {path} is damaged (model: {type(exc).__name__}: {exc})") from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.style_generator.set_state(state["style_generator"])
            torch.set_rng_state(state["torch_rng"])
            self.step = int(state["step"])
            self.history = [[float(value) for value in row] for row in state["history"].tolist()]
            self.elapsed = float(state["elapsed"])
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:  # a hand-made or foreign state
            raise CheckpointError(f"resume state {path} is damaged ({type(exc).__name__}: {exc})") from None

    def settings(self) -> dict:
        """What this run trains with (``training_settings``), recorded in its resume state."""
        return training_settings(self.config, self.metadata)

    def style_indices(self, batch_size: int) -> torch.Tensor:
        trainable = self.model.num_styles - self.first_trainable_style
        if self.config.style_order == "cycle":
            indices = cycled_styles(self.step, batch_size, trainable)
        else:
            indices = torch.randint(trainable, (batch_size,), generator=self.style_generator)
        return indices + self.first_trainable_style

    def train_step(self, content: torch.Tensor) -> list[float]:
        """One optimiser step on ``content`` ``(B, 3, S, S)`` in [0, 1]; returns the weighted loss terms."""
        config = self.config
        content = content.to(self.device)
        indices = self.style_indices(content.shape[0])
        style_weights = one_hot(indices, self.model.num_styles).to(self.device)
        with self._autocast():
            output = self.model(content, style_weights)
            output_features = self.loss_network(output)
            with torch.no_grad():
                content_features = self.loss_network(content)
        output_features = {layer: f.float() for layer, f in output_features.items()}
        content_targets = {layer: content_features[layer].float() for layer in config.content_layers}
        targets = {
            layer: grams[indices - self.first_trainable_style].to(self.device) for layer, grams in self.targets.items()
        }
        terms = [
            config.content_weight * content_loss(output_features, content_targets),
            config.style_weight * style_loss(output_features, targets),
            config.tv_weight * total_variation_loss(output.float()),
        ]
        total = sum(terms)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step += 1
        values = [float(t.detach()) for t in terms] + [float(total.detach())]
        if not all(math.isfinite(v) for v in values):
            raise TrainingDiverged(f"the loss diverged at step {self.step} ({values}); lower --lr or the loss weights")
        self.history.append(values)
        return values

    def train(self, content_batches: Iterator[torch.Tensor], output: str, *, progress: bool = True) -> TrainingResult:
        """Run until ``config.steps``; checkpoint every ``config.checkpoint_every`` steps and at the end."""
        steps = self.config.steps
        digest = ""
        bar = tqdm(total=steps, initial=self.step, desc="train stylizer", unit="step", disable=not progress)
        started = time.perf_counter() - self.elapsed
        with bar:
            while self.step < steps:
                content = next(content_batches, None)
                if content is None:
                    raise UsageError("the content stream ended before training did")
                content_term, style_term, tv_term, total = self.train_step(content)
                bar.update(1)
                bar.set_postfix(content=f"{content_term:.3g}", style=f"{style_term:.3g}", tv=f"{tv_term:.3g}")
                self.elapsed = time.perf_counter() - started
                if self.step % self.config.checkpoint_every == 0 or self.step == steps:
                    digest = self.save(output)
        if not digest:  # resumed at or past --steps: write the checkpoint anyway
            digest = self.save(output)
        names = ("content", "style", "tv", "total")
        return TrainingResult(
            self.step, dict(zip(names, self.history[-1] if self.history else [], strict=False)), digest
        )

    def save(self, output: str) -> str:
        """Write the checkpoint, its sample grid, loss curve and resume state; return the checkpoint digest."""
        paths = artefact_paths(output)
        training = {
            **self.metadata,
            **self.config.to_dict(),
            "steps_done": self.step,
            "seconds": round(self.elapsed, 1),
            "final_losses": dict(zip(("content", "style", "tv", "total"), self.history[-1], strict=True))
            if self.history
            else {},
        }
        self.model.eval()
        digest = save_stylizer(output, self.model, self.style_names, training)
        if self.preview_images is not None:
            _write_png(paths["samples"], self.sample_grid())
        self.model.train()
        _write_png(paths["loss_curve"], loss_curve(self.history))
        state = {
            "step": self.step,
            "settings": self.settings(),
            "style_names": self.style_names,
            "first_trainable_style": self.first_trainable_style,
            "model": {name: t.detach().cpu() for name, t in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "style_generator": self.style_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": torch.tensor(self.history, dtype=torch.float64).reshape(-1, 4),
            "elapsed": self.elapsed,
        }
        save_resume_state(paths["resume"], RESUME_KIND, state)
        return digest

    @torch.no_grad()
    def sample_grid(self) -> Image.Image:
        """Rows: the preview content images; columns: the content, then every style (header: the style image).
        The tiles are what the augment job would make of them: its runner, its default precision."""
        content = self.preview_images
        size = content.shape[-1]
        n_styles = self.model.num_styles
        runner = StylizerRunner(self.model, self.device, "auto", batch_size=n_styles)
        tiles = [[None] + [_thumbnail(img, size) for img in self._style_thumbnails()]]
        for image in content:
            batch = image[None].expand(n_styles, -1, -1, -1)
            stylised = runner.stylize(batch, torch.eye(n_styles)).cpu()
            tiles.append([image.cpu()] + list(stylised))
        pad = 4
        grid = Image.new("RGB", ((size + pad) * (n_styles + 1) + pad, (size + pad) * len(tiles) + pad + 14), "white")
        draw = ImageDraw.Draw(grid)
        for col, name in enumerate(self.style_names, start=1):
            draw.text((pad + col * (size + pad), 2), name[: size // 6], fill="black")
        for row, row_tiles in enumerate(tiles):
            for col, tile in enumerate(row_tiles):
                if tile is not None:
                    grid.paste(tensor_to_pil(tile), (pad + col * (size + pad), 14 + pad + row * (size + pad)))
        return grid

    def _style_thumbnails(self) -> list[torch.Tensor | None]:
        # Styles trained before add-styles have no image in this run: their header tile stays blank.
        return [None] * self.first_trainable_style + self.style_images

    @contextlib.contextmanager
    def _autocast(self):
        if self.config.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


def cycled_styles(step: int, batch_size: int, num_styles: int) -> torch.Tensor:
    """Image ``i`` of step ``t`` trains style ``(t·B + i) mod N``: every style equally often, several per batch."""
    return (step * batch_size + torch.arange(batch_size)) % num_styles


def loss_curve(history: Sequence[Sequence[float]]) -> Image.Image:
    """The weighted content/style/tv terms and their total per step, smoothed, on a log scale."""
    if not history:
        return draw_loss_curves([], log_scale=True)
    values = np.asarray(history, dtype=np.float64)
    colours = {"content": (30, 90, 200), "style": (210, 40, 40), "tv": (40, 150, 60), "total": (0, 0, 0)}
    curves = [
        Curve(name, *smoothed(values[:, column]), colour) for column, (name, colour) in enumerate(colours.items())
    ]
    return draw_loss_curves(curves, log_scale=True, steps=len(values))


def _thumbnail(image: torch.Tensor | None, size: int) -> torch.Tensor | None:
    if image is None:
        return None
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    resized = torch.nn.functional.interpolate(
        image[None], size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bilinear", antialias=True
    )[0]
    top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
    return resized[:, top : top + size, left : left + size]


def _write_png(path: str, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    write_atomically(path, buffer.getvalue())


def _device_of(module: torch.nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")
