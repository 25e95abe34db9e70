"""Hashtag scraping through instaloader's API: each hashtag's feed, resumable, into the spool.

One session, one request at a time: Instagram limits per account, so the network part is sequential.
instaloader's ``RateController`` paces every API request (and waits out a 429 before retrying);
on top of it, a request that still fails after instaloader's own three attempts is retried after a
backoff (5 min doubling for 429 / 401 "please wait", 30 s doubling otherwise) before the run stops.
A checkpoint, challenge or logout stops the run at once with instructions. Whatever the stop, the
posts finished so far are committed with the feed's position, and the same command resumes.

Each post is fetched once: a post seen again (under a second hashtag, or re-yielded on resume) only
adds a sighting. Videos, alone or in carousels, are recorded as skipped and never downloaded.
"""

import datetime
import logging
import time
from collections.abc import Callable

import requests
from instaloader import Hashtag, Post
from instaloader.exceptions import (
    AbortDownloadException,
    ConnectionException,
    InstaloaderException,
    InvalidArgumentException,
    LoginRequiredException,
    QueryReturnedForbiddenException,
    QueryReturnedNotFoundException,
)
from instaloader.nodeiterator import NodeIterator
from instaloader.structures import get_json_structure, load_structure

from scraping.records import ERROR, IMAGE, VIDEO, media_record, utc
from scraping.session import Instagram, ScrapeStopped, network_failure
from scraping.spool import HashtagProgress, Spool

log = logging.getLogger(__name__)

# Backoff after instaloader gave up on a request: Instagram's "please wait a few minutes" means minutes.
RATE_LIMIT_BACKOFF_S = 300.0
OTHER_BACKOFF_S = 30.0
MAX_BACKOFFS = 4
# The recent feed of a hashtag is newest first but not strictly: stop at --since only after this many
# older posts in a row.
SINCE_PATIENCE = 30
DOWNLOAD_ATTEMPTS = 3


class HashtagScraper:
    """Scrape hashtags into ``spool``. ``since``/``until`` are aware datetimes (``until`` exclusive);
    ``max_posts`` caps the posts taken per hashtag (those in the date range, duplicates included)."""

    def __init__(
        self,
        instagram: Instagram,
        spool: Spool,
        *,
        max_posts: int | None = None,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        commit_every: int = 200,
        max_backoffs: int = MAX_BACKOFFS,
    ):
        self.instagram = instagram
        self.spool = spool
        self.max_posts = max_posts
        self.since = since
        self.until = until
        self.commit_every = commit_every
        self.max_backoffs = max_backoffs
        self._started = time.monotonic()

    def run(self, hashtags: list[str]) -> Spool:
        for tag in hashtags:
            self.scrape(tag.lstrip("#").lower())
        return self.spool

    def scrape(self, tag: str) -> None:
        progress = self.spool.hashtag(tag)
        if progress.finished and not (progress.finished == "max_posts" and self._below_max(progress)):
            log.info(
                "#%s: done in an earlier run (%s, %d posts); delete %s to start over",
                tag,
                progress.finished,
                progress.taken,
                self.spool.state_dir,
            )
            return
        progress.finished = None
        posts = None
        try:
            hashtag = self._patiently(lambda: Hashtag.from_name(self.instagram.context, tag), f"#{tag}")
            posts = self._patiently(hashtag.get_posts_resumable, f"#{tag} first page")
            self._thaw(posts, progress, tag)
            log.info("#%s: %s posts on Instagram, %d taken before", tag, posts.count, progress.taken)
            while progress.finished is None:
                if not self._below_max(progress):
                    progress.finished = "max_posts"
                    break
                post = self._patiently(lambda: next(posts, None), f"#{tag} next page")
                if post is None:
                    progress.finished = "end"
                    break
                self._take(tag, post, progress)
                if self.spool.pending_posts >= self.commit_every:
                    self._commit(posts, progress, tag)
        except (KeyboardInterrupt, Exception) as exc:
            if not (posts is None and isinstance(exc, QueryReturnedNotFoundException)):
                # The post in hand is not committed; the frozen iterator yields it again on resume.
                self._commit(posts, progress, tag)
                stop = self._stop_reason(exc, tag)
                if stop is exc:
                    raise
                raise stop from exc
            log.error("#%s: no such hashtag", tag)
            progress.finished = "not_found"
        self._commit(posts, progress, tag)

    def _below_max(self, progress: HashtagProgress) -> bool:
        return self.max_posts is None or progress.taken < self.max_posts

    def _thaw(self, posts: NodeIterator, progress: HashtagProgress, tag: str) -> None:
        if progress.iterator is None:
            return
        try:
            frozen = load_structure(self.instagram.context, progress.iterator)
            if frozen.best_before and datetime.datetime.fromtimestamp(frozen.best_before) < datetime.datetime.now():
                raise InvalidArgumentException('"best before" date exceeded')
            posts.thaw(frozen)
            log.info("#%s: resuming the feed after %d posts", tag, posts.total_index)
        except InvalidArgumentException as exc:
            # Starting the feed over costs requests, not duplicates: known posts only add sightings.
            log.warning("#%s: cannot resume the feed (%s); starting it over", tag, exc)

    def _take(self, tag: str, post: Post, progress: HashtagProgress) -> None:
        counts = self.spool.counts
        counts["posts_yielded"] += 1
        posted_at = utc(post.date_utc)
        if self.until is not None and posted_at >= self.until:
            counts["posts_after_until"] += 1
            progress.older_in_a_row = 0
            return
        if self.since is not None and posted_at < self.since:
            counts["posts_before_since"] += 1
            progress.older_in_a_row += 1
            if progress.older_in_a_row >= SINCE_PATIENCE:
                progress.finished = "since"
            return
        progress.older_in_a_row = 0
        shortcode = post.shortcode
        if shortcode in self.spool.sightings:
            if self.spool.add_sighting(shortcode, tag):
                counts["posts_under_another_hashtag"] += 1
                progress.taken += 1
            else:
                counts["posts_seen_again"] += 1
            return
        records = self._media_records(post, tag, posted_at)
        self.spool.add_post(shortcode, tag, records)
        progress.taken += 1
        counts["posts_new"] += 1
        for record in records:
            counts[f"media_{record['kind']}"] += 1

    def _media_records(self, post: Post, tag: str, posted_at: datetime.datetime) -> list[dict]:
        fields = {
            "shortcode": post.shortcode,
            "hashtags_queried": [tag],
            "caption": post.caption,
            "caption_hashtags": post.caption_hashtags,
            "posted_at": posted_at,
            # the numeric id: in every feed node (a username would cost one request per post), and stable
            "owner": str(post.owner_id),
        }
        if post.typename == "GraphSidecar":
            nodes = self._patiently(lambda: list(post.get_sidecar_nodes()), f"carousel {post.shortcode}")
            items = [(index, node.is_video, node.display_url) for index, node in enumerate(nodes)]
        else:
            items = [(0, post.typename == "GraphVideo" or post.is_video, post.url)]
        records = []
        for index, is_video, url in items:
            if is_video:
                records.append(media_record(fields, index, VIDEO))
                continue
            data, error = self._download(url)
            records.append(
                media_record(fields, index, IMAGE, image=data)
                if error is None
                else media_record(fields, index, ERROR, error=error)
            )
        return records

    def _download(self, url: str) -> tuple[bytes | None, str | None]:
        """Image bytes from the CDN (anonymous, like instaloader's own downloads), or ``(None, "reason: detail")``."""
        context = self.instagram.context
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                return context.get_raw(url).content, None
            except QueryReturnedNotFoundException as exc:
                return None, f"http_404: {exc}"
            except QueryReturnedForbiddenException as exc:
                return None, f"http_403: {exc}"
            except (ConnectionException, requests.exceptions.RequestException) as exc:
                if attempt == DOWNLOAD_ATTEMPTS:
                    return None, f"download_failed: {exc}"
                context.do_sleep()
        raise AssertionError("unreachable")

    def _patiently(self, request: Callable, what: str):
        """Run an API request; after instaloader's own retries fail, back off and try again a few times."""
        for backoff in range(self.max_backoffs + 1):
            try:
                return request()
            except QueryReturnedNotFoundException:
                raise
            except ConnectionException as exc:
                if backoff == self.max_backoffs:
                    raise
                rate_limited = _is_rate_limit(exc)
                wait = (RATE_LIMIT_BACKOFF_S if rate_limited else OTHER_BACKOFF_S) * 2**backoff
                self.spool.counts["backoffs"] += 1
                failure = "network failure" if network_failure(exc) else "request failed"
                log.warning(
                    "%s: %s; %s, retrying in %.0f s", what, exc, "rate limited" if rate_limited else failure, wait
                )
                self.instagram.rate_controller.sleep(wait)  # one place to wait, and one to stub in tests
        raise AssertionError("unreachable")

    def _commit(self, posts: NodeIterator | None, progress: HashtagProgress, tag: str) -> None:
        if progress.finished in ("end", "since", "not_found"):
            progress.iterator = None
        elif posts is not None:
            progress.iterator = get_json_structure(posts.freeze())
        self.spool.commit()
        counts = self.spool.counts
        elapsed = max(time.monotonic() - self._started, 1e-9)
        log.info(
            "#%s: %d posts taken; all hashtags: %d new posts, %d images, %d videos skipped, %d fetch errors, "
            "%.2f posts/s",
            tag,
            progress.taken,
            counts["posts_new"],
            counts["media_image"],
            counts["media_video"],
            counts["media_error"],
            counts["posts_yielded"] / elapsed,
        )

    def _stop_reason(self, exc: BaseException, tag: str) -> BaseException:
        resume = f"progress is saved in {self.spool.state_dir}; run the same command again to resume"
        if isinstance(exc, KeyboardInterrupt):
            return exc
        if isinstance(exc, (AbortDownloadException, LoginRequiredException)):
            return ScrapeStopped(
                f"Instagram stopped the session at #{tag} ({exc}). Open instagram.com in a browser with this "
                f"account and clear any checkpoint or challenge, log in again with --login USER --session-file F "
                f"if it logged you out, wait a while; {resume}"
            )
        if isinstance(exc, ConnectionException):
            network = network_failure(exc)
            if network:
                return ScrapeStopped(f"cannot reach Instagram at #{tag} ({network}): check the network; {resume}")
            return ScrapeStopped(
                f"Instagram kept failing at #{tag} after {self.max_backoffs} backoffs ({exc}); {resume}"
            )
        if isinstance(exc, InstaloaderException):
            return ScrapeStopped(f"instaloader error at #{tag}: {exc}; {resume}")
        return exc


def _is_rate_limit(exc: Exception) -> bool:
    message = str(exc).lower()
    return "429" in message or "please wait" in message or "401" in message
