"""The session file (a credential, and a pickle) and the login check against the fake Instagram: a session file
others could have written is refused, a crafted pickle runs nothing, and a network failure is not "logged out"."""

import getpass
import io
import os
import pickle
import sys

import pytest
import requests

from scraping import session as session_module
from scraping.hashtags import HashtagScraper
from scraping.session import ScrapeStopped, SessionError, load_session, login_interactively
from scraping.spool import Spool
from tests.scraping import fake_instagram as fi


@pytest.fixture
def fake(monkeypatch):
    fake = fi.install(monkeypatch)
    fi.miro_scenario(fake)
    return fake


class RunsCode:
    """What a crafted session file holds: unpickling it would create ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o640, 0o604])
def test_a_session_file_others_can_write_or_read_is_refused_before_it_is_loaded(fake, tmp_path, mode):
    session = tmp_path / "session"
    marker = tmp_path / "ran"
    session.write_bytes(pickle.dumps(RunsCode(str(marker))))
    os.chmod(session, mode)
    with pytest.raises(SessionError, match=f"mode {mode:o}.*chmod 600 {session}$"):
        load_session(fi.test_instagram(), str(session))
    assert not marker.exists()


def test_a_session_file_of_another_user_is_refused(fake, tmp_path, monkeypatch):
    session = fi.write_session_file(str(tmp_path / "session"))
    monkeypatch.setattr(os, "getuid", lambda: os.stat(session).st_uid + 1)
    with pytest.raises(SessionError, match="belongs to uid .* not to you"):
        load_session(fi.test_instagram(), session)


def test_a_crafted_pickle_runs_no_code_even_with_safe_permissions(fake, tmp_path):
    session = tmp_path / "session"
    marker = tmp_path / "ran"
    session.write_bytes(pickle.dumps({"sessionid": RunsCode(str(marker))}))
    os.chmod(session, 0o600)
    with pytest.raises(SessionError, match="not an instaloader session file"):
        load_session(fi.test_instagram(), str(session))
    assert not marker.exists()


@pytest.mark.parametrize("data", [b"", b"garbage", pickle.dumps(["a", "list"]), pickle.dumps({"mid": "m"})])
def test_a_session_file_that_is_not_one_is_one_line(fake, tmp_path, data):
    session = tmp_path / "session"
    session.write_bytes(data)
    os.chmod(session, 0o600)
    with pytest.raises(SessionError, match="not an instaloader session file"):
        load_session(fi.test_instagram(), str(session))


NETWORK_FAILURES = {
    "connection refused": requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='www.instagram.com', port=443): Max retries exceeded "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] Connection refused'))"
    ),
    "no DNS": requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='www.instagram.com', port=443): Max retries exceeded "
        "(Caused by NameResolutionError(\"Failed to resolve 'www.instagram.com'\"))"
    ),
    "timeout": requests.exceptions.ConnectTimeout("connect timeout=60"),
}


@pytest.mark.parametrize("failure", NETWORK_FAILURES.values(), ids=NETWORK_FAILURES.keys())
def test_offline_is_a_network_failure_not_a_dead_session(fake, tmp_path, failure):
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("test_login",), failure, failure, failure)  # instaloader tries 3 times
    with pytest.raises(SessionError) as failed:
        load_session(fi.test_instagram(), session)
    message = str(failed.value)
    assert message.startswith("cannot reach Instagram") and "network" in message
    assert "not logged in" not in message


def test_an_instagram_error_is_not_a_dead_session_either(fake, tmp_path):
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("test_login",), *[(500, {"message": "oops", "status": "fail"})] * 3)
    with pytest.raises(SessionError, match="Instagram did not answer the login check .*500.*try again later"):
        load_session(fi.test_instagram(), session)


def test_a_checkpoint_at_the_login_check_says_what_to_do(fake, tmp_path):
    session = fi.write_session_file(str(tmp_path / "session"))
    fake.fail(("test_login",), fi.CHECKPOINT)
    with pytest.raises(SessionError, match="checkpoint_required.*browser"):
        load_session(fi.test_instagram(), session)


def test_logging_in_offline_is_a_network_failure(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(getpass, "getpass", lambda prompt, stream=None: fi.PASSWORD)
    fake.fail(("home",), NETWORK_FAILURES["no DNS"])
    with pytest.raises(SessionError, match="cannot reach Instagram to log in.*network"):
        login_interactively(fi.test_instagram(), fi.USERNAME, str(tmp_path / "session"))


def test_without_a_terminal_the_password_is_read_from_stdin(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(session_module, "has_terminal", lambda: False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(fi.PASSWORD + "\n"))
    session = login_interactively(fi.test_instagram(), fi.USERNAME, str(tmp_path / "session"))
    assert load_session(fi.test_instagram(), session) == fi.USERNAME


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_no_password_on_stdin_without_a_terminal_is_one_line(fake, tmp_path, monkeypatch, stdin):
    monkeypatch.setattr(session_module, "has_terminal", lambda: False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    with pytest.raises(SessionError, match=r"^no password: --login asks for it on a terminal \(or piped on stdin\)$"):
        login_interactively(fi.test_instagram(), fi.USERNAME, str(tmp_path / "session"))
    assert not (tmp_path / "session").exists()


def test_a_network_failure_while_scraping_stops_as_one(fake, tmp_path):
    instagram = fi.test_instagram()
    load_session(instagram, fi.write_session_file(str(tmp_path / "session")))
    failure = NETWORK_FAILURES["connection refused"]
    fake.fail(("page", "miro", None), *[failure] * 6)
    with pytest.raises(ScrapeStopped, match="cannot reach Instagram at #miro .*network.*run the same command again"):
        HashtagScraper(instagram, Spool.open(str(tmp_path / "state")), max_backoffs=1).run(["miro"])


def test_instaloader_retry_messages_are_short_log_lines(caplog, capsys):
    """instaloader printed each retry of a failed request in full (~400 characters) to stderr."""
    from scraping.session import new_instagram

    context = new_instagram(sleep=False).context
    long = "JSON Query to graphql/query: HTTPSConnectionPool(host='www.instagram.com', port=443): " + "x" * 300
    with caplog.at_level("WARNING"):
        context.error(f"{long} [retrying; skip with ^C]", repeat_at_end=False)
        context.error("Login required.")
    assert capsys.readouterr().err == ""
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 and len(lines[0]) <= 175 and lines[0].endswith("[retrying; skip with ^C]")
    assert lines[1] == "instaloader: Login required." and context.error_log == ["Login required."]
