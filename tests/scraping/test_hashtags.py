"""Hashtag scraping against the fake Instagram: instaloader's real request and parsing code runs."""

import datetime
import getpass
import pickle

import pyarrow.parquet as pq
import pytest

from scraping.hashtags import RATE_LIMIT_BACKOFF_S, HashtagScraper
from scraping.session import ScrapeStopped, SessionError, load_session, login_interactively
from scraping.spool import Spool
from tests.scraping import fake_instagram as fi

# (shortcode, index) → kind, for the whole scenario
EXPECTED = {
    ("IMAGE001", 0): "image",
    ("CAROUSEL1", 0): "image",
    ("CAROUSEL1", 1): "video",
    ("CAROUSEL1", 2): "image",
    ("VIDEO001", 0): "video",
    ("SHARED01", 0): "image",
    ("GONE0001", 0): "error",
    ("HTML0001", 0): "image",
    ("MIRO0001", 0): "image",
}
IMAGE_FILES = ["IMAGE001.", "CAROUSEL1_0.", "CAROUSEL1_2.", "SHARED01.", "HTML0001.", "MIRO0001."]


@pytest.fixture
def fake(monkeypatch):
    fake = fi.install(monkeypatch)
    fi.miro_scenario(fake)
    return fake


@pytest.fixture
def instagram(fake, tmp_path):
    instagram = fi.test_instagram()
    load_session(instagram, fi.write_session_file(str(tmp_path / "session")))
    return instagram


def spooled(spool: Spool) -> list[dict]:
    return [row for path in spool.spool_files() for row in pq.read_table(path).to_pylist()]


def scrape(instagram, state_dir, tags=("joanmiro", "miro"), **kwargs) -> Spool:
    return HashtagScraper(instagram, Spool.open(str(state_dir)), **kwargs).run(list(tags))


def test_every_image_is_fetched_once_and_a_shared_post_gets_both_hashtags(fake, instagram, tmp_path):
    spool = scrape(instagram, tmp_path / "state", commit_every=2)

    records = spooled(spool)
    assert {(r["shortcode"], r["index"]): r["kind"] for r in records} == EXPECTED
    assert len(records) == len(EXPECTED)  # the post under both hashtags is spooled once
    assert spool.sightings["SHARED01"] == {"joanmiro", "miro"}
    assert all(fake.fetched(name) == 1 for name in IMAGE_FILES)
    assert fake.fetched("VIDEO001") == 0 and fake.fetched("CAROUSEL1_1") == 0  # videos are never downloaded
    assert fake.served[("post", "CAROUSEL1")] == 1  # one full-metadata request for the carousel's children

    by_key = {(r["shortcode"], r["index"]): r for r in records}
    assert by_key[("CAROUSEL1", 2)]["image"] == fake.files[f"{fi.CDN}CAROUSEL1_2.jpg"]
    assert by_key[("CAROUSEL1", 0)]["caption"] == "Tres obras de #JoanMiro en la #fundaciojoanmiro"
    assert by_key[("CAROUSEL1", 0)]["caption_hashtags"] == ["joanmiro", "fundaciojoanmiro"]
    assert by_key[("IMAGE001", 0)]["posted_at"] == datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=datetime.UTC)
    assert by_key[("IMAGE001", 0)]["owner"] == "7"
    assert by_key[("GONE0001", 0)]["error"].startswith("http_404: ")

    # the 429 on page 2 went through instaloader's RateController (which waits out its 11-minute window)
    assert max(instagram.rate_controller.sleeps) > 600
    assert spool.counts["posts_new"] == 7 and spool.counts["posts_under_another_hashtag"] == 1
    assert spool.hashtags["joanmiro"].finished == "end" and spool.hashtags["joanmiro"].taken == 6


def test_an_interrupted_scrape_resumes_without_duplicates(fake, tmp_path):
    state = tmp_path / "state"
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("page", "joanmiro", "p2"), fi.CHECKPOINT)  # third page: Instagram wants a checkpoint
    fake.fail(("file", f"{fi.CDN}MIRO0001.jpg"), KeyboardInterrupt())  # then ^C in the middle of #miro

    first = fi.test_instagram()
    load_session(first, session)
    with pytest.raises(ScrapeStopped, match="checkpoint_required.*run the same command again"):
        scrape(first, state, commit_every=100)
    stopped = Spool.open(str(state))
    assert {r["shortcode"] for r in spooled(stopped)} == {"IMAGE001", "CAROUSEL1", "VIDEO001", "SHARED01", "GONE0001"}
    assert stopped.hashtags["joanmiro"].iterator is not None

    second = fi.test_instagram()
    load_session(second, session)
    with pytest.raises(KeyboardInterrupt):
        scrape(second, state, commit_every=100)
    interrupted = Spool.open(str(state))
    assert interrupted.hashtags["joanmiro"].finished == "end"
    assert interrupted.sightings["SHARED01"] == {"joanmiro", "miro"}  # committed before the ^C

    third = fi.test_instagram()
    load_session(third, session)
    spool = scrape(third, state, commit_every=100)

    records = spooled(spool)
    assert {(r["shortcode"], r["index"]): r["kind"] for r in records} == EXPECTED
    assert len(records) == len(EXPECTED)
    assert all(fake.fetched(name) == 1 for name in IMAGE_FILES)
    assert spool.counts["posts_seen_again"] >= 1  # the frozen feed yields its current post again: not re-fetched


def test_please_wait_backs_off_then_goes_on(fake, instagram, tmp_path):
    # instaloader tries 3 times, then gives up; the scraper waits and asks again
    fake.fail(("page", "miro", None), fi.PLEASE_WAIT, fi.PLEASE_WAIT, fi.PLEASE_WAIT)
    spool = scrape(instagram, tmp_path / "state", tags=["miro"])

    assert RATE_LIMIT_BACKOFF_S in instagram.rate_controller.sleeps
    assert spool.counts["backoffs"] == 1
    assert {r["shortcode"] for r in spooled(spool)} == {"SHARED01", "MIRO0001"}


def test_a_rate_limit_that_persists_stops_with_progress_saved(fake, instagram, tmp_path):
    fake.fail(("page", "joanmiro", "p1"), *[fi.PLEASE_WAIT] * 9)
    with pytest.raises(ScrapeStopped, match="kept failing at #joanmiro after 2 backoffs"):
        scrape(instagram, tmp_path / "state", max_backoffs=2)
    assert instagram.rate_controller.sleeps.count(RATE_LIMIT_BACKOFF_S) == 1
    assert 2 * RATE_LIMIT_BACKOFF_S in instagram.rate_controller.sleeps
    assert {r["shortcode"] for r in spooled(Spool.open(str(tmp_path / "state")))} == {
        "IMAGE001",
        "CAROUSEL1",
        "VIDEO001",
    }


def test_max_posts_and_date_range(fake, instagram, tmp_path):
    t = datetime.datetime.fromtimestamp(1_700_000_000, datetime.UTC)
    spool = scrape(
        instagram,
        tmp_path / "state",
        max_posts=2,
        since=t - datetime.timedelta(seconds=450),
        until=t - datetime.timedelta(seconds=50),  # excludes IMAGE001 (at t)
    )
    assert sorted(spool.sightings) == ["CAROUSEL1", "SHARED01", "VIDEO001"]
    assert spool.hashtags["joanmiro"].finished == "max_posts" and spool.hashtags["joanmiro"].taken == 2
    assert spool.hashtags["miro"].taken == 1 and spool.counts["posts_before_since"] == 1
    assert spool.counts["posts_after_until"] == 1

    again = scrape(instagram, tmp_path / "state", max_posts=3)  # a larger cap goes on from the saved position
    assert again.hashtags["joanmiro"].taken == 3 and "SHARED01" in again.sightings


def test_a_missing_hashtag_is_reported_and_skipped(fake, instagram, tmp_path):
    spool = scrape(instagram, tmp_path / "state", tags=["nosuchtag", "miro"])
    assert spool.hashtags["nosuchtag"].finished == "not_found"
    assert spool.hashtags["miro"].finished == "end"


def test_login_asks_for_the_password_and_never_stores_it(fake, tmp_path, monkeypatch):
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt, stream=None: prompts.append(prompt) or fi.PASSWORD)
    session_file = str(tmp_path / "session-tester")

    login_interactively(fi.test_instagram(), fi.USERNAME, session_file)

    assert prompts == [f"Enter Instagram password for {fi.USERNAME}: "]
    with open(session_file, "rb") as handle:
        raw = handle.read()
    assert fi.PASSWORD.encode() not in raw
    assert pickle.loads(raw)["sessionid"] == fi.SESSION_ID
    assert load_session(fi.test_instagram(), session_file) == fi.USERNAME


def test_a_dead_session_is_a_clear_error(fake, tmp_path):
    with pytest.raises(SessionError, match="not logged in any more.*--login USER"):
        load_session(fi.test_instagram(), fi.write_session_file(str(tmp_path / "old"), session_id="expired"))
    with pytest.raises(SessionError, match="no session file"):
        load_session(fi.test_instagram(), str(tmp_path / "missing"))
