import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.errors import UsageError
from models.text_targets import TextTargetConfig, TextTargets
from tests.models.corpus_fixture import corpus_rows, write_corpus
from transforms.embed import corpus_examples, post_tokens, shuffled
from transforms.schemas import REJECTED
from transforms.sources import table_paths


def test_streaming_shuffle_is_a_seeded_permutation():
    items = list(range(100))
    a = list(shuffled(iter(items), 16, random.Random(1)))
    assert sorted(a) == items and a != items
    assert a == list(shuffled(iter(items), 16, random.Random(1)))
    assert a != list(shuffled(iter(items), 16, random.Random(2)))


def test_table_paths_skip_dead_letters_beside_the_table(tmp_path):
    write_corpus(tmp_path, corpus_rows(4, size=16), files=1)
    pq.write_table(pa.Table.from_pylist([], schema=REJECTED), tmp_path / "rejected-00000-of-00001.parquet")
    assert [p.rsplit("/", 1)[-1] for p in table_paths(str(tmp_path), "clean")] == ["clean-00000-of-00001.parquet"]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="holds image files"):
        table_paths(str(tmp_path / "img"), "clean")


def test_corpus_examples_split_decode_and_count_every_post(tmp_path):
    rows = corpus_rows(40, size=24)
    rows[0] = rows[0] | {"image": b"junk"}
    rows[1] = rows[1] | {"text": "", "caption": "", "caption_hashtags": []}
    paths = write_corpus(tmp_path, rows)
    text = TextTargets.fit([post_tokens(r) for r in rows], TextTargetConfig("word2vec", 8, min_count=2))
    counts = {True: Counter(), False: Counter()}
    seen = {}
    for heldout in (True, False):
        for example in corpus_examples(
            paths, text, image_size=16, heldout_fraction=0.3, heldout=heldout, counts=counts[heldout]
        ):
            assert example.image.shape == (18, 18, 3) and example.image.dtype == np.uint8
            seen[example.id] = heldout
    total = counts[True] + counts[False]
    assert total == Counter({"examples": 38, "rejected.not_an_image": 1, "no_text_target": 1})
    assert len(seen) == 38 and 0 < sum(seen.values()) < 38
