"""Hashtags (or instaloader download folders) → raw image–caption corpus, as Parquet.

    python -m pipelines.collect --login USER [--session-file F]
    python -m pipelines.collect --hashtags joanmiro,miro --output OUT --session-file F
        [--max-posts N] [--since DATE] [--until DATE] [--state-dir STATE] [Beam options]
    python -m pipelines.collect --from-dir DIR [--from-dir DIR ...] --output OUT [Beam options]

Scraping is rate-limited per account, so it runs here, one request at a time, into a resumable spool
(STATE, default OUT/_state): run the same command again after an interruption and it goes on where it
stopped. Decoding, validating, hashing and writing run on Beam. Writes OUT/data/raw-*.parquet,
OUT/rejected/rejected-*.parquet and OUT/summary.json.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from typing import TYPE_CHECKING

from models.common.errors import InputNotFoundError, UsageError
from pipelines.beam_job import BeamJob, JobContext, JobOptions, JobOutputs, run_beam_job
from pipelines.cli import OUTPUT_HELP, positive_int, run_main
from scraping.hashtags import HashtagScraper
from scraping.instaloader_dir import FolderListing, list_posts
from scraping.records import printable
from scraping.session import default_session_file, load_session, login_interactively, new_instagram
from scraping.spool import Spool
from transforms.schemas import RAW_CORPUS

if TYPE_CHECKING:  # Beam and the transforms load when the job runs, not for --help
    import apache_beam as beam

log = logging.getLogger(__name__)


class CollectOptions(JobOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        source = parser.add_argument_group("source (one of)")
        source.add_argument("--hashtags", help="comma-separated hashtags to scrape, e.g. joanmiro,miro")
        source.add_argument(
            "--from-dir", action="append", default=None, help="an instaloader download folder (repeatable)"
        )
        parser.add_argument("--output", help=f"{OUTPUT_HELP}: a directory, local or gs://")
        session = parser.add_argument_group("Instagram session")
        session.add_argument(
            "--login",
            metavar="USER",
            help="log in as USER (password asked on the terminal, else read from stdin) and save the session; "
            "alone: only that",
        )
        session.add_argument(
            "--session-file", help="instaloader session file (default with --login: ~/.config/instaloader/session-USER)"
        )
        scrape = parser.add_argument_group("scraping")
        scrape.add_argument("--max-posts", type=positive_int, help="posts taken per hashtag (default: all)")
        scrape.add_argument("--since", help="only posts from this UTC date on (YYYY-MM-DD or ISO time)")
        scrape.add_argument("--until", help="only posts up to this UTC date, inclusive (YYYY-MM-DD or ISO time)")
        scrape.add_argument("--state-dir", help="spool and resume state (default: OUT/_state)")
        scrape.add_argument(
            "--commit-every", type=positive_int, default=200, help="posts between resume points (default: %(default)s)"
        )


def parse_date(text: str | None, *, end_of_day: bool = False) -> datetime.datetime | None:
    """``YYYY-MM-DD`` (midnight UTC; with ``end_of_day`` the next midnight, for an inclusive --until) or an ISO time.
    ``None`` for no bound, which is also what the end of the last day Python can represent (9999-12-31) means."""
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a date: {text!r}; use YYYY-MM-DD or an ISO time") from None
    if end_of_day and _is_date(text):
        if moment.date() == datetime.date.max:  # its next midnight is past datetime.max: every post is before it
            return None
        moment += datetime.timedelta(days=1)
    return moment.replace(tzinfo=datetime.timezone.utc) if moment.tzinfo is None else moment


def _is_date(text: str) -> bool:
    """A day without a time (``2024-05-01``, ``20240501``), as opposed to a moment."""
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def date_window(opts: CollectOptions) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``(since, until)`` of --since/--until, ``until`` exclusive; a window no post can fall in is refused."""
    since, until = parse_date(opts.since), parse_date(opts.until, end_of_day=True)
    if since is not None and until is not None and since >= until:
        raise UsageError(f"--since {opts.since} is not before --until {opts.until}: no post can fall between them")
    return since, until


def check(opts: CollectOptions) -> None:
    if opts.hashtags and opts.from_dir:
        raise UsageError("give --hashtags or --from-dir, not both")
    date_window(opts)  # a bad date is reported now, not after logging in
    if not (opts.hashtags or opts.from_dir):
        if opts.login:
            return
        raise UsageError("nothing to collect: give --hashtags TAGS or --from-dir DIR (or --login USER to log in)")
    if not opts.output:
        raise UsageError("--output is required")
    if opts.from_dir:
        for root in opts.from_dir:
            if not os.path.isdir(root):
                raise UsageError(f"--from-dir {root}: not a folder")
        if opts.max_posts or opts.since or opts.until:
            raise UsageError("--max-posts, --since and --until apply to --hashtags only")
    if opts.hashtags and not (opts.session_file or opts.login):
        raise UsageError(
            "--hashtags needs a logged-in Instagram session: --session-file F "
            "(create one with: python -m pipelines.collect --login USER --session-file F)"
        )


def scrape(opts: CollectOptions, instagram) -> Spool:
    """Log in from the session file (or interactively with --login and no file yet), then scrape into the spool."""
    from transforms.io import output_path

    session_file = opts.session_file or default_session_file(opts.login)
    if opts.login and not os.path.isfile(session_file):
        login_interactively(instagram, opts.login, session_file)
    load_session(instagram, session_file)
    since, until = date_window(opts)
    spool = Spool.open(opts.state_dir or output_path(opts.output, "_state"))
    hashtags = [tag.strip() for tag in opts.hashtags.split(",") if tag.strip()]
    scraper = HashtagScraper(
        instagram, spool, max_posts=opts.max_posts, since=since, until=until, commit_every=opts.commit_every
    )
    return scraper.run(hashtags)


def build(pipeline: beam.Pipeline, opts: CollectOptions, context: JobContext) -> JobOutputs:
    """records (``context.prepared``: the spool, or the folders' listing) → raw rows; the entry writes what it
    returns."""
    import apache_beam as beam

    from transforms.corpus import ReadInstaloaderDirs, ReadSpool, ToRawRows

    if isinstance(context.prepared, Spool):
        spool = context.prepared
        read = pipeline | "ReadSpool" >> ReadSpool(spool.spool_files(), spool.sighting_files())
        records, read_rejected = read["records"], read["rejected"]
        notes = pipeline | "NoNotes" >> beam.Create([])
        source_facts = {
            "scrape": {
                "state_dir": spool.state_dir,
                "counts": dict(sorted(spool.counts.items())),
                "hashtags": {tag: {"taken": p.taken, "finished": p.finished} for tag, p in spool.hashtags.items()},
            }
        }
    else:
        listing = context.prepared
        read = pipeline | "ReadInstaloaderDirs" >> ReadInstaloaderDirs(listing)
        records, read_rejected, notes = read["records"], read["rejected"], read["notes"]
        source_facts = {
            "folders": {
                "links_followed": [printable(link) for link in listing.links_followed],
                "links_already_read": [printable(link) for link in listing.links_already_read],
            }
        }

    rows = records | "ToRawRows" >> ToRawRows()
    posts = records | "Shortcodes" >> beam.Map(lambda record: record["shortcode"]) | "Posts" >> beam.Distinct()
    counted = {"posts_seen": posts, "images_written": rows["raw"], "videos_skipped": rows["videos"]}
    note_tallies = notes | "NoteTallies" >> beam.Map(lambda key: (key, 1))
    settings = {
        "settings": {
            "hashtags": opts.hashtags,
            "from_dir": opts.from_dir,
            "max_posts": opts.max_posts,
            "since": opts.since,
            "until": opts.until,
        },
        **source_facts,
    }
    rejected = (read_rejected, rows["rejected"])
    return JobOutputs({"raw": rows["raw"]}, rejected, counted, (note_tallies,), settings)


def list_folders(roots: list[str]) -> FolderListing:
    """List the download folders here, on the launcher, and say what a user should know about them. Folders with
    no post at all are refused: a wrong folder would otherwise be a run that writes empty tables."""
    listing = list_posts(roots)
    if not listing.posts:
        unreadable = "".join(f"; cannot list {printable(folder)} ({error})" for folder, error in listing.unreadable)
        folders = ", ".join(printable(root) for root in roots)
        raise InputNotFoundError(
            f"no instaloader posts under --from-dir {folders} (no image, video or .json.xz metadata files in it or "
            f"its subfolders){unreadable}"
        )
    for link in listing.links_followed:
        log.info("followed the symlinked folder %s", link)
    for link in listing.links_already_read:
        log.warning("not reading %s again: it links to a folder read already (a loop, or a second name)", link)
    for folder, error in listing.unreadable:
        log.warning("cannot list %s (%s): its posts are not read", folder, error)
    return listing


def describe_collect(summary: dict) -> str:
    counts = summary["counts"]
    return (
        f"{counts['posts_seen']} posts: wrote {counts['images_written']} images, skipped "
        f"{counts['videos_skipped']} videos, rejected {counts['rejected']} to {summary['output']} "
        f"in {summary['elapsed_s']:.1f}s"
    )


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None, instagram_factory=new_instagram):
    """``instagram_factory`` makes the ``scraping.session.Instagram`` to scrape with (tests pass one without sleeps)."""

    def prepare(opts: CollectOptions):
        """Log in only (``--login`` alone: nothing more to run), or scrape into the spool, or list the folders."""
        if not (opts.hashtags or opts.from_dir):
            login_interactively(instagram_factory(), opts.login, opts.session_file or default_session_file(opts.login))
            return None
        return scrape(opts, instagram_factory()) if opts.hashtags else list_folders(opts.from_dir)

    job = BeamJob(
        "collect",
        CollectOptions,
        {"raw": RAW_CORPUS},
        build,
        describe_collect,
        check=check,
        prepare=prepare,
        replaces_own_output=lambda opts: bool(opts.hashtags),  # the same command resumes; tables come from the spool
        reads=("from_dir",),
    )
    return run_beam_job(job, argv, test_pipeline)


if __name__ == "__main__":
    sys.exit(run_main(run))
