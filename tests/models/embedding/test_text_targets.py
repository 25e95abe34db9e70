import numpy as np
import pytest

from models.embedding.text_targets import TextTargetConfig, TextTargets, caption_tokens
from tests.models.corpus_fixture import corpus_rows


@pytest.fixture(scope="module")
def token_lists():
    return [caption_tokens(row["text"], row["caption_hashtags"]) for row in corpus_rows(200, seed=3, size=16)]


def test_caption_tokens_lowercase_drop_stopwords_and_add_hashtags_once():
    tokens = caption_tokens("The RED circle in the museum #Art", ["art", "#JoanMiro", "x"])
    assert tokens == ["red", "circle", "museum", "art", "joanmiro"]


def test_vocabulary_drops_rare_words_and_words_in_every_caption(token_lists):
    text = TextTargets.fit(token_lists + [["zebra"]], TextTargetConfig("word2vec", 8))
    assert "red" in text.vocab and "circle" in text.vocab
    assert "joanmiro" not in text.vocab  # in every caption: says nothing about one image
    assert "zebra" not in text.vocab  # seen once


@pytest.mark.parametrize("kind", ["word2vec", "lda"])
def test_fit_is_reproducible_and_saved_arrays_give_the_same_targets(token_lists, kind):
    config = TextTargetConfig(kind, 6, passes=3, epochs=5)
    first, second = TextTargets.fit(token_lists, config), TextTargets.fit(token_lists, config)
    arrays, description = first.to_arrays()
    reloaded = TextTargets.from_arrays({k: v.copy() for k, v in arrays.items()}, description)
    a, known = first.encode(token_lists[:20])
    assert known.all() and a.shape == (20, 6) and a.dtype == np.float32
    np.testing.assert_array_equal(a, second.encode(token_lists[:20])[0])
    np.testing.assert_array_equal(a, reloaded.encode(token_lists[:20])[0])


def test_lda_targets_are_distributions_independent_of_the_batch(token_lists):
    text = TextTargets.fit(token_lists, TextTargetConfig("lda", 5, passes=3))
    batch, _ = text.encode(token_lists[:30])
    np.testing.assert_allclose(batch.sum(1), 1, rtol=1e-5)
    alone, _ = text.encode([token_lists[7]])
    np.testing.assert_array_equal(alone[0], batch[7])


def test_unknown_words_give_no_target(token_lists):
    text = TextTargets.fit(token_lists, TextTargetConfig("word2vec", 8))
    targets, known = text.encode([["qwerty"], [], ["red", "qwerty"]])
    assert known.tolist() == [False, False, True]
    assert not targets[:2].any()


def test_tfidf_weights_rare_words_more(token_lists):
    plain = TextTargets.fit(token_lists, TextTargetConfig("word2vec", 8, tfidf=False, centre=False))
    weighted = TextTargets.fit(token_lists, TextTargetConfig("word2vec", 8, tfidf=True, centre=False))
    words = plain.vocab
    idf = weighted.arrays["idf"]
    common, rare = words[int(np.argmin(idf))], words[int(np.argmax(idf))]
    vectors = dict(zip(words, weighted.arrays["vectors"], strict=True))

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    mean_plain = plain.encode([[common, rare]])[0][0]
    mean_weighted = weighted.encode([[common, rare]])[0][0]
    np.testing.assert_allclose(mean_plain, (vectors[common] + vectors[rare]) / 2, rtol=1e-5)
    assert cosine(mean_weighted, vectors[rare]) > cosine(mean_plain, vectors[rare])


def test_word2vec_targets_are_centred_on_the_training_captions(token_lists):
    raw = TextTargets.fit(token_lists, TextTargetConfig("word2vec", 8, centre=False))
    centred = TextTargets.fit(token_lists, TextTargetConfig("word2vec", 8))
    raw_targets, _ = raw.encode(token_lists)
    targets, _ = centred.encode(token_lists)
    np.testing.assert_allclose(targets.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(targets, raw_targets - raw_targets.mean(0), atol=1e-5)

    def mean_pairwise_cosine(x):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        return (unit @ unit.T)[np.triu_indices(len(x), 1)].mean()

    assert mean_pairwise_cosine(raw_targets) > 0.5 > 0.1 > mean_pairwise_cosine(targets)
