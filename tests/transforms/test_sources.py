import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.common.errors import InputNotFoundError, UsageError
from tests.conftest import encode, make_image
from transforms.sources import iter_records, label_of, resolve_input


@pytest.fixture
def image_tree(tmp_path):
    for label, count in [("cats", 2), ("dogs", 1)]:
        (tmp_path / label).mkdir()
        for i in range(count):
            (tmp_path / label / f"{i}.png").write_bytes(encode(make_image(seed=i)))
    (tmp_path / "top.jpg").write_bytes(encode(make_image(), "JPEG"))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_directory_is_recursive_with_imagefolder_labels(image_tree):
    records = list(iter_records(str(image_tree)))
    assert [(r.source_id, r.label) for r in records] == [
        ("cats/0.png", "cats"),
        ("cats/1.png", "cats"),
        ("dogs/0.png", "dogs"),
        ("top.jpg", None),
    ]
    assert records[0].data == (image_tree / "cats" / "0.png").read_bytes()


def test_glob_keeps_labels_relative_to_where_it_starts(image_tree):
    records = list(iter_records(str(image_tree / "*" / "*.png")))
    assert [(r.source_id, r.label) for r in records] == [
        ("cats/0.png", "cats"),
        ("cats/1.png", "cats"),
        ("dogs/0.png", "dogs"),
    ]


def test_parquet_input_carries_id_and_label(tmp_path):
    table = pa.table({"id": ["a", "b"], "label": ["x", None], "image": [b"\x89PNG", b""]})
    pq.write_table(table, tmp_path / "part-0.parquet")
    spec = resolve_input(str(tmp_path))
    assert spec.kind == "parquet"
    assert [(r.source_id, r.label, r.data) for r in iter_records(spec)] == [("a", "x", b"\x89PNG"), ("b", None, b"")]


def test_parquet_without_id_gets_stable_row_ids(tmp_path):
    pq.write_table(pa.table({"image": [b"1", b"2"]}), tmp_path / "p.parquet")
    assert [r.source_id for r in iter_records(str(tmp_path / "p.parquet"))] == ["p.parquet:0", "p.parquet:1"]


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(InputNotFoundError, match="input not found"):
        resolve_input(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match=f"^--style-images folder is empty: {tmp_path}/empty$"):
        resolve_input(str(tmp_path / "empty"), "--style-images")
    (tmp_path / "a.txt").write_text("x")
    # a file that exists is not "not found": it is the wrong kind of file
    with pytest.raises(UsageError, match=f"^input {tmp_path}/a.txt is a file but not an image or .parquet file"):
        resolve_input(str(tmp_path / "a.txt"))
    with pytest.raises(InputNotFoundError, match="no image files"):
        resolve_input(str(tmp_path))
    pq.write_table(pa.table({"image": [b"1"]}), tmp_path / "p.parquet")
    (tmp_path / "b.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="mixes"):
        resolve_input(str(tmp_path))


def test_label_rule():
    assert label_of("cats/x/1.png") == "cats" and label_of("1.png") is None


def test_parquet_directory_pattern_skips_other_files(tmp_path):
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"image": [b"1"]}), tmp_path / "sub" / "p.parquet")
    (tmp_path / "_SUCCESS").write_text("")
    spec = resolve_input(str(tmp_path))
    assert spec.kind == "parquet" and [p.rsplit("/", 1)[1] for p in spec.paths] == ["p.parquet"]


def test_side_files_are_not_inputs_and_null_ids_fall_back(tmp_path):
    (tmp_path / "_state").mkdir()
    pq.write_table(pa.table({"id": [None, "b"], "image": [b"1", b"2"]}), tmp_path / "clean-00000-of-00001.parquet")
    pq.write_table(pa.table({"source_id": ["x"], "stage": ["s"], "error": ["e"]}), tmp_path / "rejected-0.parquet")
    pq.write_table(pa.table({"image": [b"3"]}), tmp_path / "_state" / "spool-0.parquet")
    (tmp_path / "summary.json").write_text("{}")  # a finished run's folder
    records = list(iter_records(str(tmp_path)))
    assert [r.source_id for r in records] == ["clean-00000-of-00001.parquet:0", "b"]


def test_one_reading_of_a_parquet_row_for_every_reader(tmp_path):
    """ids fall back to {file}:{row}, numeric labels become strings, null images are empty: in iter_records as in
    the Beam reader (both go through table_records)."""
    from transforms.sources import table_records

    columns = {"id": ["a", None], "label": [3, None], "image": [b"\x89PNG", None]}
    records = list(table_records(columns, "f.parquet", 10))
    assert [(r.source_id, r.label, r.data) for r in records] == [("a", "3", b"\x89PNG"), ("f.parquet:11", None, b"")]
    pq.write_table(pa.table(columns), tmp_path / "f.parquet")
    assert [(r.source_id, r.label, r.data) for r in iter_records(str(tmp_path))] == [
        ("a", "3", b"\x89PNG"),
        ("f.parquet:1", None, b""),
    ]


def test_a_parquet_file_whose_image_column_is_text_is_a_usage_error_for_the_torch_tools(tmp_path):
    pq.write_table(pa.table({"image": ["not bytes"]}), tmp_path / "s.parquet")
    with pytest.raises(UsageError, match="holds string, not encoded image bytes"):
        list(iter_records(str(tmp_path)))


@pytest.mark.parametrize(
    "failure, message",
    [
        (PermissionError(13, "Permission denied"), "permission denied"),
        (ConnectionError("connection reset by peer"), "ConnectionError: connection reset by peer"),
    ],
)
def test_only_a_missing_input_is_reported_as_not_found(monkeypatch, failure, message):
    """A permission or network failure while listing says what it is."""
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    from models.common.errors import InputUnreadableError

    def failing(patterns, limits=None):
        inner = BeamIOError("List operation failed", {"gs://b/x/": failure})
        raise BeamIOError("Match operation failed", {patterns[0]: inner})

    monkeypatch.setattr(FileSystems, "match", failing)
    with pytest.raises(InputUnreadableError, match=f"cannot list input gs://b/x/\\*\\*: {message}"):
        resolve_input("gs://b/x")


def test_a_missing_bucket_is_not_found(monkeypatch):
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems
    from google.api_core.exceptions import NotFound

    def missing(patterns, limits=None):
        raise BeamIOError("Match operation failed", {patterns[0]: NotFound("no such bucket")})

    monkeypatch.setattr(FileSystems, "match", missing)
    with pytest.raises(InputNotFoundError, match="input not found or empty: gs://b/x"):
        resolve_input("gs://b/x")


def test_a_jobs_table_without_its_summary_is_an_unfinished_run(tmp_path):
    """A job writes summary.json last; its tables without it are a killed or failed run."""
    from models.common.errors import InputUnreadableError

    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [b"1"]}), run / "raw-00000-of-00002.parquet")
    for spec in (str(run), f"{run}/raw-*.parquet", f"{run}/raw-00000-of-00002.parquet"):
        with pytest.raises(InputUnreadableError, match=rf"^input {run} looks like an unfinished run \(raw-\*\.parquet"):
            resolve_input(spec)
    (run / "summary.json").write_text('{"job": "collect"}')
    assert len(resolve_input(str(run)).paths) == 1

    # shard names of other tools (Hugging Face's train-00000-of-00001.parquet) need no summary
    hub = tmp_path / "hub"
    hub.mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [b"1"]}), hub / "train-00000-of-00001.parquet")
    assert len(resolve_input(str(hub)).paths) == 1


def test_every_jobs_tables_are_known_as_run_tables(monkeypatch):
    import importlib

    from pipelines import collect
    from transforms.io import RUN_TABLES

    jobs = [importlib.import_module(f"pipelines.{name}").JOB for name in ("augment", "clean", "embed")]
    monkeypatch.setattr(collect, "run_beam_job", lambda job, argv, test_pipeline: jobs.append(job))
    collect.run([])  # collect builds its job inside run()
    assert {prefix for job in jobs for prefix in job.schemas} == set(RUN_TABLES)


def test_records_are_counted_not_files(image_tree, tmp_path_factory):
    """One Parquet file holds many records; an unreadable one holds none the job can use."""
    from transforms.sources import count_records

    assert count_records(resolve_input(str(image_tree))) == 4
    tables = tmp_path_factory.mktemp("tables")
    image = encode(make_image())
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": [image] * 3}), tables / "one.parquet")
    pq.write_table(pa.table({"id": ["d"], "image": [image]}), tables / "two.parquet")
    (tables / "broken.parquet").write_bytes(b"PAR1 not really")
    assert count_records(resolve_input(str(tables))) == 4
