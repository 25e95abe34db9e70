import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.common.errors import UsageError
from models.embedding.text_targets import TextTargetConfig, TextTargets
from tests.models.corpus_fixture import corpus_rows, save_untrained_checkpoint, write_corpus
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


def test_a_failing_image_is_rejected_alone_and_its_batch_mates_embedded(tmp_path, monkeypatch, beam_options):
    """An image whose forward pass raises fails its batch in RunInference; the batch is retried one image at a time
    and only that image becomes a rejected row (stage, reason, message). The others get the model's own embeddings,
    and Beam's inference metrics appear under the handler's namespace."""
    import apache_beam as beam
    import torch
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to
    from PIL import Image

    from models.embedding.net import EmbeddingNet
    from models.embedding.trainer import images_to_tensor
    from tests.conftest import encode
    from tests.transforms.test_stylize import metrics
    from transforms.embed import EmbedImages, decode_and_prepare
    from transforms.sources import SourceRecord

    model, _ = save_untrained_checkpoint(tmp_path / "model.safetensors", corpus_rows(6, size=40))
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    photos[2] = np.zeros((40, 48, 3), np.uint8)  # the poisoned one
    records = [SourceRecord(f"post{i}", None, encode(Image.fromarray(photo))) for i, photo in enumerate(photos)]
    embed = EmbeddingNet.embed

    def poisoned(self, batch):
        if bool((batch.flatten(1).amax(1) == 0).any()):
            raise RuntimeError("a poisoned image")
        return embed(self, batch)

    monkeypatch.setattr(EmbeddingNet, "embed", poisoned)
    with torch.no_grad():
        expected = embed(model, images_to_tensor([decode_and_prepare(r.data, 32) for r in records], 32)).numpy()
    embeddings = {r.source_id: expected[i] for i, r in enumerate(records) if r.source_id != "post2"}

    def same(row):
        return row["id"], bool(np.allclose(row["embedding"], embeddings[row["id"]], atol=1e-5))

    pipeline = TestPipeline(options=beam_options)
    out = pipeline | beam.Create(records) | EmbedImages(str(tmp_path / "model.safetensors"), 32, 4, device="cpu")
    assert_that(out["embeddings"] | beam.Map(same), equal_to([(i, True) for i in embeddings]), label="rows")
    rejected = out["rejected"] | beam.Map(lambda row: (row["source_id"], row["stage"], row["reason"], row["error"]))
    assert_that(rejected, equal_to([("post2", "embed", "inference_error", "inference_error: a poisoned image")]))
    result = pipeline.run()
    result.wait_until_finish()
    counters, _ = metrics(result, "stylebeam.embed")
    assert counters["num_inferences"] == 4 and counters["failed_batches_counter"] >= 2
    assert metrics(result, "stylebeam")[0]["embed_failures"] == 1
