"""models.common.resume: the trainers' one resume-state format (versioned, checksummed, atomic) and one divergence
error."""

import os

import numpy as np
import pytest
import torch

from models.common.errors import CheckpointError, TrainingDiverged
from models.common.resume import load_resume_state, save_resume_state
from models.embedding.losses import make_loss
from models.embedding.net import EmbeddingNet, EmbeddingNetConfig
from models.embedding.text_targets import TextTargetConfig, TextTargets
from models.embedding.trainer import EmbeddingTrainer, Example, TrainConfig
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from models.style.trainer import StylizerTrainer, TrainingConfig
from models.style.vgg import build_loss_network


def test_a_state_round_trips_and_names_its_kind(tmp_path):
    path = str(tmp_path / "sub" / "state.pt")
    state = {"step": 7, "history": torch.arange(4.0), "names": ["a", "b"], "nested": {"lr": 0.1}}
    save_resume_state(path, "stylebeam.stylizer.resume", state)
    loaded = load_resume_state(path, "stylebeam.stylizer.resume")
    assert loaded["step"] == 7 and torch.equal(loaded["history"], state["history"]) and loaded["nested"] == {"lr": 0.1}
    assert sorted(os.listdir(tmp_path / "sub")) == ["state.pt"]  # no temporary ".state.pt.*.partial" left beside it
    with pytest.raises(CheckpointError, match="'stylebeam.stylizer.resume' resume state, not a 'stylebeam.embedding"):
        load_resume_state(path, "stylebeam.embedding.resume")
    with pytest.raises(CheckpointError, match="resume state not found"):
        load_resume_state(str(tmp_path / "none.pt"), "stylebeam.stylizer.resume")


def test_a_plain_torch_file_is_not_taken_for_a_resume_state(tmp_path):
    torch.save({"step": 1}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="not a stylebeam resume state with a checksum"):
        load_resume_state(str(tmp_path / "old.pt"), "stylebeam.stylizer.resume")


def test_the_stylizer_trainer_reports_a_diverging_loss_as_a_project_error():
    network = build_loss_network("vgg16", "random", layers=("relu1_2", "relu2_2"), seed=0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=1, width=0.125, num_residual=1))
    layers = {"content_layers": ("relu2_2",), "style_layers": ("relu1_2",)}
    config = TrainingConfig(steps=1, content_weight=float("nan"), **layers)
    trainer = StylizerTrainer(model, network, [torch.rand(3, 16, 16)], ["s"], config)
    with pytest.raises(TrainingDiverged, match="diverged at step 1.*lower --lr"):
        trainer.train_step(torch.rand(2, 3, 16, 16))


def test_the_embedding_trainer_reports_a_diverging_loss_as_the_same_error(tmp_path):
    text = TextTargets.fit([["red", "circle"], ["blue", "square"]] * 3, TextTargetConfig("word2vec", 4, min_count=1))
    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim))
    config = TrainConfig(epochs=1, batch_size=2, image_size=8)
    trainer = EmbeddingTrainer(model, make_loss("cosine"), text, config, str(tmp_path), progress=False)
    image = np.zeros((9, 9, 3), np.uint8)
    nan_target = np.full(text.dim, np.nan, np.float32)
    with pytest.raises(TrainingDiverged, match="diverged at step 1.*lower --lr"):
        trainer.fit(lambda epoch: [Example("a", image, nan_target), Example("b", image, nan_target)])
