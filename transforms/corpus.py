"""The Beam transforms of the corpus jobs.

``pipelines.collect``: media records (``scraping.records``) from the scraper's spool (``ReadSpool``) or
from instaloader download folders (``ReadInstaloaderDirs``) → ``ToRawRows`` → ``raw`` rows.

``pipelines.clean``: ``raw`` rows → ``CleanCorpus`` → ``clean`` rows: caption normalised and filtered,
image decoded once (``transforms.images.decode_image``), filtered by size and shape, re-encoded with
the project's one encoder, then exact and near duplicates removed (``transforms.dedup``).

Every dropped item becomes a ``rejected`` row (``source_id``, ``stage``, ``"reason: detail"``); the README's
"What happens to bad input" lists every reason. Stages: ``read`` (collect: a download-folder post that cannot
be read, one row per media file; clean: a table or row group that cannot be read, one row per row),
``fetch`` (the image could not be had: a failed download, a missing or unreadable file), ``decode`` (collect:
not a usable image), ``caption``, ``image`` and ``dedup`` (clean).
"""

import hashlib
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadAllFromParquet
from apache_beam.pvalue import AsDict, AsMultiMap, TaggedOutput

from models.common.errors import ImageRejected
from scraping.instaloader_dir import (
    FolderListing,
    OfflineContext,
    PostFiles,
    UnreadablePost,
    media_records,
    read_metadata,
)
from scraping.records import ERROR, MEDIA_FIELDS, MEDIA_RECORD, SOURCE, VIDEO, printable, record_id
from transforms.captions import CaptionFilter, clean_caption, load_models
from transforms.dedup import DEFAULT_MAX_DISTANCE, ExactDuplicates, NearDuplicates, phash
from transforms.images import MAX_PIXELS, decode_image, encode_image
from transforms.schemas import rejected_row
from transforms.sources import relative_id

# Magic numbers of the formats Instagram serves (and a few a download folder may hold).
MAGIC = [(b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF8", "gif"), (b"BM", "bmp")]


def sniff_format(data: bytes) -> str:
    """The encoded format of image bytes from their first bytes (no decoding)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in MAGIC if data.startswith(magic)), "unknown")


# reading the corpus tables -------------------------------------------------------------------------------------
# What pyarrow and Beam's filesystems raise on a file that is cut, corrupt, or not Parquet.
PARQUET_ERRORS = (OSError, ValueError, EOFError, pa.ArrowException)


class ReadCorpusTables(beam.PTransform):
    """Parquet files of one corpus table → ``{"rows": dicts with ``schema``'s columns, "rejected": rows}``.

    Footers are read one file at a time, then each row group on its own, cast to ``schema``: a file or row group
    that cannot be read costs its own rows, never the job. Every input row comes out once, as a row or as a
    ``read`` rejection (ids are the ``key`` column where it can be read, else ``{file}:{row}``, the file relative
    to ``root``): ``missing_columns`` (a table of another kind), ``unreadable_row_group``, ``mistyped_columns``
    (a column that cannot be cast to ``schema``), ``missing_{key}`` (a null key). A file whose footer cannot be
    read is one ``unreadable_parquet`` row: how many rows it held cannot be known.
    """

    def __init__(self, paths: list[str], schema: pa.Schema, root: str = "", key: str = "id"):
        super().__init__()
        self.paths = paths
        self.schema = schema
        self.root = root
        self.key = key

    def expand(self, pbegin):
        groups = (
            pbegin
            | "TableFiles" >> beam.Create(self.paths)
            | "RowGroups"
            >> beam.ParDo(_RowGroups(self.schema, self.root, self.key)).with_outputs("rejected", main="groups")
        )
        rows = (
            groups.groups
            | "SpreadGroups" >> beam.Reshuffle()
            | "ReadRowGroups"
            >> beam.ParDo(_ReadRowGroup(self.schema, self.root, self.key)).with_outputs("rejected", main="rows")
        )
        rejected = (groups.rejected, rows.rejected) | "TableRejected" >> beam.Flatten()
        return {"rows": rows.rows, "rejected": rejected}


class _RowGroups(beam.DoFn):
    """A Parquet file → ``(path, row group, first row, rows)`` work items (its footer only)."""

    def __init__(self, schema: pa.Schema, root: str, key: str):
        self.schema, self.root, self.key = schema, root, key

    def process(self, path: str):
        file_id = relative_id(path, self.root)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                parquet = pq.ParquetFile(handle)
                names, metadata = parquet.schema_arrow.names, parquet.metadata
                missing = [name for name in self.schema.names if name not in names]
                keys = _keys(parquet, self.key) if missing else []
        except PARQUET_ERRORS as exc:
            yield TaggedOutput("rejected", rejected_row(file_id, "read", "unreadable_parquet", _describe(exc)))
            return
        if missing:
            detail = f"{file_id}: no column {', '.join(missing)}"
            for row in range(metadata.num_rows):
                source_id = keys[row] if row < len(keys) and keys[row] is not None else f"{file_id}:{row}"
                yield TaggedOutput("rejected", rejected_row(source_id, "read", "missing_columns", detail))
            return
        first_row = 0
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            yield path, group, first_row, rows
            first_row += rows


def _keys(parquet: pq.ParquetFile, key: str) -> list:
    """The ``key`` column as strings, or [] where there is none to read."""
    if key not in parquet.schema_arrow.names:
        return []
    try:
        column = parquet.read(columns=[key]).column(key)
        return [None if value is None else str(value) for value in column.to_pylist()]
    except PARQUET_ERRORS:
        return []


class _ReadRowGroup(beam.DoFn):
    def __init__(self, schema: pa.Schema, root: str, key: str):
        self.schema, self.root, self.key = schema, root, key

    def process(self, item):
        path, group, first_row, rows = item
        file_id = relative_id(path, self.root)
        row_ids = [f"{file_id}:{first_row + row}" for row in range(rows)]
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                table = pq.ParquetFile(handle).read_row_group(group, columns=self.schema.names)
        except PARQUET_ERRORS as exc:  # a corrupt row group costs its rows, not the job
            for row_id in row_ids:
                yield TaggedOutput("rejected", rejected_row(row_id, "read", "unreadable_row_group", _describe(exc)))
            return
        try:
            table = table.select(self.schema.names).cast(self.schema)
        except PARQUET_ERRORS as exc:
            keys = table.column(self.key).to_pylist() if pa.types.is_string(table.schema.field(self.key).type) else []
            for row, row_id in enumerate(row_ids):
                source_id = keys[row] if row < len(keys) and keys[row] is not None else row_id
                yield TaggedOutput("rejected", rejected_row(source_id, "read", "mistyped_columns", _describe(exc)))
            return
        for row_id, row in zip(row_ids, table.to_pylist(), strict=True):
            if row[self.key] is None:
                yield TaggedOutput("rejected", rejected_row(row_id, "read", f"missing_{self.key}", "a null key"))
            else:
                yield row


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# collect ------------------------------------------------------------------------------------------------------
class ReadSpool(beam.PTransform):
    """The scraper's committed spool shards → ``{"records": media records, each with every hashtag its post was
    seen under, "rejected": rows of a damaged shard}``."""

    def __init__(self, spool_files: list[str], sighting_files: list[str]):
        super().__init__()
        self.spool_files = spool_files
        self.sighting_files = sighting_files

    def expand(self, pbegin):
        sightings = (
            pbegin
            | "SightingFiles" >> beam.Create(self.sighting_files)
            | "ReadSightings" >> ReadAllFromParquet()
            | "ByShortcode" >> beam.Map(lambda row: (row["shortcode"], row["hashtag"]))
        )
        root = self.spool_files[0].rsplit("/", 1)[0] if self.spool_files else ""
        shards = pbegin | "ReadSpoolShards" >> ReadCorpusTables(self.spool_files, MEDIA_RECORD, root, key="shortcode")
        records = shards["rows"] | "AllHashtags" >> beam.Map(_with_hashtags, AsMultiMap(sightings))
        return {"records": records, "rejected": shards["rejected"]}


def _with_hashtags(record: dict, sightings) -> dict:
    tags = set(record["hashtags_queried"] or []) | set(sightings[record["shortcode"]])
    return {**record, "hashtags_queried": sorted(tags)}


class ReadInstaloaderDirs(beam.PTransform):
    """instaloader download folders (as ``scraping.instaloader_dir.list_posts`` listed them on the launcher) →
    ``{"records": media records, "rejected": rows, "notes": summary keys}``.

    Each post's metadata is read in parallel; a post present in several folders (``#joanmiro/`` and ``#miro/``)
    is merged by shortcode (metadata only goes through the GroupByKey), then its images are read once, from one
    copy. A post that cannot be read is one ``read`` rejection per media file (the file's path as its id); a
    folder that could not be listed is one ``read`` rejection (``unreadable_folder``). ``notes`` holds a
    ``caption_file.decoded_as.ENCODING`` key per post whose ``.txt`` caption was not UTF-8.
    """

    def __init__(self, listing: FolderListing):
        super().__init__()
        self.listing = listing

    def expand(self, pbegin):
        read = (
            pbegin
            | "ListPosts" >> beam.Create(self.listing.posts)
            | "Spread" >> beam.Reshuffle()
            | "ReadMetadata" >> beam.ParDo(_ReadMetadata()).with_outputs("rejected", main="posts")
        )
        media = (
            read.posts
            | "GroupByShortcode" >> beam.GroupByKey()
            | "OneCopyPerPost" >> beam.Map(_one_copy)
            | "ReadMedia" >> beam.ParDo(_ReadMedia()).with_outputs("notes", main="records")
        )
        unlisted = [
            rejected_row(printable(folder), "read", "unreadable_folder", printable(error))
            for folder, error in self.listing.unreadable
        ]
        folders = pbegin | "UnreadableFolders" >> beam.Create(unlisted)
        rejected = (read.rejected, folders) | "ReadRejected" >> beam.Flatten()
        return {"records": media.records, "rejected": rejected, "notes": media.notes}


class _ReadMetadata(beam.DoFn):
    def setup(self):
        self.context = OfflineContext()

    def process(self, post_files: PostFiles):
        try:
            metadata = read_metadata(post_files, self.context)
        except UnreadablePost as exc:
            # instaloader's metadata of the hashtag or profile itself is no post and no input
            if exc.reason != "not_a_post" or post_files.media:
                for path in [path for _, path in post_files.item_paths()] or [post_files.metadata]:
                    yield TaggedOutput("rejected", rejected_row(printable(path), "read", exc.reason, exc.detail))
        else:
            yield metadata.shortcode, (post_files, metadata)


def _one_copy(group):
    _, copies = group
    copies = sorted(copies, key=lambda copy: (-len(copy[0].media), copy[0].source))
    post_files, metadata = copies[0]
    hashtags = sorted({files.hashtag for files, _ in copies if files.hashtag})
    return post_files, metadata, hashtags


class _ReadMedia(beam.DoFn):
    def process(self, post):
        post_files, metadata, hashtags = post
        if metadata.caption_decoded_as:
            yield TaggedOutput("notes", f"caption_file.decoded_as.{metadata.caption_decoded_as}")
        yield from media_records(post_files, metadata, hashtags)


class ToRawRows(beam.PTransform):
    """Media records → ``{"raw": RAW_CORPUS rows, "rejected": rows, "videos": ids}``.

    Images are decoded once to prove they are images and to measure them; the row keeps the bytes as
    fetched (``image_format`` from their magic number, ``sha256`` of those bytes).
    """

    def expand(self, records):
        out = records | "DecodeAndMeasure" >> beam.ParDo(_RawRow()).with_outputs("rejected", "videos", main="raw")
        return {"raw": out.raw, "rejected": out.rejected, "videos": out.videos}


class _RawRow(beam.DoFn):
    def process(self, record):
        source_id = record_id(record["shortcode"], record["index"])
        if record["kind"] == VIDEO:
            yield TaggedOutput("videos", source_id)
            return
        if record["kind"] == ERROR:
            reason, _, detail = (record["error"] or "download_failed").partition(": ")
            yield TaggedOutput("rejected", rejected_row(source_id, "fetch", reason, detail))
            return
        data = record["image"] or b""
        try:
            image = decode_image(data)
        except ImageRejected as exc:
            yield TaggedOutput("rejected", rejected_row(source_id, "decode", exc.reason, exc.detail))
            return
        yield {
            "id": source_id,
            "source": SOURCE,
            **{field.name: record[field.name] for field in MEDIA_FIELDS},
            "hashtags_queried": record["hashtags_queried"] or [],
            "caption_hashtags": record["caption_hashtags"] or [],
            "image": data,
            "image_format": sniff_format(data),
            "width": image.width,
            "height": image.height,
            "sha256": hashlib.sha256(data).hexdigest(),
        }


# clean --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CleanSettings:
    """The filters of ``pipelines.clean``. Instagram serves 320–1080 px wide, aspect 1.91:1 to 4:5."""

    min_side: int = 128
    max_aspect: float = 3.0
    max_pixels: int = MAX_PIXELS
    image_format: str = "jpeg"
    max_distance: int = DEFAULT_MAX_DISTANCE
    captions: CaptionFilter = field(default_factory=CaptionFilter)


class CleanCorpus(beam.PTransform):
    """Raw rows → ``{"clean": CLEAN_CORPUS rows, "rejected": rows, "caption_removals": keys}``.

    ``caption_removals`` has one ``caption.removed.{url,mention,emoji,ansi}`` key per item stripped, for the summary.
    """

    def __init__(self, settings: CleanSettings):
        super().__init__()
        self.settings = settings

    def expand(self, raw):
        checked = raw | "CaptionAndImage" >> beam.ParDo(_CleanRow(self.settings)).with_outputs(
            "rejected", "caption_removals", main="candidates"
        )
        deduped = checked.candidates | "DropDuplicates" >> DropDuplicates(self.settings.max_distance)
        rejected = (checked.rejected, deduped["rejected"]) | "AllRejected" >> beam.Flatten()
        return {"clean": deduped["clean"], "rejected": rejected, "caption_removals": checked.caption_removals}


class _CleanRow(beam.DoFn):
    """Caption first (cheap, and a junk caption spares the decode), then the image, decoded once."""

    def __init__(self, settings: CleanSettings):
        self.settings = settings

    def setup(self):
        load_models()

    def process(self, row):
        settings = self.settings
        rejection = settings.captions.length_rejection(row["caption"])
        if rejection is not None:
            yield TaggedOutput("rejected", rejected_row(row["id"], "caption", *rejection))
            return
        caption = clean_caption(row["caption"])
        removed = {"url": caption.urls, "mention": caption.mentions, "emoji": caption.emoji, "ansi": caption.ansi}
        for kind, count in removed.items():
            for _ in range(count):
                yield TaggedOutput("caption_removals", f"caption.removed.{kind}")
        rejection = settings.captions.rejection(caption)
        if rejection is not None:
            yield TaggedOutput("rejected", rejected_row(row["id"], "caption", *rejection))
            return
        try:
            image = decode_image(row["image"] or b"", min_side=settings.min_side, max_pixels=settings.max_pixels)
        except ImageRejected as exc:
            yield TaggedOutput("rejected", rejected_row(row["id"], "image", exc.reason, exc.detail))
            return
        aspect = max(image.size) / min(image.size)
        if aspect > settings.max_aspect:
            detail = f"{image.width}x{image.height} is {aspect:.2f}:1, above {settings.max_aspect}:1"
            yield TaggedOutput("rejected", rejected_row(row["id"], "image", "bad_aspect", detail))
            return
        try:
            encoded = encode_image(image, settings.image_format)
        except (OSError, ValueError) as exc:  # WebP stops at 16383 px a side, JPEG at 65535
            yield TaggedOutput("rejected", rejected_row(row["id"], "image", "unencodable", str(exc)))
            return
        yield {
            **row,
            "image": encoded,
            "image_format": settings.image_format,
            "width": image.width,
            "height": image.height,
            "sha256": hashlib.sha256(encoded).hexdigest(),
            "text": caption.text,
            "phash": phash(image),
        }


class DropDuplicates(beam.PTransform):
    """Clean candidates → ``{"clean": rows, "rejected": rows}``: exact duplicates (same ``sha256``) first, then
    near duplicates among the rest (``phash`` within ``max_distance`` bits); the lowest id survives.

    Only ``(id, sha256, phash)`` keys are shuffled; the rows (with their images) meet the decisions through
    a side input of the dropped ids, so image bytes never go through a GroupByKey.
    """

    def __init__(self, max_distance: int = DEFAULT_MAX_DISTANCE):
        super().__init__()
        self.max_distance = max_distance

    def expand(self, rows):
        # Decisions are keyed by id: a corpus holding one id twice (two collect runs read together) first
        # keeps one row per id, or the exact-duplicate step would drop both copies.
        unique_ids = rows | "OneRowPerId" >> DropRepeatedIds()
        candidates = unique_ids["rows"]
        keys = candidates | "DedupKeys" >> beam.Map(lambda row: (row["id"], row["sha256"], row["phash"]))
        exact = keys | "Exact" >> ExactDuplicates()
        near = exact.unique | "Near" >> NearDuplicates(self.max_distance)
        dropped = (
            exact.dropped | "ExactReason" >> beam.Map(lambda d: (d[0], ("exact_duplicate", f"kept {d[1]}"))),
            near | "NearReason" >> beam.Map(lambda d: (d[0], ("near_duplicate", f"kept {d[1]} (hamming {d[2]})"))),
        ) | "AllDropped" >> beam.Flatten()
        out = candidates | "ApplyDrops" >> beam.ParDo(_ApplyDrops(), AsDict(dropped)).with_outputs(
            "rejected", main="clean"
        )
        rejected = (unique_ids["rejected"], out.rejected) | "DedupRejected" >> beam.Flatten()
        return {"clean": out.clean, "rejected": rejected}


class DropRepeatedIds(beam.PTransform):
    """Rows → ``{"rows": one row per id, "rejected": the other copies}``.

    Only ids are counted through a shuffle; rows whose id is unique pass straight on, and only the rows of
    repeated ids (normally none) meet in a GroupByKey. Which copy stays is decided by content (lowest
    ``sha256``, then caption and time), so it is the same on every run.
    """

    def expand(self, rows):
        repeated = (
            rows
            | "Ids" >> beam.Map(lambda row: (row["id"], 1))
            | "CountIds" >> beam.CombinePerKey(sum)
            | "Repeated" >> beam.Filter(lambda item: item[1] > 1)
        )
        split = rows | "SplitRepeated" >> beam.ParDo(_SplitRepeated(), AsDict(repeated)).with_outputs(
            "repeated", main="unique"
        )

        def keep_one(group):
            row_id, copies = group
            kept, *others = sorted(copies, key=lambda row: (row["sha256"], row["caption"] or "", str(row["posted_at"])))
            yield kept
            for _ in others:
                yield TaggedOutput(
                    "rejected", rejected_row(row_id, "dedup", "duplicate_id", "another row with this id was kept")
                )

        resolved = (
            split.repeated
            | "ById" >> beam.Map(lambda row: (row["id"], row))
            | "GroupById" >> beam.GroupByKey()
            | "KeepOne" >> beam.FlatMap(keep_one).with_outputs("rejected", main="kept")
        )
        return {"rows": (split.unique, resolved.kept) | "OnePerId" >> beam.Flatten(), "rejected": resolved.rejected}


class _SplitRepeated(beam.DoFn):
    def process(self, row, repeated):
        yield TaggedOutput("repeated", row) if row["id"] in repeated else row


class _ApplyDrops(beam.DoFn):
    def process(self, row, dropped):
        decision = dropped.get(row["id"])
        if decision is None:
            yield row
        else:
            yield TaggedOutput("rejected", rejected_row(row["id"], "dedup", *decision))
