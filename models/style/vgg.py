"""The loss network: a frozen VGG16/VGG19 that returns activations of named layers.

Layer names follow the papers (Gatys et al. 2016; Johnson et al. 2016): ``conv{block}_{i}``, ``relu{block}_{i}``
and ``pool{block}``, e.g. ``relu4_2`` is the ReLU after the second convolution of the fourth block. The network is
truncated after the deepest requested layer, so asking for ``relu2_2`` costs two blocks, not sixteen.

Weight sources (``build_loss_network(weights=...)``):

- ``"imagenet"``: torchvision's ImageNet weights, from the torch hub cache, downloaded there on first use (progress
  bar, hash checked); offline, ``WeightsUnavailableError`` says which file, where it looked and what to pass instead.
- ``"random"``: torchvision's initialisation scheme drawn from ``seed``; the same seed gives the same network.
- a path: a state_dict saved with ``torch.save`` or safetensors, either torchvision's full VGG state_dict
  (``features.*`` and ``classifier.*``; the classifier is ignored) or only the ``features`` part (keys ``0.weight`` …
  or ``features.0.weight`` …).
"""

from collections.abc import Iterable

import torch
import torchvision
from torch import nn

from models.common.errors import CheckpointError, UsageError
from models.common.pixels import ImageNetNormalize
from models.common.weights import imagenet_file, load_state_dict

# Convolutions per block (Simonyan & Zisserman 2015, table 1, configurations D and E).
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
# torchvision's ImageNet weight files (torchvision.models.VGG{16,19}_Weights.IMAGENET1K_V1), looked up in the hub cache.
# torchvision's ImageNet weights (the ones Gatys et al. and Johnson et al. used were Caffe VGGs; these are close).
IMAGENET_URLS = {
    "vgg16": torchvision.models.VGG16_Weights.IMAGENET1K_V1.url,
    "vgg19": torchvision.models.VGG19_Weights.IMAGENET1K_V1.url,
}


def layer_names(arch: str = "vgg19") -> list[str]:
    """Every addressable layer of ``arch`` in forward order (conv, relu, …, pool per block)."""
    names = []
    for block, convs in enumerate(_blocks(arch), start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


class LossNetwork(nn.Module):
    """A frozen VGG feature extractor over named layers.

    ``forward(images)`` takes ``(B, 3, H, W)`` float RGB in [0, 1] and returns ``{layer: (B, C, H', W')}`` for every
    layer in ``layers``. ImageNet mean/std normalisation happens here, so callers keep the project's [0, 1]
    convention. The module is in eval mode and its parameters do not require gradients; gradients still flow to
    the input, which is what Gatys optimisation and perceptual-loss training need.
    """

    def __init__(self, arch: str, layers: Iterable[str], pooling: str = "max"):
        super().__init__()
        self.arch = arch
        self.layers = tuple(dict.fromkeys(layers))
        if not self.layers:
            raise UsageError("the loss network needs at least one layer")
        names = layer_names(arch)
        unknown = [layer for layer in self.layers if layer not in names]
        if unknown:
            raise UsageError(f"unknown {arch} layer(s) {', '.join(unknown)}; known: {', '.join(names)}")
        if pooling not in ("max", "avg"):
            raise UsageError(f"unknown pooling {pooling!r}: use max or avg")
        self.pooling = pooling
        depth = max(names.index(layer) for layer in self.layers) + 1
        self.names = names[:depth]
        # Module indices match torchvision's ``features`` Sequential so its state_dict keys load unchanged.
        self.features = nn.Sequential(*_modules(arch, pooling)[:depth])
        self.normalize = ImageNetNormalize()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LossNetwork":
        # Always in eval mode: VGG has no dropout/batchnorm in ``features``, but a frozen network should say so.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        x = self.normalize(images)
        wanted = set(self.layers)
        outputs = {}
        for name, module in zip(self.names, self.features, strict=True):
            x = module(x)
            if name in wanted:
                outputs[name] = x
        return outputs


def build_loss_network(
    arch: str = "vgg19",
    weights: str = "imagenet",
    layers: Iterable[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"),
    *,
    pooling: str = "max",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LossNetwork:
    """Build a frozen ``LossNetwork`` with weights from ``"imagenet"``, ``"random"`` or a state_dict path.

    Gatys et al. 2016 (sec. 2) report smoother results with average pooling; ``pooling="avg"`` swaps every max-pool
    for an average-pool of the same size (the weights are unchanged).
    """
    with torch.random.fork_rng(devices=[]):
        # torchvision's init uses the global RNG; forking keeps "random" reproducible without disturbing the caller.
        torch.manual_seed(seed)
        network = LossNetwork(arch, layers, pooling)
    if weights != "random":
        state = _imagenet_state(arch) if weights == "imagenet" else load_state_dict(weights)
        _load_features(network, state, source=weights)
    return network.to(device)


def _blocks(arch: str) -> tuple[int, ...]:
    if arch not in BLOCKS:
        raise UsageError(f"unknown loss network architecture {arch!r}: use {' or '.join(BLOCKS)}")
    return BLOCKS[arch]


def _modules(arch: str, pooling: str) -> list[nn.Module]:
    modules: list[nn.Module] = []
    channels = 3
    for block, convs in enumerate(_blocks(arch)):
        width = min(64 * 2**block, 512)
        for _ in range(convs):
            conv = nn.Conv2d(channels, width, kernel_size=3, padding=1)
            # torchvision's VGG initialisation (models/style/vgg.py): He et al. 2015, fan-out, zero bias.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            # Not in-place: a requested conv output must survive the ReLU that follows it.
            modules += [conv, nn.ReLU(inplace=False)]
            channels = width
        modules.append(nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2))
    return modules


def _imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    path = imagenet_file(
        IMAGENET_URLS[arch], f"ImageNet {arch.upper()}", "pass --loss-network PATH or --loss-network random"
    )
    return load_state_dict(path)


def _load_features(network: LossNetwork, state: dict[str, torch.Tensor], source: str) -> None:
    features = {}
    for key, value in state.items():
        if key.startswith("features."):
            key = key[len("features.") :]
        elif key.startswith("classifier."):
            continue
        features[key] = value
    needed = network.features.state_dict()
    missing = [key for key in needed if key not in features]
    if missing:
        raise CheckpointError(
            f"{source} is not a {network.arch} state_dict: missing {', '.join(missing[:4])}"
            + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        )
    for key, expected in needed.items():
        if features[key].shape != expected.shape:
            raise CheckpointError(
                f"{source} is not a {network.arch} state_dict: {key} has shape {tuple(features[key].shape)}, "
                f"expected {tuple(expected.shape)}"
            )
    network.features.load_state_dict({key: features[key] for key in needed})
