"""``StyleAugment``: online style augmentation with the job's policies and per-sample, per-epoch seeds."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.common.errors import CheckpointError, UsageError
from models.style.augment import StyleAugment
from models.style.checkpoint import load_arbitrary, save_arbitrary, save_stylizer
from models.style.policy import StylePolicy, plan_outputs, record_seed
from models.style.predictor import StylePredictor
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

NAMES = ["dots", "lines", "waves"]


@pytest.fixture(scope="module")
def stylizer():
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=3, width=0.125, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def arbitrary(tmp_path_factory):
    """A small random arbitrary-style pair (a real MobileNetV2 predictor, a narrow transformer), as a checkpoint."""
    torch.manual_seed(1)
    config = StylizerConfig(
        num_styles=0,
        embedding_size=100,
        channels=(4, 4, 8, 4, 4),
        num_residual=1,
        contract_norm=False,
        head="norm_sigmoid",
        pixel_scale=1.0,
    )
    transformer = MultiStyleTransformer(config)
    with torch.no_grad():
        for p in transformer.style_parameters():
            p.add_(0.3 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("arbitrary") / "pair.safetensors"
    save_arbitrary(str(path), StylePredictor().eval(), transformer)
    return str(path)


def images(count=6, size=16, seed=0):
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def paintings(count=4):
    rng = np.random.default_rng(0)
    return {f"p{i}.png": rng.integers(0, 256, size=(40 + i, 48, 3), dtype=np.uint8) for i in range(count)}


def test_draws_are_the_jobs_plans_from_key_and_epoch(stylizer):
    augment = StyleAugment(stylizer, "random", alpha=(0.2, 0.9), probability=0.5, seed=3, style_names=NAMES)
    first = [augment.draw(key, epoch=0) for key in range(200)]
    # the job's own planner, seeded as the job seeds a record: "{key}@{epoch}" is the record id
    (expected,) = plan_outputs(StylePolicy("random", 1), (0.2, 0.9), NAMES, record_seed(3, "7@0"))
    plan = first[7].plan
    assert (plan.style, plan.alpha) == (expected.style, expected.alpha) and np.array_equal(plan.code, expected.code)
    again = StyleAugment(stylizer, "random", alpha=(0.2, 0.9), probability=0.5, seed=3, style_names=NAMES)
    assert [(d.restyle, d.plan.alpha) for d in first] == [
        (again.draw(k).restyle, again.draw(k).plan.alpha) for k in range(200)
    ]
    next_epoch = [augment.draw(key, epoch=1) for key in range(200)]
    assert sum(a.plan.alpha != b.plan.alpha for a, b in zip(first, next_epoch, strict=True)) > 190  # fresh per epoch
    # probability is the share of restyled samples; random picks one style, and every style gets picked
    assert 0.4 < np.mean([d.restyle for d in first]) < 0.6
    assert all(d.plan.code.max() == 1 and d.plan.code.sum() == 1 for d in first)
    assert {d.plan.style for d in first} == set(NAMES)
    assert all(0.2 <= d.plan.alpha <= 0.9 for d in first)


def test_mix_draws_convex_mixtures(stylizer):
    draws = [StyleAugment(stylizer, "mix", probability=1.0).draw(key) for key in range(50)]
    weights = np.stack([d.plan.code for d in draws])
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-6)
    assert (weights > 0).all() and weights.max() < 1 and {d.plan.style for d in draws} == {"mix"}


def test_restyled_samples_are_the_stylizer_output_and_others_untouched(stylizer):
    augment = StyleAugment(stylizer, "mix", alpha=(0.3, 1.0), probability=0.5, seed=1, precision="fp32")
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
            code = torch.from_numpy(draw.plan.code)[None]
            expected = stylizer.stylize(batch[i : i + 1], code, draw.plan.alpha)
            torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)
            assert (out[i] - batch[i]).abs().max() > 0.05
        else:
            assert torch.equal(out[i], batch[i])


def test_a_samples_pixels_do_not_depend_on_its_batch_on_cpu(stylizer):
    augment = StyleAugment(stylizer, "mix", alpha=(0.5, 1.0), probability=1.0, seed=9)
    batch, keys = images(6), torch.arange(6)
    together = augment(batch, keys, epoch=1)
    for i in range(6):
        assert torch.equal(augment(batch[i : i + 1], keys[i : i + 1], epoch=1), together[i : i + 1])


def test_size_stylises_at_that_scale_and_returns_the_input_size(stylizer):
    batch, keys = images(2, size=12), [3, 4]
    augment = StyleAugment(stylizer, probability=1.0, size=24, seed=2, precision="fp32")
    out = augment(batch, keys)
    assert out.shape == batch.shape
    for i, key in enumerate(keys):
        draw = augment.draw(key)
        up = F.interpolate(batch[i : i + 1], size=(24, 24), mode="bilinear", antialias=True)
        styled = stylizer.stylize(up.clamp(0, 1), torch.from_numpy(draw.plan.code)[None], draw.plan.alpha)
        expected = F.interpolate(styled, size=(12, 12), mode="bilinear", antialias=True).clamp(0, 1)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)
    assert not torch.allclose(out, StyleAugment(stylizer, probability=1.0, seed=2)(batch, keys), atol=1e-2)


def test_runs_as_the_job_runs_and_survives_pickling(stylizer):
    """The job's runner and precision rule: a restyled sample on uint8 levels is the job's pixels for it."""
    import pickle

    from models.common.pixels import float_to_uint8, uint8_to_float
    from models.style.runner import StylizerRunner

    for precision in ("fp32", "bf16"):
        augment = StyleAugment(stylizer, "mix", alpha=(0.4, 1.0), probability=1.0, seed=6, precision=precision)
        pixels = float_to_uint8(images(3)).numpy()
        out = float_to_uint8(augment(uint8_to_float(pixels), [0, 1, 2])).numpy()
        plans = [augment.draw(key).plan for key in range(3)]
        job = StylizerRunner(stylizer, "cpu", precision)
        codes, alphas = np.stack([p.code for p in plans]), np.array([p.alpha for p in plans], np.float32)
        assert np.array_equal(out, job(pixels, codes, alphas)), precision
    copy = pickle.loads(pickle.dumps(augment))  # DataLoader workers receive it pickled
    assert torch.equal(copy(images(3), [0, 1, 2]), augment(images(3), [0, 1, 2]))


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
    loss = F.cross_entropy(classifier(out), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert classifier[0].weight.grad is not None
    assert not any(p.requires_grad for p in stylizer.parameters())


@pytest.mark.slow
def test_paintings_random_mix_and_randomize(arbitrary):
    batch, keys = images(4, size=16), torch.arange(4)
    collection = paintings()
    random = StyleAugment.from_paintings(collection, arbitrary, policy="random", probability=1.0, seed=4)
    assert {random.draw(k).plan.style_ids[0] for k in range(40)} == set(collection)  # one painting each
    randomize = StyleAugment.from_paintings(collection, arbitrary, policy="randomize", probability=1.0, seed=4)
    samples = np.stack([randomize.draw(k).plan.code for k in range(3)])
    assert samples.shape == (3, 100) and not np.allclose(samples[0], samples[1])  # Jackson et al.: sampled codes
    out = randomize(batch, keys)
    assert out.shape == batch.shape and (out - batch).abs().amax(dim=(1, 2, 3)).min() > 0.01
    assert torch.equal(out, randomize(batch, keys)) and not torch.equal(out, randomize(batch, keys, epoch=1))
    mix = StyleAugment.from_paintings(collection, arbitrary, policy="mix", probability=1.0)
    assert len(mix.draw(0).plan.style_ids) == 3
    # alpha acts in embedding space: alpha 0 is the image's own style, not its pixels
    own = StyleAugment.from_paintings(collection, arbitrary, policy="random", alpha=0.0, probability=1.0)
    assert not torch.equal(own(batch, keys), batch)


def test_from_checkpoint_and_bad_settings(stylizer, arbitrary, tmp_path):
    path = tmp_path / "three.safetensors"
    save_stylizer(str(path), stylizer, NAMES)
    augment = StyleAugment.from_checkpoint(str(path), policy="mix", probability=1.0, seed=5)
    assert augment.style_names == NAMES
    batch = images(3)
    torch.testing.assert_close(augment(batch, [7, 8, 9]), StyleAugment(stylizer, "mix", 1.0, 1.0, 5)(batch, [7, 8, 9]))
    with pytest.raises(UsageError, match="policy"):
        StyleAugment(stylizer, "all")
    with pytest.raises(UsageError, match="randomize"):
        StyleAugment(stylizer, "randomize")
    with pytest.raises(UsageError, match="alpha"):
        StyleAugment(stylizer, alpha=(0.8, 0.2))
    with pytest.raises(UsageError, match="probability"):
        StyleAugment(stylizer, probability=1.5)
    with pytest.raises(CheckpointError, match="arbitrary"):  # its styles come from paintings: from_paintings
        StyleAugment.from_checkpoint(arbitrary)
    with pytest.raises(UsageError, match="paintings"):
        StyleAugment(load_arbitrary(arbitrary)[1])
    with pytest.raises(ValueError, match="keys"):
        augment(batch, [1, 2])


# -- a torchvision v2 transform: PIL, CHW/BCHW, uint8/float, tv_tensors.Image, v2.Compose, DataLoader workers --


def test_uint8_batch_comes_back_uint8_stylised_and_as_the_jobs_pixels(stylizer):
    """The old bug: a uint8 batch came back all black. Now uint8 in, uint8 out, restyled, the job's pixels."""
    from models.style.runner import StylizerRunner

    augment = StyleAugment(stylizer, "mix", alpha=(0.8, 1.0), probability=1.0, seed=2, precision="fp32")
    batch = (images(4) * 255).round().to(torch.uint8)
    out = augment(batch, torch.arange(4), 0)
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert out.amax(dim=(1, 2, 3)).min() > 0 and len(out.unique()) > 20  # not black (the old bug: all 0)
    assert (out.float() - batch.float()).abs().mean() > 5  # stylised by a real margin
    plans = [augment.draw(key).plan for key in range(4)]
    codes, alphas = np.stack([p.code for p in plans]), np.array([p.alpha for p in plans], np.float32)
    job = StylizerRunner(stylizer, "cpu", "fp32")(batch.movedim(1, -1).numpy(), codes, alphas)
    assert np.array_equal(out.movedim(1, -1).numpy(), job)
    unkeyed = augment(batch)  # keys are optional: draws from the transform's own generator
    assert unkeyed.dtype == torch.uint8 and (unkeyed.float() - batch.float()).abs().mean() > 5


def test_pil_chw_and_tv_tensors_image_come_back_as_they_came(stylizer):
    from PIL import Image
    from torchvision import tv_tensors

    augment = StyleAugment(stylizer, probability=1.0, seed=3)
    pil = Image.fromarray((images(1, size=20)[0].movedim(0, -1) * 255).byte().numpy()[:, :16], "RGB")
    out = augment(pil)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == pil.size == (16, 20)
    assert np.abs(np.asarray(out, np.float32) - np.asarray(pil, np.float32)).mean() > 5
    chw = images(1)[0]
    styled = augment(chw)
    assert styled.dtype == torch.float32 and styled.shape == chw.shape
    assert styled.min() >= 0 and styled.max() <= 1 and (styled - chw).abs().mean() > 5 / 255
    wrapped = augment(tv_tensors.Image(chw))
    assert type(wrapped) is tv_tensors.Image and wrapped.shape == chw.shape and (wrapped - chw).abs().mean() > 5 / 255
    keyed = augment(tv_tensors.Image(chw), keys=[7], epoch=1)
    assert torch.equal(keyed.as_subclass(torch.Tensor), augment(chw[None], [7], 1)[0])


def test_inside_v2_compose_with_a_label(stylizer):
    from torchvision.transforms import v2

    augment = StyleAugment(stylizer, probability=1.0, seed=4)
    image = (images(1)[0] * 255).round().to(torch.uint8)
    pipeline = v2.Compose([v2.RandomHorizontalFlip(p=1), augment, v2.ToDtype(torch.float32, scale=True)])
    out, label = pipeline(image, 3)
    assert label == 3 and out.dtype == torch.float32 and out.shape == image.shape
    assert out.min() >= 0 and out.max() <= 1 and (out - image.flip(-1) / 255).abs().mean() > 5 / 255
    sample = pipeline({"image": image, "label": torch.tensor(3)})
    assert sample["label"].item() == 3 and sample["image"].shape == image.shape
    batch, labels = images(3), torch.tensor([0, 1, 0])  # a batch with its labels, as one sample: labels pass
    out, passed = augment((batch, labels))
    assert torch.equal(passed, labels) and out.shape == batch.shape and (out - batch).abs().mean() > 5 / 255


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 8, 8, dtype=torch.int64), "uint8 images in \\[0, 255\\] or float ones"),
        (torch.full((3, 8, 8), 200.0), "float images in \\[0, 1\\].*uint8"),
        (torch.rand(8, 8), "RGB tensors, got shape \\(8, 8\\)"),
        (torch.rand(4, 8, 8), "RGB tensors, got shape \\(4, 8, 8\\)"),
        (torch.rand(2, 4, 8, 8), "RGB tensors, got shape \\(2, 4, 8, 8\\)"),
    ],
)
def test_a_wrong_dtype_range_or_shape_is_one_clear_error(stylizer, bad, match):
    with pytest.raises(UsageError, match=match):
        StyleAugment(stylizer, probability=1.0)(bad)


class _Keyed(torch.utils.data.Dataset):
    def __init__(self, augment, batch):
        self.augment, self.batch = augment, batch

    def __len__(self):
        return len(self.batch)

    def __getitem__(self, index):
        return self.augment(self.batch[index], keys=[index], epoch=1), index


def test_dataloader_workers_give_the_main_process_keyed_pixels(stylizer):
    import multiprocessing

    augment = StyleAugment(stylizer, "mix", probability=1.0, seed=5)
    batch = images(6)
    loader = torch.utils.data.DataLoader(
        _Keyed(augment, batch), batch_size=2, num_workers=2, multiprocessing_context=multiprocessing.get_context("fork")
    )
    out, keys = (torch.cat(parts) for parts in zip(*loader, strict=True))
    assert keys.tolist() == list(range(6))
    assert torch.equal(out, augment(batch, torch.arange(6), 1)) and not torch.equal(out, batch)


def test_from_checkpoint_pickles_without_its_weights(stylizer, tmp_path):
    """Spawned DataLoader workers receive the transform pickled: the checkpoint's path, not its tensors."""
    import pickle

    path = tmp_path / "three.safetensors"
    save_stylizer(str(path), stylizer, NAMES)
    augment = StyleAugment.from_checkpoint(str(path), policy="mix", probability=1.0, seed=5)
    data = pickle.dumps(augment)
    weights = sum(p.numel() * p.element_size() for p in stylizer.parameters())
    assert len(data) < weights / 4
    copy = pickle.loads(data)
    assert torch.equal(copy(images(3), [0, 1, 2]), augment(images(3), [0, 1, 2]))
