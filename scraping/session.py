"""An Instagram session through instaloader: a logged-in ``Instaloader`` loaded from a session file.

Hashtag feeds need a logged-in account (since 2025). The session file is instaloader's own (a pickle of
the session cookies, as ``instaloader --login`` writes it). ``login_interactively`` creates one: the
password is read with ``getpass`` (from the terminal, or from stdin when there is none), goes to Instagram and
nowhere else: not into argv, logs or any output.

A session file is a credential (whoever reads it is logged in as you) and, being a pickle, would run code
when instaloader loads it. So, as ssh does with private keys, a file that is not yours or that others may
read or write is refused; and it is read here with an unpickler that builds plain dicts and strings only.
"""

import getpass
import io
import logging
import os
import pickle
import sys
import warnings
from dataclasses import dataclass

import instaloader
import requests
from instaloader import Instaloader, RateController
from instaloader.exceptions import (
    AbortDownloadException,
    ConnectionException,
    InstaloaderException,
    LoginRequiredException,
    TwoFactorAuthRequiredException,
)

from models.common.errors import StylebeamError

log = logging.getLogger(__name__)


class SessionError(StylebeamError):
    """No usable logged-in session (missing file, expired session, failed login)."""


class ScrapeStopped(StylebeamError):
    """Scraping stopped before the end (checkpoint, logged out, persistent rate limit). Progress is saved:
    running the same command again resumes."""


# instaloader's own "who am I" GraphQL query (InstaloaderContext.test_login, 4.16).
TEST_LOGIN_QUERY = "d6f4427fbe92d846298cf93df0b937d3"


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
    route_errors_to_log(loader.context)
    return Instagram(loader, controllers[0])


def route_errors_to_log(context: instaloader.InstaloaderContext, width: int = 160) -> None:
    """instaloader prints each retry of a failed request to stderr in full (~400 characters of urllib3 repr per
    line, before our own one-line error when Instagram cannot be reached); send them to the log instead, one short
    line each. Its end-of-run error list is kept as it was."""

    def error(msg, repeat_at_end=True):
        text = " ".join(str(msg).split())
        log.warning("instaloader: %s", text if len(text) <= width else f"{text[: width - 40]} ... {text[-35:]}")
        if repeat_at_end:
            context.error_log.append(msg)

    context.error = error


def default_session_file(username: str) -> str:
    """Where ``instaloader --login USER`` keeps its session (``~/.config/instaloader/session-USER``)."""
    return instaloader.instaloader.get_default_session_filename(username)


def login_interactively(instagram: Instagram, username: str, session_file: str) -> str:
    """Ask for the password (and a 2FA code if needed) on the terminal, or read them from stdin where there is no
    terminal (``echo PASSWORD | …``), log in, save the session file (mode 0600)."""
    password = read_secret(
        f"Enter Instagram password for {username}: ",
        "no password: --login asks for it on a terminal (or piped on stdin)",
    )
    try:
        try:
            instagram.loader.login(username, password)
        except TwoFactorAuthRequiredException:
            code = read_secret(
                "Enter 2FA verification code: ",
                "no 2FA code: --login asks for it on a terminal (or piped on stdin, on the line after the password)",
            )
            instagram.loader.two_factor_login(code)
    except (InstaloaderException, requests.exceptions.RequestException) as exc:
        network = network_failure(exc)
        if network:
            raise SessionError(
                f"cannot reach Instagram to log in ({network}): check the network and try again"
            ) from None
        raise SessionError(f"login as {username} failed: {exc}") from None
    instagram.loader.save_session_to_file(session_file)
    log.info("saved the session of %s to %s", username, session_file)
    return session_file


def read_secret(prompt: str, missing: str) -> str:
    """A line typed without echo on the terminal, or, with no terminal (cron, a pipe, ``< /dev/null``), the next line
    of stdin, read without getpass's "input may be echoed" warning and prompt: nobody is there to read them. An empty
    answer or end of input raises ``SessionError(missing)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", getpass.GetPassWarning)
        try:
            secret = getpass.getpass(prompt, stream=None if has_terminal() else io.StringIO())
        except EOFError:
            secret = ""
    if not secret.strip():
        raise SessionError(missing)
    return secret


def has_terminal() -> bool:
    """Whether ``getpass`` can prompt on a terminal (the controlling tty, else stdin) rather than fall back to stdin."""
    try:
        import termios  # POSIX only; getpass itself uses stdin elsewhere
    except ImportError:
        return sys.stdin is not None and sys.stdin.isatty()
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return sys.stdin is not None and sys.stdin.isatty()
    try:
        termios.tcgetattr(fd)
        return True
    except termios.error:
        return False
    finally:
        os.close(fd)


def load_session(instagram: Instagram, session_file: str) -> str:
    """Load a session file and check with Instagram that it is still logged in; return the username."""
    if not os.path.isfile(session_file):
        raise SessionError(
            f"no session file at {session_file}; create one with "
            f"python -m pipelines.collect --login USER --session-file {session_file}"
        )
    check_session_file(session_file)
    instagram.loader.load_session("", read_session_file(session_file))
    username = _logged_in_username(instagram.context, session_file)
    if not username:
        raise SessionError(
            f"the session in {session_file} is not logged in any more (expired or revoked); log in again with "
            f"python -m pipelines.collect --login USER --session-file {session_file}"
        )
    # Resume files are bound to the username (NodeIterator.magic), so it must be the real one.
    instagram.context.username = username
    log.info("logged in as %s", username)
    return username


def check_session_file(path: str) -> None:
    """Refuse a session file that is not the user's own or that group or others may read or write (ssh's rule for
    private keys): whoever reads it has the account, whoever writes it runs code in the next scrape."""
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise SessionError(
            f"the session file {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}): a session file "
            "is a credential; use one you created with --login USER"
        )
    mode = info.st_mode & 0o777
    if mode & 0o077:
        raise SessionError(
            f"the session file {path} is open to group or others (mode {mode:o}): it is a credential, and a pickle "
            f"that runs code when loaded; chmod 600 {path}"
        )


class _CookieUnpickler(pickle.Unpickler):
    """Builds dicts, lists and strings only: a pickle that names any class or function is refused unrun."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name}")


def read_session_file(path: str) -> dict[str, str]:
    """The cookies of an instaloader session file (a pickled ``{name: value}`` dict), without running code."""
    try:
        with open(path, "rb") as handle:
            cookies = _CookieUnpickler(io.BytesIO(handle.read())).load()
    except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise SessionError(f"{path} is not an instaloader session file ({exc})") from None
    if not (isinstance(cookies, dict) and all(isinstance(v, str) for v in [*cookies, *cookies.values()])):
        raise SessionError(f"{path} is not an instaloader session file (no cookie dict)")
    if "csrftoken" not in cookies:
        raise SessionError(f"{path} is not an instaloader session file (no csrftoken cookie)")
    return cookies


def _logged_in_username(context: instaloader.InstaloaderContext, session_file: str) -> str | None:
    """instaloader's ``test_login``, without its ``except`` that reads every failure as "not logged in": being
    offline or a checkpoint is reported as what it is."""
    try:
        data = context.graphql_query(TEST_LOGIN_QUERY, {})
    except LoginRequiredException:  # redirected to the login page
        return None
    except AbortDownloadException as exc:
        raise SessionError(
            f"Instagram stopped the session in {session_file} ({exc}): open instagram.com in a browser with this "
            "account and clear any checkpoint or challenge, then run again"
        ) from None
    except ConnectionException as exc:
        network = network_failure(exc)
        if network:
            raise SessionError(
                f"cannot reach Instagram to check the session ({network}): check the network and run again"
            ) from None
        raise SessionError(f"Instagram did not answer the login check ({exc}); try again later") from None
    user = (data.get("data") or {}).get("user")
    return user.get("username") if isinstance(user, dict) else None


def network_failure(exc: BaseException) -> str | None:
    """``"network: …"`` when ``exc`` (or what caused it: instaloader wraps ``requests`` errors) is a failure to
    reach the server at all (connection refused or reset, DNS, timeout), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return f"network: {exc}"
        exc = exc.__cause__ or exc.__context__
    return None
