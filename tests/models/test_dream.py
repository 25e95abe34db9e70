import pytest
import torch
from PIL import Image

from models.common.errors import UsageError
from models.dream import (
    DreamConfig,
    ImageNetBackbone,
    LayerObjective,
    TextObjective,
    dream,
    frame_strip,
    freeze,
    octave_sizes,
)
from models.embedding.net import EmbeddingNet, EmbeddingNetConfig

CONFIG = DreamConfig(octaves=3, octave_scale=1.4, iterations=6, step=0.02, jitter=4, seed=0)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return freeze(ImageNetBackbone("resnet-tiny", "random"))


def test_dreaming_raises_the_layer_activation_norm(network):
    objective = LayerObjective(network, "layer3")
    image = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    result = dream(objective, image, CONFIG, progress=False)
    assert result.image.shape == image.shape and result.image.min() >= 0 and result.image.max() <= 1
    for octave in range(3):
        values = [h["value"] for h in result.history if h["octave"] == octave]
        assert len(values) == CONFIG.iterations and values[-1] > values[0]
    assert objective.norm(result.image) > 1.5 * objective.norm(image)
    assert [label for label, _ in result.frames][:3] == ["input", "octave 1 it 3", "octave 1 it 6"]
    assert len(result.frames) == 1 + 3 * 2


def test_dream_is_reproducible_for_a_seed(network):
    image = torch.full((1, 3, 40, 40), 0.5)
    objective = LayerObjective(network, "layer2")
    a = dream(objective, image, CONFIG, progress=False).image
    b = dream(objective, image, CONFIG, progress=False).image
    assert torch.equal(a, b)


def test_text_guided_dream_moves_the_embedding_towards_the_query():
    torch.manual_seed(0)
    model = freeze(EmbeddingNet(EmbeddingNetConfig("resnet-tiny", 8)))
    target = torch.randn(8)
    objective = TextObjective(model, target)
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    result = dream(objective, image, DreamConfig(octaves=1, iterations=15, step=0.03, jitter=2), progress=False)
    assert objective.norm(result.image) > objective.norm(image) + 0.1


def test_unknown_layer_lists_the_real_ones(network):
    with pytest.raises(UsageError, match="layer1, layer2, layer3, layer4"):
        LayerObjective(network, "inception4c")


def test_octaves_are_coarse_to_fine_and_never_tiny():
    assert octave_sizes(100, 200, 3, 2.0) == [(50, 100), (100, 200)]  # 25x50 is below 32 px
    assert octave_sizes(256, 256, 3, 1.4)[-1] == (256, 256)


def test_strip_puts_labelled_frames_side_by_side():
    tiles = [("input", Image.new("RGB", (40, 20), "red")), ("octave 1", Image.new("RGB", (20, 20), "blue"))]
    strip = frame_strip(tiles, height=50)
    assert strip.size == (100 + 50 + 3 * 4, 72)
    assert strip.getpixel((10, 10)) == (255, 0, 0) and strip.getpixel((4 + 100 + 4 + 10, 10)) == (0, 0, 255)
