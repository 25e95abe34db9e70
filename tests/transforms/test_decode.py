import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import encode, make_image
from transforms.decode import DecodeImages, fit_to_bucket, pad_to_bucket
from transforms.sources import SourceRecord


def test_buckets_pad_the_long_side_to_the_grid_and_crop_only_past_the_aspect_cap():
    """The long side is padded up to the grid (and the output cut back), not cropped: 143x96 at 128 is 191x128 in
    the output, as resized, not 176x128."""
    assert fit_to_bucket(make_image(400, 300), 256).size == (341, 256)
    assert pad_to_bucket(np.asarray(fit_to_bucket(make_image(400, 300), 256))).shape == (256, 352, 3)  # 256 + 3·32
    assert pad_to_bucket(np.zeros((341, 256, 3), np.uint8)).shape == (352, 256, 3)
    assert fit_to_bucket(make_image(300, 300), 256).size == (256, 256)
    assert fit_to_bucket(make_image(2000, 100), 64).size == (192, 64)  # aspect capped at 3, on the grid
    assert fit_to_bucket(make_image(70, 48), 48).size == (70, 48)
    assert pad_to_bucket(np.zeros((48, 70, 3), np.uint8)).shape == (48, 72, 3)  # step 4 at 48 px
    on_grid = np.asarray(make_image(96, 64))
    assert pad_to_bucket(on_grid) is on_grid  # an image on the grid is left as it is
    padded = pad_to_bucket(np.asarray(make_image(70, 48)))
    assert (padded[:, 70] == padded[:, 68]).all()  # reflected


def test_a_resized_image_keeps_its_size_and_its_geometry(beam_options):
    record = SourceRecord("a.png", None, encode(make_image(143, 96)))
    with TestPipeline(options=beam_options) as p:
        decoded = p | beam.Create([record]) | DecodeImages(image_size=128)
        geometry = decoded["images"] | beam.Map(lambda d: (d.size, d.pixels.shape, d.image.shape, d.crop_box, d.scale))
        assert_that(
            geometry, equal_to([((191, 128), (128, 192, 3), (128, 191, 3), (0.0, 0.0, 143.25, 96.0), 128 / 96)])
        )


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
    """--max-pixels was checked before the resize only (--image-size 20000 on a 96x64 photo:
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
