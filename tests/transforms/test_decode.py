import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import encode, make_image
from transforms.decode import DecodeImages, fit_to_bucket
from transforms.sources import SourceRecord


def test_buckets_crop_long_side_to_grid_and_cap_aspect():
    assert fit_to_bucket(make_image(400, 300), 256).size == (320, 256)  # 341 → 256 + 2·32
    assert fit_to_bucket(make_image(300, 400), 256).size == (256, 320)
    assert fit_to_bucket(make_image(300, 300), 256).size == (256, 256)
    assert fit_to_bucket(make_image(2000, 100), 64).size == (192, 64)  # aspect capped at 3
    assert fit_to_bucket(make_image(70, 48), 48).size == (68, 48)  # step 4 at 48 px
    assert fit_to_bucket(make_image(90, 70), 0).size == (86, 70)  # 0 keeps the short side


def test_decode_images_splits_good_from_rejected(beam_options):
    records = [
        SourceRecord("ok.png", "x", encode(make_image(80, 60))),
        SourceRecord("junk.jpg", None, b"junk"),
        SourceRecord("tiny.png", None, encode(make_image(8, 8))),
    ]
    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(records) | DecodeImages(image_size=48, min_side=16)
        assert_that(
            out["images"] | beam.Map(lambda d: (d.source_id, d.label, d.pixels.shape)),
            equal_to([("ok.png", "x", (48, 64, 3))]),
            label="images",
        )
        assert_that(
            out["rejected"] | beam.Map(lambda r: (r["source_id"], r["stage"], r["error"].split(":")[0])),
            equal_to([("junk.jpg", "decode", "not_an_image"), ("tiny.png", "decode", "too_small")]),
            label="rejected",
        )


def test_max_pixels_holds_after_the_resize_and_memory_errors_are_rows(monkeypatch):
    """Issue 16 item 3: --max-pixels was checked before the resize only (--image-size 20000 on a 96x64 photo:
    MemoryError, 349 lines); a record whose resize runs out of memory is a rejected row, not a crash."""
    from apache_beam.pvalue import TaggedOutput

    from transforms.decode import DecodeImageFn

    fn = DecodeImageFn(image_size=256, min_side=16, max_pixels=100_000)

    def outcome(record):
        (result,) = fn.process(record)
        if isinstance(result, TaggedOutput):
            return result.value["error"].split(":")[0]
        return result.pixels.shape

    assert outcome(SourceRecord("square.png", None, encode(make_image(64, 64)))) == (256, 256, 3)
    # 96x32 → 768x256 = 196,608 px before the crop to the 3:1 bucket: over the limit, refused before resizing
    assert outcome(SourceRecord("wide.png", None, encode(make_image(96, 32)))) == "too_many_pixels"

    def no_memory(image, image_size):
        raise MemoryError

    monkeypatch.setattr("transforms.decode.fit_to_bucket", no_memory)
    assert outcome(SourceRecord("square.png", None, encode(make_image(64, 64)))) == "out_of_memory"
