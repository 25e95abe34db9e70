"""``pipelines.collect`` end to end: the fake Instagram (or instaloader's folders) → raw Parquet, rejected, summary."""

import glob
import json
import logging
import lzma
import os
import subprocess
import sys

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
    paths = sorted(glob.glob(f"{out}/*/{prefix}-*.parquet"))
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
    """(--until 9999-12-31 overflowed once: its inclusive end is past datetime.max. It means no upper bound, so the
    same job checks it.)"""
    out = tmp_path / "out"
    session = fi.write_session_file(str(tmp_path / "session"))
    argv = ["--hashtags", "joanmiro,#miro", "--output", str(out), "--session-file", session, "--commit-every", "2"]
    collect.run([*argv, "--until", "9999-12-31"], instagram_factory=fi.test_instagram)

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
    assert facts["settings"]["until"] == "9999-12-31"  # recorded as given


@pytest.mark.slow
def test_a_stopped_scrape_exits_2_and_the_same_command_resumes(fake, tmp_path, capsys):
    out = tmp_path / "out"
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("page", "joanmiro", "p1"), fi.CHECKPOINT)
    argv = ["--hashtags", "joanmiro,miro", "--output", str(out), "--session-file", session]

    assert run_main(lambda a: collect.run(a, instagram_factory=fi.test_instagram), argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: Instagram stopped the session at #joanmiro") and "resume" in error
    assert not glob.glob(f"{out}/data/raw-*.parquet")

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
    rejected = {(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in table(out, "rejected", REJECTED)}
    assert rejected == {
        (str(downloads / "#miro" / "2020-01-01_00-00-00_UTC.jpg"), "read", "missing_metadata"),
        ("instagram:HTML0001:0", "fetch", "no_media_file"),  # instaloader saved its "image" as .html
    }
    counts = summary(out)["counts"]
    assert counts["posts_seen"] == 6 and counts["images_written"] == 5 and counts["videos_skipped"] == 2


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


@pytest.mark.slow
def test_login_without_a_terminal_or_a_piped_password_is_one_line(tmp_path):
    """``--login`` from cron or a script with nothing on stdin: no getpass warning, no EOFError traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.collect", "--login", "someone", "--session-file", str(tmp_path / "s")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,  # no controlling terminal, even when pytest runs in one
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: no password: --login asks for it on a terminal (or piped on stdin)"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "dates, message",
    [
        (["--since", "2024-13-01"], "not a date: '2024-13-01'"),
        (["--since", "yesterday"], "not a date: 'yesterday'"),
        (["--until", "2024-02-30"], "not a date: '2024-02-30'"),
        (["--since", "2024-03-02", "--until", "2024-03-01"], "--since 2024-03-02 is not before --until 2024-03-01"),
    ],
)
def test_bad_dates_are_refused_before_the_session_is_loaded(dates, message, capsys, tmp_path, monkeypatch):
    def no_session(*_):
        raise AssertionError("the session was loaded before the dates were checked")

    monkeypatch.setattr(collect, "load_session", no_session)
    monkeypatch.setattr(collect, "login_interactively", no_session)
    out = tmp_path / "out"
    argv = ["--hashtags", "miro", "--output", str(out), "--session-file", str(tmp_path / "missing"), *dates]
    assert run_main(collect.run, argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not out.exists()


def test_a_from_dir_with_no_posts_is_refused_before_anything_is_written(capsys, tmp_path):
    downloads = tmp_path / "downloads"
    (downloads / "#miro").mkdir(parents=True)
    (downloads / "notes.md").write_text("nothing downloaded yet")
    out = tmp_path / "out"
    assert run_main(collect.run, ["--from-dir", str(downloads), "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: no instaloader posts under --from-dir {downloads}") and "\n" not in error
    assert not out.exists()


def post_json(shortcode: str, caption: str | None, *, typename="GraphImage", is_videos=None) -> bytes:
    """A post's ``.json.xz`` as instaloader's ``save_structure_to_file`` writes it."""
    node = {"__typename": typename, "shortcode": shortcode, "taken_at_timestamp": 1_709_288_100, "owner": {"id": "7"}}
    if caption is not None:
        node["edge_media_to_caption"] = {"edges": [{"node": {"text": caption}}]}
    if is_videos is not None:
        node["edge_sidecar_to_children"] = {"edges": [{"node": {"is_video": v}} for v in is_videos]}
    if typename == "GraphVideo":
        node["is_video"] = True
    return lzma.compress(json.dumps({"node": node, "instaloader": {"version": "4.16", "node_type": "Post"}}).encode())


@pytest.mark.slow
def test_a_hostile_download_tree_loses_nothing_and_prints_no_traceback(fake, tmp_path, capsys, caplog):
    """Every media item under --from-dir is a raw row, a skipped video or a rejected row with its reason; the CLI
    exits 0 with no traceback. (One rejected row stands for one item: a post that cannot be read is one row per
    media file.)"""
    downloads = tmp_path / "downloads"
    fi.download_with_instaloader(str(downloads))  # instaloader's own folders: 5 images, 2 videos, HTML0001
    mine, elsewhere = downloads / "#mine", tmp_path / "elsewhere" / "#kept-elsewhere"
    mine.mkdir()
    elsewhere.mkdir(parents=True)
    stems = [f"2024-03-01_10-{minute:02d}-00_UTC" for minute in range(20)]

    def post(folder, stem, metadata, *images, caption_file=None):
        if metadata is not None:
            (folder / f"{stem}.json.xz").write_bytes(metadata)
        if caption_file is not None:
            (folder / f"{stem}.txt").write_bytes(caption_file)
        names = [f"{stem}.jpg"] if len(images) == 1 else [f"{stem}_{i + 1}.jpg" for i in range(len(images))]
        for name, data in zip(names, images, strict=True):
            (folder / name).write_bytes(data)
        return [str(folder / name) for name in names]

    corrupt_xz = post(mine, stems[0], b"\xfd7zXZ\x00\x00garbage", fi.jpeg(20), fi.jpeg(21))
    post(mine, stems[1], post_json("LATIN001", None), fi.jpeg(22), caption_file="Miró à Paris".encode("latin-1"))
    post(mine, stems[2], post_json("TRUNC001", "cut #miro"), fi.jpeg(23)[:200])
    post(mine, stems[3], post_json("HTMLJPG1", "html #miro"), b"<html>login</html>")
    post(mine, stems[4], post_json("HUGE0001", "miro " * 200_000), fi.jpeg(24))  # a 1 MB caption
    post(mine, stems[5], post_json("ANSI0001", "\x1b[31mred\x1b[0m [31mmiro[0m"), fi.jpeg(25))
    post(mine, stems[6], post_json("HALF0001", "half an emoji \ud83d"), fi.jpeg(26))
    post(mine, stems[7], post_json("SHARED01", "Constellations by Joan Miró #joanmiro #miro"), fi.jpeg(27))
    (mine / f"{stems[8]}.json.xz").write_bytes(post_json("NOFILE01", "the download failed"))
    post(mine, stems[9], post_json("CAROUSL2", "two of three", typename="GraphSidecar", is_videos=[0, 0, 0]))
    (mine / f"{stems[9]}_1.jpg").write_bytes(fi.jpeg(28))
    os.symlink(tmp_path / "nowhere.jpg", mine / f"{stems[9]}_2.jpg")  # dangling; _3 never arrived
    (mine / f"{stems[10]}.json.xz").write_bytes(post_json("VIDEO002", "a film", typename="GraphVideo"))
    (mine / f"{stems[10]}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (mine / "photo.jpg").write_bytes(fi.jpeg(29))  # no metadata at all
    post(mine, stems[11], lzma.compress(b"[" * 100_000), fi.jpeg(30))
    post(elsewhere, stems[12], post_json("ELSEWHR1", "kept on another disk #miro"), fi.jpeg(31))
    latin = downloads / os.fsdecode(b"#mir\xf3")  # a folder named in Latin-1: not UTF-8, as Parquet needs
    latin.mkdir()
    post(latin, stems[13], post_json("LATINDIR", "a folder named in latin-1"), fi.jpeg(32))
    (latin / os.fsdecode(b"caf\xe9.jpg")).write_bytes(fi.jpeg(33))
    os.symlink(elsewhere, downloads / "#kept-elsewhere")
    os.symlink(downloads, mine / "loop")
    out = tmp_path / "out"

    # In-process: what `python -m pipelines.collect` runs (its wiring: tests/pipelines/test_entry_points.py), with
    # its stderr in capsys and its log records in caplog.
    with caplog.at_level(logging.INFO):
        code = run_main(collect.run, ["--from-dir", str(downloads), "--output", str(out)])
    stderr = capsys.readouterr().err
    assert code == 0 and "Traceback" not in stderr + caplog.text, stderr + caplog.text

    raw = {row["id"]: row for row in table(out, "raw", RAW_CORPUS)}
    mine_ids = ["LATIN001", "HUGE0001", "ANSI0001", "HALF0001", "CAROUSL2", "ELSEWHR1", "LATINDIR"]
    assert set(raw) == IMAGES | {f"instagram:{code}:0" for code in mine_ids}
    assert raw["instagram:LATIN001:0"]["caption"] == "Miró à Paris"
    assert raw["instagram:HALF0001:0"]["caption"] == "half an emoji \ufffd"
    assert raw["instagram:SHARED01:0"]["hashtags_queried"] == ["joanmiro", "mine", "miro"]
    assert raw["instagram:ELSEWHR1:0"]["hashtags_queried"] == ["kept-elsewhere"]
    assert raw["instagram:LATINDIR:0"]["hashtags_queried"] == ["mir\ufffd"]
    rejected = {(r["source_id"], r["stage"], r["error"].split(":")[0]) for r in table(out, "rejected", REJECTED)}
    assert rejected == {
        (corrupt_xz[0], "read", "corrupt_metadata"),
        (corrupt_xz[1], "read", "corrupt_metadata"),
        (str(mine / f"{stems[11]}.jpg"), "read", "corrupt_metadata"),
        (str(mine / "photo.jpg"), "read", "missing_metadata"),
        (str(downloads / "#mir\ufffd" / "caf\ufffd.jpg"), "read", "missing_metadata"),
        ("instagram:TRUNC001:0", "decode", "corrupt_image"),
        ("instagram:HTMLJPG1:0", "decode", "not_an_image"),
        ("instagram:NOFILE01:0", "fetch", "no_media_file"),
        ("instagram:HTML0001:0", "fetch", "no_media_file"),
        ("instagram:CAROUSL2:1", "fetch", "unreadable_file"),
        ("instagram:CAROUSL2:2", "fetch", "no_media_file"),
    }
    counts = summary(out)["counts"]
    videos = 3  # VIDEO001, CAROUSEL1's video, VIDEO002
    items = len(IMAGES) + len(mine_ids) + len(rejected) + videos
    assert counts["images_written"] + counts["rejected"] + counts["videos_skipped"] == items
    assert counts["videos_skipped"] == videos
    assert counts["caption_file.decoded_as.cp1252"] == 1
    folders = summary(out)["folders"]
    assert folders["links_followed"] == [str(downloads / "#kept-elsewhere")]
    assert folders["links_already_read"] == [str(mine / "loop")]


def test_a_day_as_until_is_inclusive_in_every_iso_spelling():
    from pipelines.collect import parse_date

    assert parse_date("9999-12-31", end_of_day=True) is None
    assert parse_date("2024-03-01", end_of_day=True) == parse_date("20240301", end_of_day=True)
    assert parse_date("2024-03-01", end_of_day=True) == parse_date("2024-03-02T00:00:00")
    assert parse_date("2024-03-01 00:00", end_of_day=True) == parse_date("2024-03-01")  # a time stays a time
