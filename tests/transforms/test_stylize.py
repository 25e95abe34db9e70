"""``Stylize`` on its own: decoded images → one encoded row per planned output, the same bytes as the runner's."""

import io

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from models.checkpoint import load_stylizer, save_stylizer
from models.inference import StylizerRunner
from models.style_policy import parse_styles
from models.stylizer import MultiStyleTransformer, StylizerConfig
from tests.conftest import make_image
from transforms.decode import DecodedImage
from transforms.stylize import Stylize

STYLES = ["dots", "lines"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1))
    path = tmp_path_factory.mktemp("stylize") / "two.safetensors"
    digest = save_stylizer(str(path), model, STYLES)
    return str(path), digest


def test_every_planned_output_is_a_row_with_the_runners_pixels(checkpoint, beam_options):
    path, digest = checkpoint
    images = [
        DecodedImage("a.png", "cats", np.asarray(make_image(32, 24, seed=1))),
        DecodedImage("b.png", None, np.asarray(make_image(24, 24, seed=2))),
    ]
    # png: lossless, so the row's pixels are the runner's exactly
    options = {"batch_size": 2, "device": "cpu", "precision": "fp32", "image_format": "png"}
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), **options)
    model, _ = load_stylizer(path)
    runner = StylizerRunner(model, torch.device("cpu"), torch.float32, batch_size=2)
    expected = {
        f"{image.source_id}#{n}": runner(image.pixels[None], np.eye(2, dtype=np.float32)[n : n + 1], np.ones(1))[0]
        for image in images
        for n in range(2)
    }

    def summary(row):
        same = bool(np.array_equal(np.asarray(Image.open(io.BytesIO(row["image"]))), expected[row["id"]]))
        keys = ("id", "source_id", "label", "style", "stylizer", "width", "height")
        return (*(row[key] for key in keys), same)

    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(images) | stylize
        assert_that(
            out["rows"] | beam.Map(summary),
            equal_to(
                [
                    ("a.png#0", "a.png", "cats", "dots", digest, 32, 24, True),
                    ("a.png#1", "a.png", "cats", "lines", digest, 32, 24, True),
                    ("b.png#0", "b.png", None, "dots", digest, 24, 24, True),
                    ("b.png#1", "b.png", None, "lines", digest, 24, 24, True),
                ]
            ),
            label="rows",
        )
        assert_that(out["rejected"], equal_to([]), label="rejected")


def test_memory_running_out_in_a_forward_pass_is_a_rejected_row(checkpoint, beam_options, monkeypatch):
    """Issue 16 item 3: a record the stylizer has no memory for is a rejected row with a reason, not a crash."""
    path, digest = checkpoint

    def no_memory(self, pixels, style_weights, alpha):
        raise MemoryError

    monkeypatch.setattr(StylizerRunner, "__call__", no_memory)
    images = [DecodedImage("a.png", None, np.asarray(make_image(32, 24, seed=1)))]
    options = {"batch_size": 2, "device": "cpu", "precision": "fp32"}
    stylize = Stylize(path, STYLES, digest, parse_styles("all"), (1.0, 1.0), **options)
    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | beam.Create(images) | stylize
        assert_that(out["rows"], equal_to([]), label="rows")
        assert_that(
            out["rejected"] | beam.Map(lambda r: (r["source_id"], r["stage"], r["error"].split(":")[0])),
            equal_to([("a.png", "stylize", "out_of_memory")] * 2),
            label="rejected",
        )
