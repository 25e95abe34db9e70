"""An Instagram session through instaloader: a logged-in ``Instaloader`` loaded from a session file.

Hashtag feeds need a logged-in account (since 2025). The session file is instaloader's own (a pickle of
the session cookies, as ``instaloader --login`` writes it). ``login_interactively`` creates one: the
password is read with ``getpass`` (instaloader's ``interactive_login``), goes to Instagram and nowhere
else: not into argv, logs or any output.
"""

import logging
import os
from dataclasses import dataclass

import instaloader
from instaloader import Instaloader, RateController
from instaloader.exceptions import InstaloaderException

from models.errors import StylebeamError

log = logging.getLogger(__name__)


class SessionError(StylebeamError):
    """No usable logged-in session (missing file, expired session, failed login)."""


class ScrapeStopped(StylebeamError):
    """Scraping stopped before the end (checkpoint, logged out, persistent rate limit). Progress is saved:
    running the same command again resumes."""


class LoggingRateController(RateController):
    """instaloader's rate controller, unchanged in its limits; waits go to the log as well as stdout."""

    def sleep(self, secs: float):
        if secs > 1:
            log.info("instaloader rate controller: waiting %.0f s", secs)
        super().sleep(secs)


@dataclass
class Instagram:
    """An ``Instaloader`` and the rate controller it uses (the scraper's own backoff sleeps through it too)."""

    loader: Instaloader
    rate_controller: RateController

    @property
    def context(self) -> instaloader.InstaloaderContext:
        return self.loader.context


def new_instagram(*, sleep: bool = True, quiet: bool = True, rate_controller=LoggingRateController) -> Instagram:
    """An anonymous ``Instaloader`` set up for corpus scraping.

    ``iphone_support=False``: otherwise instaloader asks the mobile API once per post for a larger image
    URL, a request from a far smaller budget (199 per 30 min). ``sleep`` is instaloader's random pause
    before each request (mean 1.7 s); tests turn it off.
    """
    controllers: list[RateController] = []

    def make_controller(context):
        controllers.append(rate_controller(context))
        return controllers[-1]

    loader = Instaloader(
        sleep=sleep,
        quiet=quiet,
        iphone_support=False,
        download_videos=False,
        download_video_thumbnails=False,
        download_comments=False,
        save_metadata=False,
        max_connection_attempts=3,
        request_timeout=60.0,
        rate_controller=make_controller,
    )
    return Instagram(loader, controllers[0])


def default_session_file(username: str) -> str:
    """Where ``instaloader --login USER`` keeps its session (``~/.config/instaloader/session-USER``)."""
    return instaloader.instaloader.get_default_session_filename(username)


def login_interactively(instagram: Instagram, username: str, session_file: str) -> str:
    """Ask for the password (and a 2FA code if needed) on the terminal, log in, save the session file (mode 0600)."""
    instagram.context.quiet = False  # instaloader refuses to prompt in quiet mode
    try:
        instagram.loader.interactive_login(username)
    except InstaloaderException as exc:  # LoginException and its kin: one line is enough
        raise SessionError(f"login as {username} failed: {exc}") from None
    instagram.loader.save_session_to_file(session_file)
    log.info("saved the session of %s to %s", username, session_file)
    return session_file


def load_session(instagram: Instagram, session_file: str) -> str:
    """Load a session file and check with Instagram that it is still logged in; return the username."""
    if not os.path.isfile(session_file):
        raise SessionError(
            f"no session file at {session_file}; create one with "
            f"python -m pipelines.collect --login USER --session-file {session_file}"
        )
    try:
        instagram.loader.load_session_from_file("", session_file)
    except Exception as exc:  # a truncated or foreign pickle
        raise SessionError(f"cannot read the session file {session_file}: {exc}") from None
    username = instagram.loader.test_login()
    if not username:
        raise SessionError(
            f"the session in {session_file} is not logged in any more (expired or revoked); log in again with "
            f"python -m pipelines.collect --login USER --session-file {session_file}"
        )
    # Resume files are bound to the username (NodeIterator.magic), so it must be the real one.
    instagram.context.username = username
    log.info("logged in as %s", username)
    return username
