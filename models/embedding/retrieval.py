"""Text→image retrieval metrics, each beside the score a random ranking gets.

Two protocols on held-out posts, ranking images by cosine similarity to a text embedding:

- **word queries** (Gómez et al. 2018's P@5): the query is one word's text embedding; an image is relevant
  when its own caption contains the word. Random baseline: the expected precision of a random ranking, the
  share of relevant images (averaged over queries).
- **caption queries**: each held-out caption queries the held-out images; its own image is the one right
  answer. R@K (its image in the top K), median rank. Random baseline: R@K = K/N, median rank (N+1)/2.

Ties are ranked pessimistically (an image scoring exactly as the right one counts as ahead of it), so a
model that embeds everything alike scores like chance, not better.
"""

from collections import Counter
from collections.abc import Sequence

import numpy as np

RECALL_KS = (1, 5, 10)


def cosine_similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``(Q, D)`` × ``(N, D)`` → ``(Q, N)``; zero vectors score 0."""
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    g = gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12)
    return q.astype(np.float64) @ g.astype(np.float64).T


def precision_at_k(similarity: np.ndarray, relevant: np.ndarray, k: int = 5) -> float:
    """Mean over queries of the share of relevant images among the top ``k`` (``relevant``: ``(Q, N)`` bool)."""
    if len(similarity) == 0:
        return float("nan")
    k = min(k, similarity.shape[1])
    # pessimistic ties: among equal scores, irrelevant images sort first
    order = np.lexsort((relevant.astype(np.int8), -similarity), axis=1)[:, :k]
    return float(np.take_along_axis(relevant, order, axis=1).mean())


def random_precision(relevant: np.ndarray) -> float:
    return float(relevant.mean(axis=1).mean()) if len(relevant) else float("nan")


def paired_ranks(similarity: np.ndarray, answers: np.ndarray | None = None) -> np.ndarray:
    """1-based rank of image ``answers[q]`` (default ``q``) for each query of a ``(Q, N)`` similarity matrix."""
    answers = np.arange(len(similarity)) if answers is None else np.asarray(answers)
    true = similarity[np.arange(len(similarity)), answers][:, None]
    ahead = (similarity >= true).sum(axis=1) - 1
    return ahead + 1


def paired_metrics(similarity: np.ndarray, answers: np.ndarray | None = None) -> dict:
    ranks = paired_ranks(similarity, answers)
    metrics = {f"R@{k}": float((ranks <= k).mean()) for k in RECALL_KS}
    metrics["median_rank"] = float(np.median(ranks))
    return metrics


def random_paired_metrics(n: int) -> dict:
    metrics = {f"R@{k}": min(k, n) / n for k in RECALL_KS}
    metrics["median_rank"] = (n + 1) / 2
    return metrics


def word_queries(token_lists: Sequence[list[str]], vocabulary, min_relevant: int = 3, max_queries: int = 50):
    """The held-out captions' most frequent known words (each in ≥ ``min_relevant`` captions, but not in all)."""
    known = set(vocabulary)
    doc_freq = Counter(word for tokens in token_lists for word in set(tokens) if word in known)
    eligible = [(-df, word) for word, df in doc_freq.items() if min_relevant <= df < len(token_lists)]
    return [word for _, word in sorted(eligible)[:max_queries]]


def relevance(words: Sequence[str], token_lists: Sequence[list[str]]) -> np.ndarray:
    """``(Q, N)`` bool: caption ``n`` contains word ``q``."""
    sets = [set(tokens) for tokens in token_lists]
    return np.array([[word in s for s in sets] for word in words], dtype=bool).reshape(len(words), len(sets))


def retrieval_report(
    image_embeddings: np.ndarray,
    caption_embeddings: np.ndarray,
    word_embeddings: np.ndarray,
    relevant: np.ndarray,
    answers: np.ndarray | None = None,
    k: int = 5,
) -> dict:
    """Every metric for the model and for a random ranking.

    ``image_embeddings`` ``(N, D)``; ``caption_embeddings`` ``(C, D)`` whose own images are rows ``answers``
    (default: row-aligned with the images); ``word_embeddings`` ``(Q, D)`` with ``relevant`` ``(Q, N)``.
    """
    n = len(image_embeddings)
    model = {f"P@{k}": precision_at_k(cosine_similarity(word_embeddings, image_embeddings), relevant, k)}
    model.update(paired_metrics(cosine_similarity(caption_embeddings, image_embeddings), answers))
    chance = {f"P@{k}": random_precision(relevant), **random_paired_metrics(n)}
    return {
        "model": model,
        "random": chance,
        "num_images": n,
        "num_caption_queries": len(caption_embeddings),
        "num_word_queries": len(word_embeddings),
    }


def format_table(report: dict) -> str:
    """A plain-text table: metric, model, random."""
    lines = [f"{'metric':<12}{'model':>10}{'random':>10}"]
    for name, value in report["model"].items():
        lines.append(f"{name:<12}{value:>10.3f}{report['random'][name]:>10.3f}")
    lines.append(
        f"({report['num_images']} held-out images, {report['num_caption_queries']} caption queries, "
        f"{report['num_word_queries']} word queries)"
    )
    return "\n".join(lines)


def evaluate(
    image_embeddings: np.ndarray,
    token_lists: Sequence[list[str]],
    text,
    queries: Sequence[str] | None = None,
    min_relevant: int = 3,
    max_queries: int = 50,
    k: int = 5,
) -> dict:
    """The retrieval report of held-out posts: their image embeddings ``(N, D)`` and caption tokens.

    ``text`` is the checkpoint's ``TextTargets``. Captions without a known word cannot be queries (their images
    stay in the gallery); word queries are ``queries`` or the most frequent known words (``word_queries``).
    Queries the text model does not know are listed under ``unknown_queries``.
    """
    caption_embeddings, known = text.encode(token_lists)
    words = list(queries) if queries else word_queries(token_lists, text.vocab, min_relevant, max_queries)
    word_embeddings, word_known = text.encode([[word] for word in words])
    kept = [word for word, ok in zip(words, word_known, strict=True) if ok]
    report = retrieval_report(
        image_embeddings,
        caption_embeddings[known],
        word_embeddings[word_known],
        relevance(kept, token_lists),
        answers=np.flatnonzero(known),
        k=k,
    )
    report["word_queries"] = kept
    report["unknown_queries"] = [word for word, ok in zip(words, word_known, strict=True) if not ok]
    return report


def embed_posts(model, posts, image_size: int, batch_size: int = 32, device="cpu", progress: bool = True):
    """``(id, (S, S, 3) uint8, tokens)`` posts → ``(ids, embeddings (N, D) float32, token lists)``, centre-cropped."""
    import sys

    import torch
    from tqdm import tqdm

    from models.embedding.trainer import batched, images_to_tensor

    ids, chunks, token_lists = [], [], []
    model.eval()
    bar = tqdm(desc="embedding held-out posts", unit="img", file=sys.stderr, disable=not progress)
    for batch in batched(posts, batch_size):
        images = images_to_tensor([image for _, image, _ in batch], image_size).to(device)
        with torch.no_grad():
            chunks.append(model.embed(images).cpu().numpy())
        ids += [post_id for post_id, _, _ in batch]
        token_lists += [tokens for _, _, tokens in batch]
        bar.update(len(batch))
    bar.close()
    dim = model.config.out_dim
    return ids, (np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)), token_lists
