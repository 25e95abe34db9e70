"""``pipelines.clean`` over a raw corpus with planted duplicates, broken images and junk captions: exact counts."""

import datetime
import glob
import hashlib
import io
import json
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines import clean
from pipelines.cli import run_main
from tests.conftest import upload
from transforms.dedup import hamming, phash
from transforms.images import decode_image
from transforms.schemas import CLEAN_CORPUS, RAW_CORPUS, REJECTED


def painting(seed: int, width: int = 200, height: int = 160) -> Image.Image:
    """Smooth random colour fields: every seed a different picture (phashes ~32 bits apart)."""
    grid = np.random.default_rng(seed).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    return Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def raw_row(shortcode: str, image: bytes, caption: str | None) -> dict:
    return {
        "id": f"instagram:{shortcode}:0",
        "source": "instagram",
        "shortcode": shortcode,
        "index": 0,
        "hashtags_queried": ["joanmiro"],
        "caption": caption,
        "caption_hashtags": [],
        "posted_at": datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC),
        "owner": "7",
        "image": image,
        "image_format": "jpeg",
        "width": 0,
        "height": 0,
        "sha256": hashlib.sha256(image).hexdigest(),
    }


GOOD = "La Constel·lació de Miró és preciosa #joanmiro"
# id → (stage, reason) of every row that must go, and the id a duplicate must name as kept
EXPECTED_REJECTED = {
    "instagram:C1:0": ("caption", "empty_caption"),
    "instagram:C2:0": ("caption", "empty_caption"),
    "instagram:C3:0": ("caption", "too_few_words"),
    "instagram:C4:0": ("caption", "language"),
    "instagram:B1:0": ("image", "not_an_image"),
    "instagram:B2:0": ("image", "too_small"),
    "instagram:B3:0": ("image", "bad_aspect"),
    "instagram:Z1:0": ("dedup", "exact_duplicate"),
    "instagram:Z2:0": ("dedup", "near_duplicate"),
    "instagram:Z3:0": ("dedup", "near_duplicate"),
}
KEPT_FOR = {"instagram:Z1:0": "instagram:A1:0", "instagram:Z2:0": "instagram:A2:0", "instagram:Z3:0": "instagram:A3:0"}


@pytest.fixture(scope="module")
def raw_corpus(tmp_path_factory):
    originals = {name: painting(seed) for name, seed in (("A1", 1), ("A2", 2), ("A3", 3))}
    cropped = originals["A3"].crop((4, 4, 200, 160)).resize((200, 160))  # 6 bits from A3
    rows = [
        raw_row("A1", jpeg(originals["A1"]), GOOD),
        raw_row("A2", jpeg(originals["A2"]), "Blue II at the museum https://miro.org @fundaciomiro #joanmiro"),
        raw_row("A3", jpeg(originals["A3"]), "The Tilled Field, Joan Miró 1923 #miro #surrealism"),
        raw_row("Z1", jpeg(originals["A1"]), GOOD),  # the same bytes again
        raw_row("Z2", jpeg(originals["A2"].resize((190, 152)), quality=60), "repost of blue two #miro"),
        raw_row("Z3", jpeg(cropped), "the tilled field again #miro"),
        raw_row("B1", b"<html>login required</html>", GOOD),
        raw_row("B2", jpeg(painting(4, 64, 48)), GOOD),
        raw_row("B3", jpeg(painting(5, 600, 150)), GOOD),
        raw_row("C1", jpeg(painting(6)), None),
        raw_row("C2", jpeg(painting(7)), "🔥🔥 @someone https://t.co/xyz"),
        raw_row("C3", jpeg(painting(8)), "#art"),
        raw_row("C4", jpeg(painting(9)), "ジョアン・ミロの絵画はとても美しいです #joanmiro"),
    ]
    hashes = {row["shortcode"]: phash(decode_image(row["image"])) for row in rows if row["shortcode"][0] in "AZC"}
    distinct = [code for code in hashes if code[0] in "AC"]
    assert min(hamming(hashes[a], hashes[b]) for a in distinct for b in distinct if a < b) > 10, "unlucky paintings"
    assert hamming(hashes["Z2"], hashes["A2"]) <= 3 < hamming(hashes["Z3"], hashes["A3"]) <= 10
    folder = tmp_path_factory.mktemp("clean") / "raw"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_CORPUS), folder / "raw-00000-of-00001.parquet")
    (folder / "rejected-00000-of-00001.parquet").write_bytes(b"")  # collect's other table: not read
    (folder / "summary.json").write_text('{"job": "collect"}')  # a finished run
    return folder


@pytest.fixture(scope="module")
def cleaned(raw_corpus):
    """One finished job over ``raw_corpus`` with the default flags (one process), for the tests that only read it."""
    out = raw_corpus.parent / "clean"
    run_clean(raw_corpus, out)
    return out


def run_clean(raw_corpus, out, *extra):
    clean.run(["--input", str(raw_corpus), "--output", str(out), "--languages", "en,es,ca", *extra])


def test_clean_counts_every_reason_exactly(cleaned):
    out = cleaned

    rows = [r for path in sorted(glob.glob(f"{out}/data/clean-*.parquet")) for r in pq.read_table(path).to_pylist()]
    assert pq.read_schema(glob.glob(f"{out}/data/clean-*.parquet")[0]).equals(CLEAN_CORPUS, check_metadata=False)
    assert sorted(row["id"] for row in rows) == ["instagram:A1:0", "instagram:A2:0", "instagram:A3:0"]
    by_id = {row["id"]: row for row in rows}
    assert by_id["instagram:A1:0"]["text"] == "la constel·lació de miró és preciosa joan miro"
    assert by_id["instagram:A2:0"]["text"] == "blue ii at the museum joan miro"
    for row in rows:
        assert row["image_format"] == "jpeg" and row["image"][:3] == b"\xff\xd8\xff"
        assert row["sha256"] == hashlib.sha256(row["image"]).hexdigest()
        assert (row["width"], row["height"]) == (200, 160)
        assert hamming(row["phash"], phash(decode_image(row["image"]))) <= 2

    rejected = [
        r for path in sorted(glob.glob(f"{out}/rejected/rejected-*.parquet")) for r in pq.read_table(path).to_pylist()
    ]
    assert pq.read_schema(glob.glob(f"{out}/rejected/rejected-*.parquet")[0]).equals(REJECTED, check_metadata=False)
    assert {r["source_id"]: (r["stage"], r["error"].split(":")[0]) for r in rejected} == EXPECTED_REJECTED
    for row in rejected:
        if row["source_id"] in KEPT_FOR:
            assert f"kept {KEPT_FOR[row['source_id']]}" in row["error"]

    with open(out / "summary.json") as handle:
        counts = json.load(handle)["counts"]
    assert counts["rows_read"] == 13 and counts["rows_written"] == 3 and counts["rejected"] == 10
    assert {key: n for key, n in counts.items() if key.startswith("rejected.reason.")} == {
        "rejected.reason.caption/empty_caption": 2,
        "rejected.reason.caption/too_few_words": 1,
        "rejected.reason.caption/language": 1,
        "rejected.reason.image/not_an_image": 1,
        "rejected.reason.image/too_small": 1,
        "rejected.reason.image/bad_aspect": 1,
        "rejected.reason.dedup/exact_duplicate": 1,
        "rejected.reason.dedup/near_duplicate": 2,
    }
    assert (counts["caption.removed.url"], counts["caption.removed.mention"], counts["caption.removed.emoji"]) == (
        2,
        2,
        2,
    )


def test_the_hamming_threshold_decides_what_is_near(raw_corpus, tmp_path):
    out = tmp_path / "clean"
    clean.run(["--input", str(raw_corpus), "--output", str(out), "--max-hamming", "3"])
    rows = [r for path in sorted(glob.glob(f"{out}/data/clean-*.parquet")) for r in pq.read_table(path).to_pylist()]
    # Z3 (6 bits from A3) stays; Z2 (a recompressed A2) goes; C4 stays: every language is kept by default
    assert sorted(row["shortcode"] for row in rows) == ["A1", "A2", "A3", "C4", "Z3"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--languages", "en,xx"], "unknown language code"),
        (["--max-hamming", "64"], "--max-hamming must be in 0..63"),
    ],
)
def test_bad_flags_are_one_line_errors(raw_corpus, tmp_path, capsys, argv, message):
    assert run_main(clean.run, ["--input", str(raw_corpus), "--output", str(tmp_path / "o"), *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_dataflow_job_builds_offline(raw_corpus, gcs_bucket):
    """--dry_run builds and validates the whole Dataflow job graph without a network (GCS is the local emulator)."""
    upload(raw_corpus, f"{gcs_bucket}/raw")
    result = clean.run(
        [
            f"--input={gcs_bucket}/raw",
            f"--output={gcs_bucket}/clean",
            "--runner=DataflowRunner",
            "--dry_run=True",
            "--project=stylebeam-demo",
            "--region=us-central1",
            "--temp_location=gs://stylebeam-test/tmp",
            "--no_auth",
        ]
    )
    transforms = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    steps = ["ReadRaw", "CleanCorpus/DropDuplicates/Near/GroupByBand", "WriteClean", "WriteRejected", "WriteSummary"]
    assert set(steps) <= transforms


@pytest.mark.slow
def test_a_hostile_raw_corpus_loses_nothing_and_prints_no_traceback(tmp_path, capsys, caplog):
    """Every input row is a clean row or a rejected row (weight 1 each; a file whose rows cannot even be counted is
    one rejected row standing for the file); the CLI exits 0 with no traceback."""
    folder = tmp_path / "raw"
    folder.mkdir()
    good = [painting(seed) for seed in range(10, 16)]
    ansi = "\x1b[31mBlue\x1b[0m [31mII[0m at the museum #joanmiro"
    rows = [
        raw_row("G1", jpeg(good[0]), GOOD),
        raw_row("G2", jpeg(good[1]), ansi),
        raw_row("HUGE", jpeg(good[2]), "miro " * 200_000),  # a 1 MB caption
        raw_row("ZCOPY", jpeg(good[0]), GOOD),  # G1's bytes again
        raw_row("G1", jpeg(good[0]), GOOD),  # the same row again (two collect runs read together)
        raw_row("TRUNC", jpeg(good[4])[:300], GOOD),
        raw_row("HTML", b"<html>login required</html>", GOOD),
        {**raw_row("NULLIMG", b"", GOOD), "image": None},
        raw_row("NOCAP", jpeg(good[5]), None),
        {**raw_row("NOID", jpeg(painting(20)), GOOD), "id": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_CORPUS), folder / "raw-00000-of-00005.parquet")

    valid = folder / "valid.parquet"
    pq.write_table(pa.Table.from_pylist([raw_row("CUT", jpeg(painting(21)), GOOD)], schema=RAW_CORPUS), valid)
    (folder / "raw-00001-of-00005.parquet").write_bytes(valid.read_bytes()[:-100])  # footer gone: rows unknowable
    valid.unlink()

    no_image = {"id": ["instagram:N1:0", "instagram:N2:0", "instagram:N3:0"], "caption": [GOOD] * 3}
    pq.write_table(pa.table(no_image), folder / "raw-00002-of-00005.parquet")

    mistyped = pa.Table.from_pylist([raw_row("STRIMG", b"", GOOD)], schema=RAW_CORPUS)
    mistyped = mistyped.set_column(mistyped.schema.get_field_index("image"), "image", pa.array(["not bytes"]))
    mistyped = mistyped.set_column(mistyped.schema.get_field_index("index"), "index", pa.array([0], pa.int64()))
    pq.write_table(mistyped, folder / "raw-00003-of-00005.parquet")

    groups = folder / "raw-00004-of-00005.parquet"
    two = [raw_row("RG0", jpeg(painting(22)), GOOD), raw_row("RG1", jpeg(painting(23)), GOOD)]
    pq.write_table(
        pa.Table.from_pylist(two, schema=RAW_CORPUS),
        groups,
        row_group_size=1,
        compression="none",
        use_dictionary=False,
    )
    data = bytearray(groups.read_bytes())
    first = pq.ParquetFile(groups).metadata.row_group(0).column(0).data_page_offset
    data[first : first + 12] = b"\xff" * 12  # the first row group's page header
    groups.write_bytes(bytes(data))
    (folder / "rejected-00000-of-00001.parquet").write_bytes(b"")  # collect's other table: not read
    (folder / "summary.json").write_text('{"job": "collect"}')  # a finished run

    out = tmp_path / "clean"
    # In-process: what `python -m pipelines.clean` runs (its wiring: tests/pipelines/test_entry_points.py), with its
    # stderr in capsys and its log records in caplog.
    with caplog.at_level(logging.INFO):
        code = run_main(clean.run, ["--input", str(folder), "--output", str(out)])
    stderr = capsys.readouterr().err
    assert code == 0 and "Traceback" not in stderr + caplog.text, stderr + caplog.text

    clean_rows = [
        r for path in sorted(glob.glob(f"{out}/data/clean-*.parquet")) for r in pq.read_table(path).to_pylist()
    ]
    rejected = [
        r for path in sorted(glob.glob(f"{out}/rejected/rejected-*.parquet")) for r in pq.read_table(path).to_pylist()
    ]
    assert sorted(row["id"] for row in clean_rows) == [
        "instagram:G1:0",
        "instagram:G2:0",
        "instagram:RG1:0",
    ]
    assert {row["id"]: row["text"] for row in clean_rows}["instagram:G2:0"] == "blue ii at the museum joan miro"
    reasons = sorted((r["source_id"], r["stage"], r["error"].split(":")[0]) for r in rejected)
    assert reasons == sorted(
        [
            ("instagram:HUGE:0", "caption", "too_long"),
            ("instagram:ZCOPY:0", "dedup", "exact_duplicate"),
            ("instagram:G1:0", "dedup", "duplicate_id"),
            ("instagram:TRUNC:0", "image", "corrupt_image"),
            ("instagram:HTML:0", "image", "not_an_image"),
            ("instagram:NULLIMG:0", "image", "empty_file"),
            ("instagram:NOCAP:0", "caption", "empty_caption"),
            ("raw-00000-of-00005.parquet:9", "read", "missing_id"),
            ("raw-00001-of-00005.parquet", "read", "unreadable_parquet"),
            ("instagram:N1:0", "read", "missing_columns"),
            ("instagram:N2:0", "read", "missing_columns"),
            ("instagram:N3:0", "read", "missing_columns"),
            ("instagram:STRIMG:0", "image", "not_an_image"),
            ("raw-00004-of-00005.parquet:0", "read", "unreadable_row_group"),
        ]
    )
    inputs = len(rows) + 1 + 3 + 1 + 2  # the cut file stands for itself: its rows cannot be counted
    assert len(clean_rows) + len(rejected) == inputs
    with open(out / "summary.json") as handle:
        counts = json.load(handle)["counts"]
    assert counts["rows_written"] + counts["rejected"] == inputs
    assert counts["caption.removed.ansi"] == 4
    assert f"kept 3 of {inputs} rows, rejected {inputs - 3}" in stderr


def test_an_image_the_output_format_cannot_hold_is_a_reason(tmp_path):
    """WebP stops at 16383 px a side: with --format webp a 17000 px panorama is rejected, not a ValueError."""
    folder = tmp_path / "raw"
    folder.mkdir()
    rows = [raw_row("WIDE", jpeg(painting(1, 17000, 128)), GOOD), raw_row("OK", jpeg(painting(2)), GOOD)]
    pq.write_table(pa.Table.from_pylist(rows, schema=RAW_CORPUS), folder / "raw-00000-of-00001.parquet")
    (folder / "summary.json").write_text('{"job": "collect"}')
    out = tmp_path / "clean"
    clean.run(["--input", str(folder), "--output", str(out), "--format", "webp", "--max-aspect", "200"])
    kept = [r["id"] for path in glob.glob(f"{out}/data/clean-*.parquet") for r in pq.read_table(path).to_pylist()]
    rejected = [r for path in glob.glob(f"{out}/rejected/rejected-*.parquet") for r in pq.read_table(path).to_pylist()]
    assert kept == ["instagram:OK:0"]
    assert [(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in rejected] == [
        ("instagram:WIDE:0", "image", "unencodable")
    ]


@pytest.mark.slow
def test_two_worker_processes_keep_and_reject_the_same_rows(raw_corpus, cleaned, tmp_path):
    """Near-duplicates meet across workers: the same keepers and the same reasons as one process."""
    run_clean(raw_corpus, tmp_path / "two", "--direct_running_mode=multi_processing", "--direct_num_workers=2")

    def table(pattern):
        rows = [r for path in sorted(glob.glob(pattern)) for r in pq.read_table(path).to_pylist()]
        return sorted(rows, key=repr)

    for pattern in ("data/clean-*.parquet", "rejected/rejected-*.parquet"):
        assert table(f"{cleaned}/{pattern}") and table(f"{cleaned}/{pattern}") == table(f"{tmp_path}/two/{pattern}")
