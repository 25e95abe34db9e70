"""``WriteSummary`` on its own: counted PCollections and (key, amount) tallies → one summary.json."""

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.io import CountRejected, WriteSummary
from transforms.schemas import rejected_row


def test_counts_tallies_zero_keys_and_facts_land_in_one_file(tmp_path, beam_options):
    rejected_rows = [
        rejected_row("a", "decode", "corrupt_image", "bad"),
        rejected_row("f.parquet", "read", "no_image_column", "no 'image' column (5 rows)", records=5),
    ]
    with TestPipeline(options=beam_options) as pipeline:
        read = pipeline | "Read" >> beam.Create(["a", "b", "c"])
        nothing = pipeline | "Nothing" >> beam.Create([])
        rejected = pipeline | "Rejected" >> beam.Create(rejected_rows)
        extra = pipeline | "Extra" >> beam.Create([("caption.removed.url", 2), ("caption.removed.url", 1)])
        counted = {"images_read": read, "rows_written": nothing, "rejected": rejected}
        tallies = (rejected | CountRejected(), extra)
        summary = pipeline | WriteSummary(str(tmp_path), counted, tallies, {"job": "test", "settings": {"seed": 3}})
        assert_that(summary | beam.Map(lambda s: s["counts"]["images_read"]), equal_to([3]))

    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == {
        "output": str(tmp_path),
        "job": "test",
        "settings": {"seed": 3},
        "counts": {
            "images_read": 3,
            "rows_written": 0,
            "rejected": 2,
            "rejected_records": 6,
            "rejected.stage.decode": 1,
            "rejected.stage.read": 1,
            "rejected.reason.decode/corrupt_image": 1,
            "rejected.reason.read/no_image_column": 1,
            "caption.removed.url": 3,
        },
    }
