import pytest
import torch

from models.common.errors import UsageError
from models.style.gatys import CONTENT_LAYERS, STYLE_LAYERS, GatysConfig, rgb_to_yiq, style_transfer, yiq_to_rgb
from models.style.vgg import build_loss_network
from tests.conftest import make_image
from transforms.images import pil_to_tensor


@pytest.fixture(scope="module")
def network():
    return build_loss_network("vgg19", "random", layers=CONTENT_LAYERS + STYLE_LAYERS, seed=0)


@pytest.fixture(scope="module")
def contents():
    return torch.stack([pil_to_tensor(make_image(32, 32, seed=1)), pil_to_tensor(make_image(32, 32, seed=2))])


@pytest.fixture(scope="module")
def style():
    return pil_to_tensor(make_image(40, 40, seed=7).rotate(45))


@pytest.fixture(scope="module")
def red_style():
    """A strongly coloured texture: transferring it unchecked changes the content's chroma."""
    noise = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    return noise * torch.tensor([1.0, 0.2, 0.1]).view(3, 1, 1)


def correlation(a, b):
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_lbfgs_lowers_style_loss_tenfold_and_keeps_content_for_a_batch(network, contents, style):
    steps = []
    result = style_transfer(
        network, contents, [style], config=GatysConfig(steps=10), progress=lambda step, losses: steps.append(step)
    )
    assert steps == list(range(1, 11))
    assert result.images.shape == contents.shape
    assert result.images.min() >= 0 and result.images.max() <= 1
    # each image of the batch gets there, not just the average
    assert torch.all(result.final.style * 10 <= result.initial.style)
    for image, content in zip(result.images, contents, strict=True):
        assert correlation(image, content) > 0.6
    # started at the content, so the content term grows from 0 but stays far below the style term it traded against
    assert torch.all(result.final.content < result.initial.total)
    assert result.evaluations >= 10  # line searches evaluate more than once per step


def test_batched_images_optimise_independently_with_adam(network, contents, style):
    config = GatysConfig(steps=5, optimizer="adam", lr=0.05)
    batch = style_transfer(network, contents, [style], config=config)
    alone = style_transfer(network, contents[1:], [style], config=config)
    # not bit-exact: batched convolutions sum in another order, and Adam's normalised steps amplify 1e-7 gradients
    torch.testing.assert_close(batch.images[1:], alone.images, atol=1e-3, rtol=0)
    assert torch.all(batch.final.style < batch.initial.style)


def test_preserve_color_keeps_the_contents_chroma(network, contents, red_style):
    def chroma_error(preserve_color):
        config = GatysConfig(steps=10, optimizer="adam", lr=0.05, preserve_color=preserve_color)
        result = style_transfer(network, contents[:1], [red_style], config=config)
        assert torch.all(result.final.style < result.initial.style)
        before, after = rgb_to_yiq(contents[:1]), rgb_to_yiq(result.images)
        return (after[:, 1:] - before[:, 1:]).abs().mean(), (after[:, 0] - before[:, 0]).abs().mean()

    kept, luma_change = chroma_error(True)
    free, _ = chroma_error(False)
    assert luma_change > 0.05  # the luminance was stylised
    assert kept < 0.02  # only where the new luminance pushes the content's colours out of gamut
    assert free > 5 * kept


def test_yiq_round_trip():
    images = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(yiq_to_rgb(rgb_to_yiq(images)), images)
    grey = torch.full((1, 3, 2, 2), 0.4)
    torch.testing.assert_close(rgb_to_yiq(grey)[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-6, rtol=0)


def test_style_weights_blend_styles(network, contents, style, red_style):
    config = GatysConfig(steps=3, optimizer="adam", lr=0.05)
    only_first = style_transfer(network, contents[:1], [style], config=config)
    weighted = style_transfer(network, contents[:1], [style, red_style], style_weights=[2.0, 0.0], config=config)
    torch.testing.assert_close(weighted.images, only_first.images)
    mixed = style_transfer(network, contents[:1], [style, red_style], style_weights=[1, 1], config=config)
    assert not torch.allclose(mixed.images, only_first.images)


def test_noise_init_is_reproducible_by_seed(network, contents, style):
    def run(seed):
        config = GatysConfig(steps=2, optimizer="adam", init="noise", seed=seed)
        return style_transfer(network, contents[:1], [style], config=config).images

    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    assert correlation(first, contents[0]) < 0.5  # it did not start from the content


def test_configuration_errors_are_usage_errors(network, contents, style):
    with pytest.raises(UsageError, match="relu5_4"):
        style_transfer(network, contents, [style], config=GatysConfig(steps=1, style_layers=("relu5_4",)))
    with pytest.raises(UsageError, match="2 style weight"):
        style_transfer(network, contents, [style], style_weights=[0.5, 0.5], config=GatysConfig(steps=1))
    with pytest.raises(UsageError, match="optimizer"):
        GatysConfig(optimizer="sgd")
