"""``pipelines.collect`` end to end: the fake Instagram (or instaloader's folders) → raw Parquet, rejected, summary."""

import glob
import json

import pyarrow.parquet as pq
import pytest

from pipelines import collect
from pipelines.cli import run_main
from tests.scraping import fake_instagram as fi
from transforms.schemas import RAW_CORPUS, REJECTED

IMAGES = {
    "instagram:IMAGE001:0",
    "instagram:CAROUSEL1:0",
    "instagram:CAROUSEL1:2",
    "instagram:SHARED01:0",
    "instagram:MIRO0001:0",
}


def table(out, prefix, schema):
    paths = sorted(glob.glob(f"{out}/{prefix}-*.parquet"))
    assert paths, f"no {prefix} files in {out}"
    for path in paths:
        assert pq.read_schema(path).equals(schema, check_metadata=False)
    return [row for path in paths for row in pq.read_table(path).to_pylist()]


def summary(out):
    with open(f"{out}/summary.json") as handle:
        return json.load(handle)


@pytest.fixture
def fake(monkeypatch):
    fake = fi.install(monkeypatch)
    fi.miro_scenario(fake)
    return fake


def test_hashtags_to_raw_corpus(fake, tmp_path):
    out = tmp_path / "out"
    session = fi.write_session_file(str(tmp_path / "session"))
    argv = ["--hashtags", "joanmiro,#miro", "--output", str(out), "--session-file", session, "--commit-every", "2"]
    collect.run(argv, instagram_factory=fi.test_instagram)

    raw = {row["id"]: row for row in table(out, "raw", RAW_CORPUS)}
    assert set(raw) == IMAGES
    assert raw["instagram:SHARED01:0"]["hashtags_queried"] == ["joanmiro", "miro"]
    assert raw["instagram:MIRO0001:0"]["hashtags_queried"] == ["miro"]
    carousel = raw["instagram:CAROUSEL1:2"]
    assert (carousel["shortcode"], carousel["index"], carousel["source"]) == ("CAROUSEL1", 2, "instagram")
    assert (carousel["width"], carousel["height"], carousel["image_format"]) == (240, 320, "jpeg")
    assert carousel["image"] == fake.files[f"{fi.CDN}CAROUSEL1_2.jpg"]
    rejected = {(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in table(out, "rejected", REJECTED)}
    assert rejected == {
        ("instagram:GONE0001:0", "fetch", "http_404"),
        ("instagram:HTML0001:0", "decode", "not_an_image"),
    }
    facts = summary(out)
    counts = facts["counts"]
    assert counts["posts_seen"] == 7 and counts["images_written"] == 5 and counts["videos_skipped"] == 2
    assert counts["rejected.reason.fetch/http_404"] == 1 and counts["rejected.reason.decode/not_an_image"] == 1
    assert facts["scrape"]["hashtags"]["joanmiro"] == {"taken": 6, "finished": "end"}
    assert facts["scrape"]["counts"]["posts_under_another_hashtag"] == 1


def test_a_stopped_scrape_exits_2_and_the_same_command_resumes(fake, tmp_path, capsys):
    out = tmp_path / "out"
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("page", "joanmiro", "p1"), fi.CHECKPOINT)
    argv = ["--hashtags", "joanmiro,miro", "--output", str(out), "--session-file", session]

    assert run_main(lambda a: collect.run(a, instagram_factory=fi.test_instagram), argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: Instagram stopped the session at #joanmiro") and "resume" in error
    assert not glob.glob(f"{out}/raw-*.parquet")

    assert run_main(lambda a: collect.run(a, instagram_factory=fi.test_instagram), argv) == 0
    ids = [row["id"] for row in table(out, "raw", RAW_CORPUS)]
    assert sorted(ids) == sorted(IMAGES)  # no duplicates from the first run's posts
    assert all(fake.fetched(name) == 1 for name in ("IMAGE001.", "CAROUSEL1_0.", "CAROUSEL1_2.", "SHARED01."))


def test_from_instaloader_folders(fake, tmp_path):
    downloads = tmp_path / "downloads"
    fi.download_with_instaloader(str(downloads))
    (downloads / "#miro" / "2020-01-01_00-00-00_UTC.jpg").write_bytes(fi.jpeg(9))  # saved with --no-metadata-json
    out = tmp_path / "out"
    collect.run(
        ["--from-dir", str(downloads / "#joanmiro"), "--from-dir", str(downloads / "#miro"), "--output", str(out)]
    )

    raw = {row["id"]: row for row in table(out, "raw", RAW_CORPUS)}
    assert set(raw) == IMAGES
    assert raw["instagram:SHARED01:0"]["hashtags_queried"] == ["joanmiro", "miro"]
    assert raw["instagram:IMAGE001:0"]["caption"] == "Blue II #joanmiro @someone https://miro.org"
    assert raw["instagram:CAROUSEL1:2"]["image"] == fake.files[f"{fi.CDN}CAROUSEL1_2.jpg"]
    (rejected,) = table(out, "rejected", REJECTED)
    assert rejected["stage"] == "read" and rejected["error"].startswith("missing_metadata: ")
    counts = summary(out)["counts"]
    assert counts["posts_seen"] == 5 and counts["images_written"] == 5 and counts["videos_skipped"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "nothing to collect"),
        (["--hashtags", "miro", "--from-dir", "x", "--output", "o"], "not both"),
        (["--hashtags", "miro", "--output", "o"], "needs a logged-in Instagram session"),
        (["--from-dir", "/nonexistent", "--output", "o"], "not a folder"),
        (["--hashtags", "miro", "--session-file", "s", "--output", "o", "--since", "yesterday"], "not a date"),
    ],
)
def test_bad_flags_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "--session-file" in argv:
        fi.write_session_file(str(tmp_path / "s"))
        monkeypatch.setattr(collect, "load_session", lambda *_: "tester")
    assert run_main(collect.run, argv) == 2
    assert message in capsys.readouterr().err
