"""The text-supervised CNN learns what captions say about images (the issue's "done means")."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from models.embedding.heldout import is_heldout
from models.embedding.losses import default_loss, make_loss
from models.embedding.net import EmbeddingNet, EmbeddingNetConfig
from models.embedding.retrieval import embed_posts, evaluate
from models.embedding.text_targets import TextTargetConfig, TextTargets
from models.embedding.trainer import EmbeddingTrainer, TrainConfig, images_to_tensor, prefetched
from tests.models.corpus_fixture import COLOURS, SHAPES, corpus_rows, write_corpus
from transforms.embed import corpus_examples, heldout_posts, iter_split_tokens

IMAGE_SIZE = 32
HELDOUT = 0.25
CONTENT_WORDS = [*COLOURS, *SHAPES, "striped", "dotted"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"), corpus_rows(360, seed=0, size=40))


def train(paths, output_dir, kind, epochs, init_seed=0, progress=False):
    torch.manual_seed(init_seed)
    config = TextTargetConfig(kind, 16 if kind == "word2vec" else 8, min_count=2)
    text = TextTargets.fit(list(iter_split_tokens(paths, HELDOUT, heldout=False)), config)
    loss = default_loss(kind)
    model = EmbeddingNet(EmbeddingNetConfig("resnet-tiny", text.dim, "sigmoid" if loss == "sigmoid-ce" else "linear"))
    train_config = TrainConfig(epochs=epochs, batch_size=32, lr=1e-3, image_size=IMAGE_SIZE, heldout_fraction=HELDOUT)
    trainer = EmbeddingTrainer(model, make_loss(loss), text, train_config, str(output_dir), progress=progress)

    def examples(epoch):
        return corpus_examples(
            paths, text, image_size=IMAGE_SIZE, heldout_fraction=HELDOUT, heldout=False, shuffle_seed=epoch
        )

    def heldout():
        return corpus_examples(paths, text, image_size=IMAGE_SIZE, heldout_fraction=HELDOUT, heldout=True)

    return trainer, examples, heldout


@pytest.mark.parametrize("kind", ["word2vec", pytest.param("lda", marks=pytest.mark.slow)])
def test_short_cpu_training_retrieves_far_above_chance(corpus, tmp_path, kind):
    trainer, examples, heldout = train(corpus, tmp_path, kind, epochs=6)
    history = trainer.fit(examples, heldout)
    assert history[-1]["heldout_loss"] < history[0]["heldout_loss"]
    posts = heldout_posts(corpus, image_size=IMAGE_SIZE, heldout_fraction=HELDOUT)
    _, embeddings, tokens = embed_posts(trainer.model, posts, IMAGE_SIZE, progress=False)
    report = evaluate(embeddings, tokens, trainer.text, queries=CONTENT_WORDS)
    model, chance = report["model"], report["random"]
    print(kind, model, chance)
    assert report["num_images"] > 60 and report["num_word_queries"] == len(CONTENT_WORDS)
    assert model["P@5"] >= chance["P@5"] + 0.25
    assert model["R@10"] >= 3 * chance["R@10"]
    assert model["median_rank"] <= chance["median_rank"] / 2


def test_resume_continues_exactly_where_training_stopped(corpus, tmp_path):
    small = corpus[:1]  # one shard: 180 posts
    straight, examples, heldout = train(small, tmp_path / "straight", "word2vec", epochs=2)
    straight.fit(examples, heldout)

    first, examples, heldout = train(small, tmp_path / "resumed", "word2vec", epochs=1)
    first.fit(examples, heldout)
    second, examples, heldout = train(small, tmp_path / "resumed", "word2vec", epochs=2, init_seed=5)
    assert second.resume() == 1
    history = second.fit(examples, heldout)
    assert [h["epoch"] for h in history] == [1, 2]
    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)
    curve = Image.open(tmp_path / "resumed" / "loss_curve.png")
    assert curve.size == (640, 360) and len(set(curve.convert("RGB").getdata())) > 4


def test_augmentation_crops_and_flips_reproducibly():
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    centre = images_to_tensor([image], 8)
    assert centre.shape == (1, 3, 8, 8) and torch.equal(centre[0, :, 0, 0] * 255, torch.tensor([33.0, 34, 35]))
    a = images_to_tensor([image] * 16, 8, torch.Generator().manual_seed(3))
    b = images_to_tensor([image] * 16, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and len({tuple(x.flatten().tolist()) for x in a}) > 4


def test_heldout_split_is_a_stable_hash_of_the_id():
    ids = [f"instagram:P{i}:0" for i in range(4000)]
    held = [is_heldout(i, 0.1) for i in ids]
    assert 0.08 < np.mean(held) < 0.12
    assert held == [is_heldout(i, 0.1) for i in ids]
    assert all(is_heldout(i, 0.2) for i, h in zip(ids, held, strict=True) if h)  # a larger split contains a smaller


def test_prefetching_keeps_order_raises_producer_errors_and_stops_with_the_consumer():
    assert list(prefetched(iter(range(1000)), depth=8)) == list(range(1000))

    def failing():
        yield 1
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        list(prefetched(failing()))

    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    consumer = prefetched(endless(), depth=4)
    assert [next(consumer) for _ in range(3)] == [0, 1, 2]
    consumer.close()
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count < 20
