"""Text targets for the text-supervised CNN: what the image model learns to predict from a post's caption.

Gómez et al.'s two main choices, fitted on the training captions with gensim:

- ``word2vec``: the mean of the caption's word vectors, optionally TF-IDF weighted (Gómez et al. 2018,
  "Learning to learn from web data through deep semantic embeddings", found the weighted mean best), centred on
  the training captions' mean (see ``TextTargetConfig.centre``);
- ``lda``: the caption's LDA topic distribution (Gómez et al. 2017, "Self-supervised learning of visual
  features through embedding images into text topic spaces").

Saving: no pickle. ``to_arrays()`` gives plain numpy arrays (word vectors, IDF weights, LDA topic-word
statistics) and a JSON-able dict (kind, vocabulary, settings); the embedding checkpoint stores them as
safetensors tensors and metadata, and ``from_arrays`` rebuilds the encoder (for LDA a gensim ``LdaModel``
whose state is set from the saved statistics, so inference is gensim's own).
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from gensim.parsing.preprocessing import STOPWORDS
from gensim.utils import simple_preprocess

from models.embedding.choices import TARGET_KINDS

KINDS = TARGET_KINDS


def caption_tokens(text: str | None, hashtags: Iterable[str] | None = ()) -> list[str]:
    """Lower-case word tokens of a caption plus its hashtags (``#BlueSky`` → ``bluesky``), stop words removed.

    Hashtags already spelled out in the text are not counted twice.
    """
    tokens = [t for t in simple_preprocess(text or "", deacc=True, min_len=2) if t not in STOPWORDS]
    present = set(tokens)
    for tag in hashtags or ():
        tag = tag.lstrip("#").lower()
        if len(tag) >= 2 and tag not in present:
            tokens.append(tag)
            present.add(tag)
    return tokens


@dataclass(frozen=True)
class TextTargetConfig:
    """``dim`` is the word-vector size for ``word2vec`` and the number of topics for ``lda``."""

    kind: str = "word2vec"
    dim: int = 64
    tfidf: bool = True
    # Subtract the training captions' mean word2vec target. Word-vector means share one dominant direction (mean
    # pairwise cosine 0.9992 between captions of our 2000-post test corpus; Mu & Viswanath 2018 "All-but-the-top"
    # on word vectors at large), which leaves cosine regression almost nothing to learn; centred, it is 0.0009.
    centre: bool = True
    # Words seen in fewer captions carry no reliable signal; words in more than ``max_doc_fraction`` of captions
    # (the queried hashtag itself) say nothing about one image (Gómez et al. 2017 filter the LDA vocabulary so).
    min_count: int = 2
    max_doc_fraction: float = 0.5
    window: int = 5
    epochs: int = 20
    passes: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown text target {self.kind!r}; use one of {KINDS}")


class TextTargets:
    """Caption tokens → fixed target vectors ``(N, dim)`` float32, plus which captions had any known word."""

    def __init__(self, config: TextTargetConfig, vocab: Sequence[str], arrays: dict[str, np.ndarray]):
        self.config = config
        self.vocab = list(vocab)
        self.index = {word: i for i, word in enumerate(self.vocab)}
        self.arrays = arrays
        self._lda = self._build_lda() if config.kind == "lda" else None

    @property
    def dim(self) -> int:
        return self.config.dim

    # fitting -------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, token_lists: Sequence[list[str]], config: TextTargetConfig) -> "TextTargets":
        """Fit on the training captions' tokens (a re-iterable sequence)."""
        vocab = _filtered_vocab(token_lists, config.min_count, config.max_doc_fraction)
        if not vocab:
            raise ValueError("no word occurs often enough to fit a text model; need more captions")
        if config.kind == "lda":
            return cls(config, *_fit_lda(token_lists, vocab, config))
        targets = cls(config, *_fit_word2vec(token_lists, vocab, config))
        if config.centre:
            raw, known = targets.encode(token_lists)
            targets.arrays["mean"] = raw[known].mean(axis=0).astype(np.float32)
        return targets

    # encoding ------------------------------------------------------------------------------------------------
    def bag_of_words(self, tokens: list[str]) -> list[tuple[int, int]]:
        counts = Counter(self.index[t] for t in tokens if t in self.index)
        return sorted(counts.items())

    def encode(self, token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """``(targets (N, dim) float32, known (N,) bool)``; rows without a known word are zero and not known."""
        targets = np.zeros((len(token_lists), self.dim), dtype=np.float32)
        known = np.zeros(len(token_lists), dtype=bool)
        for row, tokens in enumerate(token_lists):
            bow = self.bag_of_words(tokens)
            if not bow:
                continue
            vector = self._encode_word2vec(bow) if self._lda is None else self._encode_lda(bow)
            if vector is not None:
                targets[row], known[row] = vector, True
        return targets, known

    def _encode_word2vec(self, bow):
        ids = np.array([i for i, _ in bow])
        weights = np.array([c for _, c in bow], dtype=np.float64)
        if self.config.tfidf:
            weights = weights * self.arrays["idf"][ids]
        if weights.sum() <= 0:
            return None
        mean = (weights[:, None] * self.arrays["vectors"][ids]).sum(0) / weights.sum()
        return mean - self.arrays["mean"] if "mean" in self.arrays else mean

    def _encode_lda(self, bow):
        # LdaModel.inference starts from a random gamma; reseeding per caption makes a caption's topics
        # independent of what else is in the batch, so targets are reproducible.
        self._lda.random_state = np.random.RandomState(self.config.seed)
        gamma, _ = self._lda.inference([bow])
        return gamma[0] / gamma[0].sum()

    # saving --------------------------------------------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays (for safetensors) and a JSON-able description; ``from_arrays`` inverts it exactly."""
        return dict(self.arrays), {"config": asdict(self.config), "vocab": self.vocab}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], description: dict) -> "TextTargets":
        """Rebuild from ``to_arrays``' output; a ``ValueError`` says what does not fit (a checkpoint's text part is
        checked here before anything indexes it: a missing array or one of the wrong shape)."""
        config = TextTargetConfig(**description["config"])
        vocab = description["vocab"]
        if not isinstance(vocab, list) or not all(isinstance(word, str) for word in vocab):
            raise ValueError("the text vocabulary is not a list of words")
        for name, shape in expected_shapes(config, len(vocab)).items():
            if name not in arrays:
                if name == "mean":  # absent when fitted with centre=False
                    continue
                raise ValueError(f"the {config.kind} text model has no {name} array")
            if tuple(arrays[name].shape) != shape or not np.issubdtype(arrays[name].dtype, np.floating):
                raise ValueError(
                    f"text array {name} is {arrays[name].dtype} {list(arrays[name].shape)}, not float {list(shape)}"
                )
        return cls(config, vocab, arrays)

    def _build_lda(self):
        from gensim.models import LdaModel

        model = LdaModel(
            id2word=dict(enumerate(self.vocab)),
            num_topics=self.config.dim,
            alpha=self.arrays["lda_alpha"].astype(np.float32),
            eta=self.arrays["lda_eta"].astype(np.float32),
            random_state=self.config.seed,
            iterations=100,
        )
        model.state.sstats[...] = self.arrays["lda_sstats"]
        model.sync_state()
        return model


def expected_shapes(config: TextTargetConfig, vocabulary: int) -> dict[str, tuple[int, ...]]:
    """The arrays a fitted text model holds and their shapes, for ``vocabulary`` words."""
    if config.kind == "lda":
        return {
            "lda_sstats": (config.dim, vocabulary),
            "lda_eta": (vocabulary,),
            "lda_alpha": (config.dim,),
        }
    return {"vectors": (vocabulary, config.dim), "idf": (vocabulary,), "mean": (config.dim,)}


def _filtered_vocab(token_lists, min_count: int, max_doc_fraction: float) -> list[str]:
    doc_freq = Counter()
    for tokens in token_lists:
        doc_freq.update(set(tokens))
    limit = max_doc_fraction * len(token_lists)
    return sorted(word for word, df in doc_freq.items() if min_count <= df <= limit)


def _fit_word2vec(token_lists, vocab, config):
    from gensim.models import Word2Vec

    allowed = set(vocab)
    sentences = [[t for t in tokens if t in allowed] for tokens in token_lists]
    # workers=1: gensim's word2vec is only reproducible single-threaded (its docs say so).
    model = Word2Vec(
        sentences=[s for s in sentences if s],
        vector_size=config.dim,
        window=config.window,
        min_count=1,
        sg=1,
        epochs=config.epochs,
        seed=config.seed,
        workers=1,
    )
    words = sorted(model.wv.index_to_key)
    vectors = np.stack([model.wv[w] for w in words]).astype(np.float32)
    doc_freq = Counter()
    for sentence in sentences:
        doc_freq.update(set(sentence))
    # idf as gensim's TfidfModel defines it (log2 N/df); computed over the same filtered captions
    idf = np.array([np.log2(len(sentences) / doc_freq[w]) for w in words], dtype=np.float32)
    return words, {"vectors": vectors, "idf": idf}


def _fit_lda(token_lists, vocab, config):
    from gensim.models import LdaModel

    index = {w: i for i, w in enumerate(vocab)}
    corpus = [sorted(Counter(index[t] for t in tokens if t in index).items()) for tokens in token_lists]
    corpus = [bow for bow in corpus if bow]
    model = LdaModel(
        corpus=corpus,
        id2word=dict(enumerate(vocab)),
        num_topics=config.dim,
        passes=config.passes,
        iterations=100,
        random_state=config.seed,
        eval_every=None,
        chunksize=2000,
    )
    arrays = {
        "lda_sstats": model.state.sstats.astype(np.float32),
        "lda_eta": np.asarray(model.eta, dtype=np.float32),
        "lda_alpha": np.asarray(model.alpha, dtype=np.float32),
    }
    return vocab, arrays
