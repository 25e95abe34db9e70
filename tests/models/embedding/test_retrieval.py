import numpy as np
import pytest

from models.embedding.retrieval import (
    cosine_similarity,
    evaluate,
    format_table,
    paired_metrics,
    paired_ranks,
    precision_at_k,
    random_paired_metrics,
    relevance,
    word_queries,
)
from models.embedding.text_targets import TextTargetConfig, TextTargets


def test_perfect_embeddings_rank_every_caption_first():
    vectors = np.eye(12, dtype=np.float32)
    metrics = paired_metrics(cosine_similarity(vectors, vectors))
    assert metrics == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.0}


def test_identical_embeddings_score_no_better_than_last_place():
    similarity = cosine_similarity(np.ones((10, 4)), np.ones((10, 4)))
    assert paired_ranks(similarity).tolist() == [10] * 10
    relevant = np.zeros((1, 10), dtype=bool)
    relevant[0, :3] = True
    assert precision_at_k(similarity[:1], relevant, k=5) == 0.0  # ties never flatter the model


def test_ranks_follow_similarity_with_explicit_answers():
    similarity = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.4]])
    assert paired_ranks(similarity, np.array([2, 0])).tolist() == [2, 3]


def test_precision_at_k_counts_relevant_images_in_the_top_k():
    similarity = np.array([[5.0, 4, 3, 2, 1, 0]])
    relevant = np.array([[True, False, True, False, False, True]])
    assert precision_at_k(similarity, relevant, k=5) == pytest.approx(2 / 5)
    assert precision_at_k(similarity, relevant, k=1) == 1.0


def test_random_baselines():
    assert random_paired_metrics(100) == {"R@1": 0.01, "R@5": 0.05, "R@10": 0.1, "median_rank": 50.5}


def test_word_queries_and_relevance():
    tokens = [["red", "circle"], ["red", "square"], ["blue", "square"], ["red"], ["green"]]
    assert word_queries(tokens, ["red", "square", "blue", "green", "circle"], min_relevant=2) == ["red", "square"]
    assert relevance(["square"], tokens).tolist() == [[False, True, True, False, False]]


def test_evaluate_reports_model_and_random_side_by_side():
    tokens = [
        ["red", "circle", "sun"],
        ["blue", "square", "moon"],
        ["red", "square", "sun"],
        ["blue", "circle", "moon"],
    ]
    text = TextTargets.fit(tokens * 5, TextTargetConfig("word2vec", 8, min_count=1, max_doc_fraction=0.9))
    captions, _ = text.encode(tokens + [["nothing"]])
    report = evaluate(captions, tokens + [["nothing"]], text, queries=["red", "unknownword"], k=2)
    assert report["word_queries"] == ["red"] and report["unknown_queries"] == ["unknownword"]
    assert report["num_caption_queries"] == 4 and report["num_images"] == 5
    assert report["model"]["R@1"] == 1.0  # each caption's own image is the image embedded as its caption
    assert report["random"]["P@2"] == pytest.approx(2 / 5)
    assert "P@2" in format_table(report) and "random" in format_table(report)
