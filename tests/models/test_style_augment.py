"""``StyleAugment``: online style augmentation with per-sample, per-epoch seeds."""

import numpy as np
import pytest
import torch

from models.checkpoint import save_stylizer
from models.errors import UsageError
from models.style_augment import StyleAugment
from models.stylizer import MultiStyleTransformer, StylizerConfig


@pytest.fixture(scope="module")
def stylizer():
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.125, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
    return model.eval()


def images(count=6, size=16, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_draws_depend_on_key_and_epoch_only(stylizer):
    augment = StyleAugment(stylizer, "random", alpha=(0.2, 0.9), probability=0.5, seed=3)
    first = [augment.draw(key, epoch=0) for key in range(200)]
    again = [StyleAugment(stylizer, "random", alpha=(0.2, 0.9), probability=0.5, seed=3).draw(k, 0) for k in range(200)]
    assert all(
        a.restyle == b.restyle and np.array_equal(a.style_weights, b.style_weights) and a.alpha == b.alpha
        for a, b in zip(first, again, strict=True)
    )
    next_epoch = [augment.draw(key, epoch=1) for key in range(200)]
    assert sum(a.alpha != b.alpha for a, b in zip(first, next_epoch, strict=True)) > 190  # fresh draws per epoch
    other_seed = StyleAugment(stylizer, "random", alpha=(0.2, 0.9), probability=0.5, seed=4).draw(0, 0)
    assert other_seed.alpha != first[0].alpha
    # probability is the share of restyled samples; random picks one style, every style gets picked
    assert 0.4 < np.mean([d.restyle for d in first]) < 0.6
    assert all(d.style_weights.max() == 1 and d.style_weights.sum() == 1 for d in first)
    assert {int(d.style_weights.argmax()) for d in first} == {0, 1, 2}
    assert all(0.2 <= d.alpha <= 0.9 for d in first)


def test_mix_draws_convex_mixtures(stylizer):
    draws = [StyleAugment(stylizer, "mix", probability=1.0).draw(key) for key in range(50)]
    weights = np.stack([d.style_weights for d in draws])
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-6)
    assert (weights > 0).all() and weights.max() < 1


def test_restyled_samples_are_the_stylizer_output_and_others_untouched(stylizer):
    augment = StyleAugment(stylizer, "mix", alpha=(0.3, 1.0), probability=0.5, seed=1)
    batch = images(8)
    keys = torch.arange(100, 108)
    before = batch.clone()
    out = augment(batch, keys, epoch=2)
    assert torch.equal(batch, before)  # the input is not modified
    restyled = [i for i, key in enumerate(keys.tolist()) if augment.draw(key, 2).restyle]
    assert 0 < len(restyled) < 8
    for i, key in enumerate(keys.tolist()):
        draw = augment.draw(key, 2)
        if draw.restyle:
            expected = stylizer.stylize(batch[i : i + 1], torch.from_numpy(draw.style_weights)[None], draw.alpha)
            torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)
            assert (out[i] - batch[i]).abs().max() > 0.05
        else:
            assert torch.equal(out[i], batch[i])


def test_size_stylises_at_that_scale_and_returns_the_input_size(stylizer):
    batch, keys = images(2, size=12), [3, 4]
    augment = StyleAugment(stylizer, probability=1.0, size=24, seed=2)
    out = augment(batch, keys)
    assert out.shape == batch.shape
    for i, key in enumerate(keys):
        draw = augment.draw(key)
        up = torch.nn.functional.interpolate(batch[i : i + 1], size=(24, 24), mode="bilinear", antialias=True)
        styled = stylizer.stylize(up.clamp(0, 1), torch.from_numpy(draw.style_weights)[None], draw.alpha)
        expected = torch.nn.functional.interpolate(styled, size=(12, 12), mode="bilinear", antialias=True)
        torch.testing.assert_close(out[i : i + 1], expected.clamp(0, 1), atol=1e-5, rtol=0)
    assert not torch.allclose(out, StyleAugment(stylizer, probability=1.0, seed=2)(batch, keys), atol=1e-2)


def test_probability_and_alpha_extremes(stylizer):
    batch = images(5)
    keys = torch.arange(5)
    assert torch.equal(StyleAugment(stylizer, probability=0.0)(batch, keys), batch)
    assert torch.equal(StyleAugment(stylizer, alpha=0.0, probability=1.0)(batch, keys), batch)
    changed = StyleAugment(stylizer, probability=1.0)(batch, keys)
    assert all((changed[i] - batch[i]).abs().max() > 0.05 for i in range(5))


def test_output_trains_a_classifier(stylizer):
    """The restyled batch is an ordinary tensor: a downstream model backpropagates through its own layers."""
    classifier = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    out = StyleAugment(stylizer, probability=1.0)(images(4), torch.arange(4), epoch=0)
    loss = torch.nn.functional.cross_entropy(classifier(out), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert classifier[0].weight.grad is not None
    assert not any(p.requires_grad for p in stylizer.parameters())


def test_from_checkpoint_and_bad_settings(stylizer, tmp_path):
    path = tmp_path / "three.safetensors"
    save_stylizer(str(path), stylizer, ["a", "b", "c"])
    augment = StyleAugment.from_checkpoint(str(path), policy="mix", probability=1.0, seed=5)
    batch = images(3)
    torch.testing.assert_close(augment(batch, [7, 8, 9]), StyleAugment(stylizer, "mix", 1.0, 1.0, 5)(batch, [7, 8, 9]))
    with pytest.raises(UsageError, match="policy"):
        StyleAugment(stylizer, "all")
    with pytest.raises(UsageError, match="alpha"):
        StyleAugment(stylizer, alpha=(0.8, 0.2))
    with pytest.raises(UsageError, match="probability"):
        StyleAugment(stylizer, probability=1.5)
    with pytest.raises(ValueError, match="keys"):
        augment(batch, [1, 2])


def test_a_samples_pixels_do_not_depend_on_its_batch_on_cpu(stylizer):
    augment = StyleAugment(stylizer, "mix", alpha=(0.5, 1.0), probability=1.0, seed=9)
    batch, keys = images(6), torch.arange(6)
    together = augment(batch, keys, epoch=1)
    for i in range(6):
        assert torch.equal(augment(batch[i : i + 1], keys[i : i + 1], epoch=1), together[i : i + 1])
