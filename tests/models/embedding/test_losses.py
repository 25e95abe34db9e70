import math

import pytest
import torch

from models.embedding.losses import CosineRegressionLoss, InfoNCELoss, SigmoidTopicLoss, default_loss, make_loss


def test_cosine_regression_is_zero_when_aligned_and_two_when_opposite():
    target = torch.randn(4, 8)
    loss = CosineRegressionLoss()
    assert loss(3 * target, target).item() == pytest.approx(0, abs=1e-6)
    assert loss(-target, target).item() == pytest.approx(2, abs=1e-6)


def test_sigmoid_topic_loss_is_lowest_when_probabilities_match():
    topics = torch.softmax(torch.randn(4, 6), dim=1)
    loss = SigmoidTopicLoss()
    exact = loss(torch.logit(topics), topics)
    assert exact < loss(torch.logit(topics) + 0.5, topics) and exact < loss(torch.zeros(4, 6), topics)


def test_infonce_prefers_matched_pairs_and_learns_its_temperature():
    torch.manual_seed(0)
    texts = torch.randn(8, 16)
    loss = InfoNCELoss()
    assert loss.temperature == pytest.approx(0.07, rel=1e-4)
    matched = loss(texts + 0.1 * torch.randn(8, 16), texts)
    shuffled = loss(texts[torch.randperm(8)], texts)
    assert matched < 0.1 < math.log(8) < shuffled
    shuffled.backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0


def test_losses_by_name():
    assert default_loss("lda") == "sigmoid-ce" and default_loss("word2vec") == "cosine"
    assert isinstance(make_loss("infonce"), InfoNCELoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")
