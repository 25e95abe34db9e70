"""Perceptual hash, banded near-duplicate search and which copy survives."""

import random
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from tests.conftest import make_image
from transforms.dedup import (
    ExactDuplicates,
    NearDuplicates,
    band_keys,
    band_layout,
    hamming,
    near_pairs_in_bucket,
    phash,
    resolve_near_duplicates,
    to_signed,
)


def imagehash_phash(image: Image.Image) -> int:
    """imagehash.phash, line for line (scipy's DCT), as a signed int64."""
    fftpack = pytest.importorskip("scipy.fftpack")
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    dct = fftpack.dct(fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    bits = (dct > np.median(dct)).flatten()
    return to_signed(int("".join(str(int(b)) for b in bits), 2))


def test_phash_is_imagehash_phash():
    rng = np.random.default_rng(0)
    images = [make_image(97, 61, seed=s) for s in range(10)]
    images += [Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(10)]
    for image in images:
        assert phash(image) == imagehash_phash(image)


def test_phash_is_a_signed_int64_and_robust_to_resizing():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((300, 200))
    value = phash(image)
    assert -(2**63) <= value < 2**63
    assert hamming(value, phash(image.resize((150, 100)))) <= 2


def test_bands_cover_64_bits_and_any_close_pair_shares_one():
    layout = band_layout(10)
    assert len(layout) == 11 and sum(width for _, width in layout) == 64
    rng = random.Random(0)
    for _ in range(500):
        a = rng.getrandbits(64)
        b = a
        for bit in rng.sample(range(64), 10):
            b ^= 1 << bit
        assert set(band_keys(to_signed(a), layout)) & set(band_keys(to_signed(b), layout))


def test_banded_search_finds_exactly_the_brute_force_pairs():
    rng = random.Random(3)
    items = [(f"id{i:04d}", to_signed(rng.getrandbits(64))) for i in range(300)]
    for i in range(40):  # planted neighbours at 1..12 bits
        base = items[i][1]
        flips = rng.sample(range(64), 1 + i % 12)
        items.append((f"near{i:03d}", to_signed(base ^ sum(1 << bit for bit in flips))))
    layout = band_layout(10)
    buckets = defaultdict(list)
    for item in items:
        for key in band_keys(item[1], layout):
            buckets[key].append(item)
    banded = [pair for (band, _), group in buckets.items() for pair in near_pairs_in_bucket(band, group, layout, 10)]
    brute = [(a, (b, hamming(ha, hb))) for a, ha in items for b, hb in items if b < a and hamming(ha, hb) <= 10]
    assert len(banded) == len(set(banded))  # each pair once, from the first band it shares
    assert sorted(banded) == sorted(brute) and len(brute) >= 30


def test_the_lowest_id_survives_and_a_chain_is_resolved_in_order():
    # a~b, b~c, a and c apart: b goes (kept a); c stays, since its only neighbour b did not survive
    assert resolve_near_duplicates([("b", ("a", 4)), ("c", ("b", 5))]) == [("b", "a", 4)]
    # a cluster: every later copy names the lowest id
    edges = [("b", ("a", 1)), ("c", ("a", 2)), ("c", ("b", 1))]
    assert resolve_near_duplicates(edges) == [("b", "a", 1), ("c", "a", 2)]


def test_beam_exact_then_near(beam_options):
    a = to_signed(0x0123456789ABCDEF)
    keys = [
        ("instagram:A:0", "sha-a", a),
        ("instagram:Z:0", "sha-a", a),  # same bytes as A
        ("instagram:B:0", "sha-b", to_signed((a & (2**64 - 1)) ^ 0b1011)),  # 3 bits from A
        ("instagram:C:0", "sha-c", to_signed(~a)),  # far from everything
    ]
    with TestPipeline(options=beam_options) as pipeline:
        exact = pipeline | beam.Create(keys) | ExactDuplicates()
        near = exact.unique | NearDuplicates(10)
        assert_that(exact.dropped, equal_to([("instagram:Z:0", "instagram:A:0")]), label="exact")
        assert_that(near, equal_to([("instagram:B:0", "instagram:A:0", 3)]), label="near")


def test_a_repeated_id_keeps_one_copy_rather_than_none(beam_options):
    """Two collect runs read together repeat ids; exact dedup keyed by id must not drop every copy."""
    from transforms.corpus import DropDuplicates

    def row(row_id, sha, value, caption):
        return {"id": row_id, "sha256": sha, "phash": value, "caption": caption, "posted_at": None}

    rows = [row("a", "s1", 0, "x"), row("a", "s1", 0, "x"), row("a", "s0", 0, "y"), row("b", "s2", -1, "z")]
    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(rows) | DropDuplicates()
        assert_that(out["clean"] | beam.Map(lambda r: (r["id"], r["sha256"])), equal_to([("a", "s0"), ("b", "s2")]))
        assert_that(
            out["rejected"] | beam.Map(lambda r: (r["source_id"], r["error"].split(":")[0])),
            equal_to([("a", "duplicate_id"), ("a", "duplicate_id")]),
            label="rejected",
        )
