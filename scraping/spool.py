"""The scraper's state folder: what was fetched, under which hashtags, and where each hashtag feed stands.

    STATE/spool-NNNNN.parquet      media records (``records.MEDIA_RECORD``), one shard per commit
    STATE/sightings-NNNNN.parquet  (shortcode, hashtag): each post the first time it is seen under a hashtag
    STATE/progress.json            the commit point: shard count, per-hashtag position (instaloader's frozen
                                   ``NodeIterator``, as ``save_structure_to_file`` writes it), counters

``progress.json`` is written last and replaced whole, so a run killed at any moment resumes from the last
commit: shards numbered past its count are leftovers and get overwritten. Paths are local or any fsspec
URL (``gs://…``), so the Beam half of ``pipelines.collect`` can read the spool from workers.
"""

import json
import logging
import posixpath
from collections import Counter
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from models.common.errors import StylebeamError
from models.common.files import write_atomically
from scraping.records import MEDIA_RECORD

log = logging.getLogger(__name__)

SIGHTINGS = pa.schema([("shortcode", pa.string()), ("hashtag", pa.string())])
PROGRESS = "progress.json"
FORMAT_VERSION = 1


class StateDamaged(StylebeamError):
    """The state folder cannot be read back (a file cut, edited or lost)."""


@dataclass
class HashtagProgress:
    """Where one hashtag feed stands. ``finished``: None (more to fetch), ``end`` (feed exhausted),
    ``since`` (reached posts older than --since), ``max_posts``, ``not_found``."""

    taken: int = 0
    finished: str | None = None
    older_in_a_row: int = 0
    iterator: dict | None = None  # instaloader get_json_structure(FrozenNodeIterator)


@dataclass
class Spool:
    """Read and commit the state folder. One writer at a time (one scraping session)."""

    state_dir: str
    shards: int = 0
    hashtags: dict[str, HashtagProgress] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    sightings: dict[str, set[str]] = field(default_factory=dict)
    pending_records: list[dict] = field(default_factory=list)
    pending_sightings: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self):
        self.state_dir = self.state_dir.rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.state_dir)

    @classmethod
    def open(cls, state_dir: str) -> "Spool":
        """The state in ``state_dir`` (created when missing), with the sightings of every committed shard loaded."""
        spool = cls(state_dir)
        spool._fs.makedirs(spool._root, exist_ok=True)
        if not spool._fs.exists(spool._local(PROGRESS)):
            return spool
        try:
            spool._load()
        except (OSError, ValueError, LookupError, TypeError, AttributeError, pa.ArrowException) as exc:
            raise StateDamaged(
                f"the scraper state in {spool.state_dir} is damaged ({type(exc).__name__}: {exc}); move it away "
                "to start over (posts already fetched are fetched again)"
            ) from None
        log.info("resuming from %s: %d posts in %d shards", spool.state_dir, len(spool.sightings), spool.shards)
        return spool

    def _load(self) -> None:
        with self._fs.open(self._local(PROGRESS), "rb") as handle:
            state = json.loads(handle.read().decode("utf-8"))
        self.shards = int(state["shards"])
        self.hashtags = {tag: HashtagProgress(**value) for tag, value in state["hashtags"].items()}
        self.counts = Counter(state["counts"])
        for shard in range(self.shards):
            with self._fs.open(self._local(f"sightings-{shard:05d}.parquet"), "rb") as handle:
                table = pq.read_table(handle)
            for shortcode, hashtag in zip(table["shortcode"].to_pylist(), table["hashtag"].to_pylist(), strict=True):
                self.sightings.setdefault(shortcode, set()).add(hashtag)

    def _local(self, name: str) -> str:
        """``name`` inside the state folder, as the fsspec filesystem wants it."""
        return posixpath.join(self._root, name)

    def hashtag(self, tag: str) -> HashtagProgress:
        return self.hashtags.setdefault(tag, HashtagProgress())

    def add_post(self, shortcode: str, hashtag: str, records: list[dict]) -> None:
        """A post seen for the first time: its media records and its first sighting."""
        self.pending_records.extend(records)
        self.add_sighting(shortcode, hashtag)

    def add_sighting(self, shortcode: str, hashtag: str) -> bool:
        """Note that ``shortcode`` was seen under ``hashtag``; False when that was already known."""
        tags = self.sightings.setdefault(shortcode, set())
        if hashtag in tags:
            return False
        tags.add(hashtag)
        self.pending_sightings.append((shortcode, hashtag))
        return True

    @property
    def pending_posts(self) -> int:
        return len(self.pending_sightings)

    def commit(self) -> None:
        """Write the pending shard(s), then ``progress.json``: after this returns, a new run resumes from here."""
        if self.pending_records or self.pending_sightings:
            name = f"{self.shards:05d}.parquet"
            self._write_table(f"spool-{name}", pa.Table.from_pylist(self.pending_records, schema=MEDIA_RECORD))
            sightings = [{"shortcode": code, "hashtag": tag} for code, tag in self.pending_sightings]
            self._write_table(f"sightings-{name}", pa.Table.from_pylist(sightings, schema=SIGHTINGS))
            self.shards += 1
        state = {
            "version": FORMAT_VERSION,
            "shards": self.shards,
            "hashtags": {tag: vars(progress) for tag, progress in self.hashtags.items()},
            "counts": dict(sorted(self.counts.items())),
        }
        write_atomically(self._url(PROGRESS), json.dumps(state, indent=1).encode())
        self.pending_records, self.pending_sightings = [], []

    def _write_table(self, name: str, table: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression="snappy", row_group_size=256)
        write_atomically(self._url(name), buffer.getvalue().to_pybytes())

    def _url(self, name: str) -> str:
        """``name`` inside the state folder, as given (a local path or URL): what ``write_atomically`` takes."""
        return f"{self.state_dir}/{name}"

    def spool_files(self) -> list[str]:
        """The committed media-record shards (paths as given: local or URL, for Beam to read)."""
        return [f"{self.state_dir}/spool-{shard:05d}.parquet" for shard in range(self.shards)]

    def sighting_files(self) -> list[str]:
        return [f"{self.state_dir}/sightings-{shard:05d}.parquet" for shard in range(self.shards)]
