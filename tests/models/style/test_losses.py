import pytest
import torch

from models.style.losses import blend_grams, content_loss, gram_matrix, style_loss, total_variation_loss


def features(shape=(2, 4, 6, 5), seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_gram_matrix_is_channel_co_activation_over_chw():
    f = features()
    gram = gram_matrix(f)
    assert gram.shape == (2, 4, 4)
    expected = torch.einsum("bchw,bdhw->bcd", f, f) / (4 * 6 * 5)
    torch.testing.assert_close(gram, expected)
    torch.testing.assert_close(gram, gram.transpose(1, 2))


def test_gram_matrix_does_not_depend_on_spatial_size():
    f = features((1, 3, 4, 4))
    tiled = f.repeat(1, 1, 3, 2)  # the same texture, six times the area
    torch.testing.assert_close(gram_matrix(tiled), gram_matrix(f))


def test_blend_grams_mixes_targets_linearly():
    a = {"relu1_1": torch.eye(3), "relu2_1": torch.ones(2, 2)}
    b = {"relu1_1": torch.zeros(3, 3), "relu2_1": 3 * torch.ones(1, 2, 2)}
    assert torch.equal(blend_grams([a, b], [1.0, 0.0])["relu1_1"], torch.eye(3))
    mixed = blend_grams([a, b], [0.25, 0.75])
    torch.testing.assert_close(mixed["relu1_1"], 0.25 * torch.eye(3))
    torch.testing.assert_close(mixed["relu2_1"], 2.5 * torch.ones(2, 2))
    per_image = blend_grams([a, b], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert per_image["relu2_1"].shape == (2, 2, 2)
    torch.testing.assert_close(per_image["relu2_1"][1], 3 * torch.ones(2, 2))
    with pytest.raises(ValueError, match="2 styles but 3 weights"):
        blend_grams([a, b], [0.2, 0.3, 0.5])


def test_content_loss_is_mean_squared_error_summed_over_layers():
    f = {"a": features(seed=1), "b": features((2, 2, 3, 3), seed=2)}
    t = {"a": features(seed=3), "b": features((2, 2, 3, 3), seed=4)}
    expected = ((f["a"] - t["a"]) ** 2).flatten(1).mean(1) + ((f["b"] - t["b"]) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(content_loss(f, t, reduction="none"), expected)
    torch.testing.assert_close(content_loss(f, t), expected.mean())
    assert content_loss(f, f).item() == 0


def test_style_loss_zero_at_the_target_and_per_image_otherwise():
    f = {"relu1_1": features(seed=5)}
    own = {"relu1_1": gram_matrix(f["relu1_1"])}  # (B, C, C): one target per image
    assert torch.all(style_loss(f, own, reduction="none") == 0)
    shared = {"relu1_1": gram_matrix(f["relu1_1"][:1])[0]}  # (C, C): image 0's style for the whole batch
    per_image = style_loss(f, shared, reduction="none")
    assert per_image[0] == 0 and per_image[1] > 0
    doubled = style_loss(f, shared, layer_weights={"relu1_1": 2.0}, reduction="none")
    torch.testing.assert_close(doubled, 2 * per_image)


def test_total_variation_of_flat_and_ramp_images():
    assert total_variation_loss(torch.full((1, 3, 8, 8), 0.3)).item() == 0
    ramp = torch.linspace(0, 1, 5).view(1, 1, 1, 5).expand(2, 3, 4, 5)
    torch.testing.assert_close(total_variation_loss(ramp, reduction="none"), torch.full((2,), 0.25**2))
    noisy = ramp + 0.1 * features((2, 3, 4, 5))
    assert total_variation_loss(noisy) > total_variation_loss(ramp)
