import pytest
import torch

from models.style.stylizer import MultiStyleTransformer, StylizerConfig, count_flops, one_hot


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.25, num_residual=2)).eval()
    # Distinct per-style rows so that styles really differ (fresh CIN rows are all identical).
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return model


def test_output_keeps_any_input_size(net):
    for height, width in [(32, 32), (33, 47), (18, 61)]:
        out = net(torch.rand(2, 3, height, width), one_hot([0, 1], 3))
        assert out.shape == (2, 3, height, width)


def test_one_hot_mixture_equals_style(net):
    images = torch.rand(1, 3, 32, 32)
    pure = net(images, one_hot([2], 3))
    mixed = net(images, torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.equal(pure, mixed)
    assert not torch.allclose(pure, net(images, one_hot([0], 3)), atol=1e-3)


def test_mixture_interpolates_parameters(net):
    """A 50/50 mixture is neither style, and moves continuously between them."""
    images = torch.rand(1, 3, 32, 32)
    a, b = net(images, one_hot([0], 3)), net(images, one_hot([1], 3))
    half = net(images, torch.tensor([[0.5, 0.5, 0.0]]))
    near_a = net(images, torch.tensor([[0.99, 0.01, 0.0]]))
    assert (half - a).abs().mean() > 1e-3 and (half - b).abs().mean() > 1e-3
    assert (near_a - a).abs().mean() < (half - a).abs().mean()


def test_batch_with_mixed_styles_equals_per_image(net):
    images = torch.rand(3, 3, 36, 28)
    weights = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0.2, 0.3, 0.5]])
    batched = net.stylize(images, weights, alpha=torch.tensor([1.0, 0.5, 0.8]))
    for i, alpha in enumerate([1.0, 0.5, 0.8]):
        single = net.stylize(images[i : i + 1], weights[i : i + 1], alpha=alpha)
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)


def test_alpha_zero_returns_input_and_output_in_range(net):
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(net.stylize(images, one_hot([0, 1], 3), alpha=0.0), images)
    out = net.stylize(images, one_hot([0, 1], 3))
    assert out.min() >= 0 and out.max() <= 1


def test_rejects_wrong_style_weights(net):
    with pytest.raises(ValueError, match="style_weights"):
        net(torch.rand(2, 3, 32, 32), one_hot([0], 3))
    with pytest.raises(ValueError, match="out of range"):
        one_hot([3], 3)


def test_with_extra_styles_keeps_old_styles(net):
    images = torch.rand(1, 3, 32, 32)
    grown = net.with_extra_styles(2).eval()
    assert grown.num_styles == 5
    torch.testing.assert_close(grown(images, one_hot([1], 5)), net(images, one_hot([1], 3)))


def test_width_multiplier_cuts_flops():
    full = MultiStyleTransformer(StylizerConfig(num_styles=1))
    half = MultiStyleTransformer(StylizerConfig(num_styles=1, width=0.5))
    full_flops = count_flops(full, 256, 256)
    # Johnson's net at 256²: ~10 GMAC = ~20 GFLOP (conv MACs x 2).
    assert 15e9 < full_flops < 50e9
    assert 3.0 < full_flops / count_flops(half, 256, 256) < 4.5


MAGENTA_LIKE = StylizerConfig(
    num_styles=3, num_residual=2, channels=(8, 8, 8, 4, 4), conv_bias=False, head="norm_sigmoid", pixel_scale=1.0
)


def test_config_round_trips_through_its_document():
    assert StylizerConfig(**MAGENTA_LIKE.to_dict()) == MAGENTA_LIKE
    assert StylizerConfig(2, width=0.5) == StylizerConfig(**{"num_styles": 2, "width": 0.5, "num_residual": 5})
    with pytest.raises(ValueError, match="head"):
        StylizerConfig(1, head="tanh")


def test_configured_variant_has_its_layers_and_keeps_sizes():
    torch.manual_seed(0)
    model = MultiStyleTransformer(MAGENTA_LIKE).eval()
    names = set(model.state_dict())
    assert "conv1.conv2d.bias" not in names and "in6.weight" in names and "res2.in2.bias" in names
    assert model.deconv2.conv2d.out_channels == 4
    out = model(torch.rand(2, 3, 30, 22), one_hot([0, 2], 3))
    assert out.shape == (2, 3, 30, 22) and out.min() > 0 and out.max() < 1  # sigmoid head
    grown = model.with_extra_styles(2)
    assert grown.config == StylizerConfig(**{**MAGENTA_LIKE.to_dict(), "num_styles": 5})


def test_embedding_conditioning_bakes_into_style_rows():
    """Ghiasi's dense maps, baked for N embeddings: row s == embedding s, and mixtures of rows == mixed
    embeddings (the maps are affine, mixtures sum to 1)."""
    torch.manual_seed(0)
    config = StylizerConfig(
        num_styles=0, embedding_size=6, num_residual=1, channels=(8, 8, 8, 4, 4), contract_norm=False,
        head="norm_sigmoid", pixel_scale=1.0,
    )  # fmt: skip
    model = MultiStyleTransformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    embeddings = torch.randn(3, 6)
    baked = model.bake(embeddings).eval()
    assert baked.num_styles == 3 and baked.config.embedding_size == 0 and not baked.config.contract_norm
    images = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(baked(images, one_hot([2, 0], 3)), model(images, embeddings[[2, 0]]))
    mix = torch.tensor([[0.2, 0.5, 0.3]])
    torch.testing.assert_close(baked(images[:1], mix), model(images[:1], mix @ embeddings), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="style rows"):
        model.with_extra_styles(1)
