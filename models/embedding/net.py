"""The text-supervised CNN: a torchvision backbone and a linear projection into the text-target space.

Input ``(B, 3, H, W)`` float RGB in [0, 1]; ImageNet normalisation happens here. ``forward`` gives the raw
projection (logits for topic targets), ``embed`` the vector compared with text targets at retrieval time
(sigmoid topic probabilities for ``output="sigmoid"``, the projection itself otherwise).

Checkpoints are one safetensors file: model tensors under ``model.``, the text model's arrays under
``text.``, and JSON metadata (architecture, text vocabulary and settings, training settings). Loading
executes no code.
"""

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from models.common.checkpoint import EMBEDDING_KIND, check_finite, check_fits, config_from, load_tensors, save_tensors
from models.common.errors import CheckpointError, UsageError, WeightsUnavailableError
from models.common.pixels import ImageNetNormalize
from models.common.weights import imagenet_file, load_state_dict
from models.embedding.choices import BACKBONES
from models.embedding.text_targets import TextTargetConfig, TextTargets

IMAGENET_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
    "googlenet": torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1,
}
OUTPUTS = ("linear", "sigmoid")


@dataclass(frozen=True)
class EmbeddingNetConfig:
    backbone: str = "resnet18"
    out_dim: int = 64
    output: str = "linear"

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise UsageError(f"unknown backbone {self.backbone!r}; use one of {', '.join(BACKBONES)}")
        if self.output not in OUTPUTS:
            raise UsageError(f"unknown output {self.output!r}; use one of {OUTPUTS}")


def imagenet_weights_file(backbone: str) -> str:
    """Path of torchvision's ImageNet weights for ``backbone`` in the torch hub cache, downloaded when missing."""
    if backbone not in IMAGENET_WEIGHTS:
        raise WeightsUnavailableError(f"no ImageNet weights exist for {backbone}; use --weights random or a PATH")
    return imagenet_file(IMAGENET_WEIGHTS[backbone].url, f"ImageNet {backbone}", "pass --weights PATH or random")


def build_backbone(name: str, weights: str = "random") -> tuple[nn.Module, int]:
    """``(backbone without its classifier, feature size)``. ``weights``: ``imagenet``, ``random`` or a file path."""
    if name == "resnet-tiny":
        model = TinyResNet()
    elif name == "googlenet":
        # transform_input: torchvision's GoogLeNet weights expect its own input scaling (applied inside)
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    else:
        model = torchvision.models.get_model(name, weights=None)
    if weights != "random":
        path = imagenet_weights_file(name) if weights == "imagenet" else weights
        state = load_state_dict(path)
        state = {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsUnavailableError(f"{path} does not hold {name} weights: {str(exc).splitlines()[0]}") from None
    features = model.fc.in_features
    model.fc = nn.Identity()
    return model, features


class TinyResNet(nn.Module):
    """Four torchvision BasicBlocks at a quarter of ResNet's width (16→128 channels, ~0.3 M parameters).

    For CPU tests and small corpora: resnet18 has 11 M parameters, and on a shared 2-core CPU its optimizer step
    alone took longer than a whole batch of this network. No ImageNet weights exist for it (random init only).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        channels = [width, width, 2 * width, 4 * width, 8 * width]
        for index in range(1, 5):
            inplanes, planes = channels[index - 1], channels[index]
            stride = 1 if index == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
            setattr(self, f"layer{index}", BasicBlock(inplanes, planes, stride, downsample))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class EmbeddingNet(nn.Module):
    def __init__(self, config: EmbeddingNetConfig, weights: str = "random"):
        super().__init__()
        self.config = config
        self.backbone, features = build_backbone(config.backbone, weights)
        self.head = nn.Linear(features, config.out_dim)
        self.normalize = ImageNetNormalize()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] → raw projection ``(B, out_dim)``."""
        return self.head(self.backbone(self.normalize(images)))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The image's point in the text-target space, ``(B, out_dim)`` float32."""
        projection = self.forward(images).float()
        return torch.sigmoid(projection) if self.config.output == "sigmoid" else projection


@dataclass
class CheckpointInfo:
    config: EmbeddingNetConfig
    training: dict
    digest: str


def save_embedding_model(path: str, model: EmbeddingNet, text: TextTargets, training: dict | None = None) -> str:
    """Write model + text model to one checkpoint (``models.common.checkpoint``); return its digest."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    text_arrays, text_description = text.to_arrays()
    tensors.update({f"text.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in text_arrays.items()})
    document = {
        "kind": EMBEDDING_KIND,
        "config": asdict(model.config),
        "text": text_description,
        "training": training or {},
    }
    return save_tensors(path, tensors, document)


def load_embedding_model(
    path: str, device: str | torch.device = "cpu"
) -> tuple[EmbeddingNet, TextTargets, CheckpointInfo]:
    """Load an eval-mode model, its text model and the checkpoint's facts; ``CheckpointError`` names the problem.

    ``path``: the ``.safetensors`` file or the training output folder holding ``model.safetensors``; local or
    any fsspec URL (``gs://``), so Beam workers can load it.
    """
    if not path.endswith(".safetensors"):
        if os.path.isfile(path):
            raise CheckpointError(f"{path} is not a checkpoint: give a .safetensors file or its training folder")
        path = path.rstrip("/") + "/model.safetensors"
    tensors, document, digest = load_tensors(path, EMBEDDING_KIND)  # validated: config and text are objects
    check_finite(tensors, path)
    config = config_from(EmbeddingNetConfig, document["config"], path)
    model_tensors = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    text_arrays = {k[len("text.") :]: v.numpy() for k, v in tensors.items() if k.startswith("text.")}
    check_fits(lambda: EmbeddingNet(config, weights="random"), model_tensors, path, "model.")
    if "vocab" not in document["text"]:
        raise CheckpointError(f"{path}: the text model has no vocabulary")
    text_config = document["text"].get("config")
    if isinstance(text_config, dict) and type(text_config.get("centre")) is int:
        # train_embeddings once passed --min-count positionally into ``centre``, which then read as true
        text_config = text_config | {"centre": bool(text_config["centre"])}
    text_config = config_from(TextTargetConfig, text_config, path, "text config")
    try:
        text = TextTargets.from_arrays(text_arrays, {"config": asdict(text_config), "vocab": document["text"]["vocab"]})
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = EmbeddingNet(config, weights="random")
    try:
        model.load_state_dict(model_tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored architecture ({exc})") from None
    info = CheckpointInfo(config, document.get("training", {}), digest)
    return model.to(device).eval(), text, info
