"""``ReadImages`` on its own: a folder of images or Parquet tables → records, and rejected rows for what is not."""

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.conftest import encode, make_image
from transforms.read import ReadImages
from transforms.sources import input_pattern


def read(source, beam_options, expected_records, expected_rejected):
    with TestPipeline(options=beam_options) as pipeline:
        out = pipeline | ReadImages(source)
        records = out["records"] | beam.Map(lambda r: (r.source_id, r.label, len(r.data)))
        assert_that(records, equal_to(expected_records), label="records")
        rejected = out["rejected"] | beam.Map(lambda r: (r["source_id"], r["stage"], r["reason"], r["records"]))
        assert_that(rejected, equal_to(expected_rejected), label="rejected")


def test_a_folder_gives_labelled_records_and_rejects_other_files(tmp_path, beam_options):
    png = encode(make_image(20, 20))
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(png)
    (tmp_path / "b.png").write_bytes(png)
    (tmp_path / "notes.txt").write_text("not an image")
    expected = [("cats/a.png", "cats", len(png)), ("b.png", None, len(png))]
    read(input_pattern(str(tmp_path)), beam_options, expected, [("notes.txt", "read", "not_an_image_file", 1)])


def test_parquet_rows_carry_ids_and_labels_and_unusable_files_count_their_rows(tmp_path, beam_options):
    pq.write_table(
        pa.table({"id": ["p1", None], "label": [7, None], "image": [b"abc", b"de"]}),
        tmp_path / "part-0.parquet",
        row_group_size=1,
    )
    pq.write_table(pa.table({"caption": ["x", "y", "z"]}), tmp_path / "captions.parquet")
    expected = [("p1", "7", 3), ("part-0.parquet:1", None, 2)]
    rejected = [("captions.parquet", "read", "no_image_column", 3)]
    read(input_pattern(str(tmp_path)), beam_options, expected, rejected)
