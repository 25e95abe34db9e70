"""The stylizer training loop: loss goes down, resume continues exactly, added styles leave old ones alone."""

import itertools

import pytest
import torch
from PIL import Image

from models.common.resume import load_resume_state
from models.style.checkpoint import load_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig, one_hot
from models.style.trainer import (
    RESUME_KIND,
    StylizerTrainer,
    TrainingConfig,
    artefact_paths,
    cycled_styles,
    loss_curve,
)
from models.style.vgg import build_loss_network

SIZE = 32
LAYERS = dict(content_layers=("relu2_2",), style_layers=("relu1_2", "relu2_2", "relu3_3"))


@pytest.fixture(scope="module")
def loss_network():
    return build_loss_network("vgg16", "random", layers=("relu1_2", "relu2_2", "relu3_3"), seed=0)


def style_images():
    """Two styles that differ in colour and frequency: red stripes, blue checks."""
    y, x = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    stripes = torch.stack([0.9 * ((x // 3) % 2), 0.1 * torch.ones_like(x), 0.1 * torch.ones_like(x)]).float()
    checks = torch.stack([0.1 * torch.ones_like(x), 0.3 * ((x // 8 + y // 8) % 2), 0.9 * ((x // 8 + y // 8) % 2)])
    return [stripes, checks.float()]


def content_stream(seed=0, batch=2):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(batch, 3, SIZE, SIZE, generator=generator) for _ in range(20)]


def make_trainer(loss_network, steps, num_styles=2, **kwargs):
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=num_styles, width=0.25, num_residual=1))
    config = TrainingConfig(steps=steps, lr=1e-2, checkpoint_every=3, **LAYERS)
    names = [f"s{i}" for i in range(num_styles)]
    return StylizerTrainer(model, loss_network, style_images()[:num_styles], names, config, **kwargs)


def test_training_a_two_style_network_lowers_the_loss(loss_network):
    trainer = make_trainer(loss_network, steps=30)
    content = content_stream()[0]
    first = trainer.train_step(content)
    for _ in range(29):
        last = trainer.train_step(content)
    assert trainer.step == 30
    assert last[3] < 0.5 * first[3], (first, last)
    assert last[1] < 0.5 * first[1]  # the style term itself, not only content


def test_a_batch_trains_several_styles():
    assert cycled_styles(step=1, batch_size=4, num_styles=3).tolist() == [1, 2, 0, 1]
    seen = torch.cat([cycled_styles(step, 2, 3) for step in range(3)])
    assert torch.bincount(seen).tolist() == [2, 2, 2]


def test_checkpoint_sample_grid_and_loss_curve_are_written(loss_network, tmp_path):
    output = str(tmp_path / "two.safetensors")
    trainer = make_trainer(loss_network, steps=3, preview_images=torch.rand(2, 3, SIZE, SIZE))
    result = trainer.train(iter(content_stream()), output, progress=False)

    model, info = load_stylizer(output)
    assert info.style_names == ["s0", "s1"] and info.digest == result.digest
    assert info.training["steps_done"] == 3 and info.training["style_layers"] == ["relu1_2", "relu2_2", "relu3_3"]
    paths = artefact_paths(output)
    grid = Image.open(paths["samples"])
    assert grid.width > 3 * SIZE and grid.height > 3 * SIZE  # header + 2 content rows, content + 2 style columns
    assert Image.open(paths["loss_curve"]).size == (640, 360)
    state = load_resume_state(paths["resume"], RESUME_KIND)  # checksummed, then torch.load(weights_only=True)
    assert state["step"] == 3 and state["history"].shape == (3, 4)


def test_resume_continues_like_an_uninterrupted_run(loss_network, tmp_path):
    batches = content_stream()
    straight = make_trainer(loss_network, steps=6)
    straight.train(iter(batches), str(tmp_path / "straight.safetensors"), progress=False)

    first_half = make_trainer(loss_network, steps=3)
    output = str(tmp_path / "resumed.safetensors")
    first_half.train(iter(batches), output, progress=False)
    second_half = make_trainer(loss_network, steps=6)
    second_half.resume(artefact_paths(output)["resume"])
    assert second_half.step == 3 and second_half.optimizer.state_dict()["state"]
    second_half.train(itertools.islice(batches, 3, None), output, progress=False)

    assert second_half.step == 6 and len(second_half.history) == 6
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(second_half.model.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_added_styles_train_only_their_rows_and_keep_old_styles_bit_exact(loss_network):
    base = make_trainer(loss_network, steps=4, num_styles=1)
    for batch in content_stream()[:4]:
        base.train_step(batch)
    old = base.model.eval()
    probe = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = old(probe, one_hot([0, 0], 1))

    grown = old.with_extra_styles(1)
    config = TrainingConfig(steps=5, lr=1e-2, **LAYERS)
    trainer = StylizerTrainer(grown, loss_network, style_images()[1:], ["s0", "s1"], config, first_trainable_style=1)
    new_row_before = grown.in2.weight[1].clone()
    shared_before = {n: p.clone() for n, p in grown.named_parameters() if not n.split(".")[-2].startswith("in")}
    for batch in content_stream()[:5]:
        trainer.train_step(batch)

    grown.eval()
    with torch.no_grad():
        after = grown(probe, one_hot([0, 0], 2))
        new_style = grown(probe, one_hot([1, 1], 2))
    assert torch.equal(after, before)  # the old style's output, bit for bit
    for name, value in shared_before.items():
        assert torch.equal(dict(grown.named_parameters())[name], value), name
    assert not torch.equal(grown.in2.weight[1], new_row_before)  # the new style did train
    assert (new_style - after).abs().mean() > 1e-4


def test_loss_curve_draws_without_steps_and_with_a_switched_off_term():
    assert loss_curve([]).size == (640, 360)
    image = loss_curve([[1.0, 10.0, 0.0, 11.0], [0.5, 5.0, 0.0, 5.5]])
    assert len(set(image.getdata())) > 3  # axes, curves and labels were drawn
