"""Reading instaloader download folders (what ``instaloader "#miro"`` leaves on disk).

With instaloader's default ``--filename-pattern {date_utc}_UTC`` a post is a group of files sharing a
stem: ``2024-03-01_10-15-00_UTC.jpg`` (one image), ``…_UTC_1.jpg``, ``…_UTC_2.jpg`` (carousel positions
from 1), ``….mp4`` / ``…_N.mp4`` (videos, whose ``.jpg`` is only a thumbnail), ``….txt`` (the caption) and
``….json.xz`` (the post's metadata, turned into a ``Post`` by instaloader's own ``load_structure``).
Other stems work too as long as the metadata file is there. A folder named ``#tag`` (instaloader's
target for a hashtag) gives its posts that hashtag in ``hashtags_queried``.

Nothing is lost without a word: every image or video file belongs to a post (a file named like no post is a
post of its own, without metadata); a post that cannot be read raises ``UnreadablePost`` with a reason; an
item whose file is missing or unreadable becomes an ``error`` record. Symlinked folders are followed, each
real folder read once; a folder that cannot be listed is reported.

Nothing here touches the network: the structures are loaded into a context whose requests raise.
"""

import datetime
import json
import lzma
import os
import re
import stat
from collections import defaultdict
from dataclasses import dataclass, field

import instaloader
from instaloader import Post
from instaloader.exceptions import InstaloaderException
from instaloader.structures import load_structure

from scraping.records import ERROR, IMAGE, VIDEO, media_record, printable, utc

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4",)
METADATA_SUFFIXES = (".json.xz", ".json")
DATE_STEM = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$")
POSITION = re.compile(r"^(?P<stem>.+)_(?P<position>\d+)$")
# instaloader's hashtag pattern (structures._hashtag_regex), for captions read from a .txt
HASHTAG = re.compile(r"#(\w{1,150})")
# Instagram shortcodes are URL-safe base64; anything else would make an id (and a file name) of garbage.
SHORTCODE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A post's metadata is 2-50 KB of JSON; an image file is at most a few MB. Anything far larger is not what
# instaloader wrote, and reading it whole could exhaust a worker.
MAX_METADATA_BYTES = 16 << 20
MAX_IMAGE_FILE_BYTES = 256 << 20
# Instagram allows 2,200 characters per caption: a 1 MB .txt is not one.
MAX_CAPTION_FILE_BYTES = 1 << 20
# What instaloader's loader, json and the Post properties raise on a file that is not what it should be:
# LZMAError/EOFError (corrupt or cut xz), ValueError (JSON, UTF-8, a timestamp out of range), RecursionError
# (JSON nested too deep), AssertionError (Post() of a node without a shortcode), LookupError/TypeError (a field
# missing or of another type), OverflowError (a timestamp out of range).
METADATA_ERRORS = (
    OSError,
    EOFError,
    lzma.LZMAError,
    ValueError,
    RecursionError,
    AssertionError,
    LookupError,
    TypeError,
    ArithmeticError,
    InstaloaderException,
)


class UnreadablePost(Exception):
    """A post of a download folder that cannot be read. ``reason`` (a slug counted in summaries):
    ``missing_metadata``, ``corrupt_metadata`` (the bytes cannot be decompressed or parsed), ``bad_metadata``
    (parsed, but not a post instaloader wrote), ``not_a_post`` (instaloader's metadata of a hashtag or profile:
    an input only when media files share its name) or ``bad_caption_file``."""

    def __init__(self, reason: str, detail: str):
        detail = printable(detail)  # it names files, whose names may not be UTF-8
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class PostFiles:
    """The files of one post in one folder. ``media`` holds ``(position, path, is_video_file)``: position 0
    for a single-media post, N-1 for a carousel's ``_N`` files."""

    folder: str
    stem: str
    metadata: str | None
    caption: str | None
    media: tuple[tuple[int, str, bool], ...]
    hashtag: str | None

    @property
    def source(self) -> str:
        return os.path.join(self.folder, self.stem)

    def item_paths(self) -> list[tuple[int, str]]:
        """``(position, path)`` of each item on disk (its first file): what a rejection of the post names."""
        first: dict[int, str] = {}
        for position, path, _ in self.media:
            first.setdefault(position, path)
        return sorted(first.items())


@dataclass(frozen=True)
class PostMetadata:
    shortcode: str
    caption: str | None
    caption_hashtags: list[str]
    posted_at: datetime.datetime
    owner: str | None
    is_videos: tuple[bool, ...] | None
    # the encoding of a .txt caption that was not UTF-8 (counted in the summary), else None
    caption_decoded_as: str | None = None


@dataclass
class FolderListing:
    """What ``list_posts`` found: the posts, and what a user must hear about. ``unreadable``: ``(folder, error)``
    for a folder that could not be listed; ``links_followed``: symlinked folders read; ``links_already_read``:
    symlinks to a folder read under another name (a loop, or a second name), not read again."""

    posts: list[PostFiles] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    links_followed: list[str] = field(default_factory=list)
    links_already_read: list[str] = field(default_factory=list)


class OfflineContext(instaloader.InstaloaderContext):
    """A context for structures loaded from disk: a property that would need a request raises instead."""

    def __init__(self):
        super().__init__(sleep=False, quiet=True, iphone_support=False, max_connection_attempts=1)

    def _offline(self, *args, **kwargs):
        raise InstaloaderException("not available offline")

    get_json = graphql_query = doc_id_graphql_query = get_iphone_json = get_page_data = _offline
    get_raw = head = _offline


def list_posts(roots: list[str]) -> FolderListing:
    """Every post group under ``roots`` (recursively, symlinked folders followed), each real folder once."""
    listing = FolderListing()
    seen: set[str] = set()
    for root in roots:
        if not os.path.isdir(root):
            raise FileNotFoundError(root)
        pending = [root]
        while pending:
            folder = pending.pop()
            real = os.path.realpath(folder)
            if real in seen:
                if os.path.islink(folder):
                    listing.links_already_read.append(folder)
                continue
            seen.add(real)
            if os.path.islink(folder):
                listing.links_followed.append(folder)
            try:
                with os.scandir(folder) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as exc:
                listing.unreadable.append((folder, f"{type(exc).__name__}: {exc.strerror or exc}"))
                continue
            files = [entry.name for entry in entries if not _is_folder(entry)]
            listing.posts.extend(_posts_in_folder(folder, files))
            pending.extend(entry.path for entry in reversed(entries) if _is_folder(entry))
    listing.posts.sort(key=lambda post: (post.folder, post.stem))
    return listing


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _posts_in_folder(folder: str, names: list[str]) -> list[PostFiles]:
    metadata, captions, media_files = {}, {}, []
    for name in names:
        lower = name.lower()
        if lower.endswith(METADATA_SUFFIXES):
            metadata[name[: -len(next(s for s in METADATA_SUFFIXES if lower.endswith(s)))]] = name
        elif lower.endswith(".txt"):
            captions[name[:-4]] = name
        elif lower.endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES):
            media_files.append(name)
    known = set(metadata) | set(captions)
    media: dict[str, list[tuple[int, str, bool]]] = defaultdict(list)
    for name in media_files:
        base, suffix = os.path.splitext(name)
        is_video = suffix.lower() in VIDEO_SUFFIXES
        match = POSITION.match(base)
        if match and (match["stem"] in known or DATE_STEM.match(match["stem"])) and base not in known:
            media[match["stem"]].append((int(match["position"]) - 1, os.path.join(folder, name), is_video))
        else:  # a post of its own: ``photo.jpg`` without metadata is an input too, and will be refused
            media[base].append((0, os.path.join(folder, name), is_video))
    hashtag = folder_hashtag(folder)
    # A post whose metadata is there but none of its files (the download failed) is a post too.
    stems = set(media) | set(metadata)
    return [
        PostFiles(
            folder=folder,
            stem=stem,
            metadata=os.path.join(folder, metadata[stem]) if stem in metadata else None,
            caption=os.path.join(folder, captions[stem]) if stem in captions else None,
            media=tuple(sorted(media.get(stem, ()))),
            hashtag=hashtag,
        )
        for stem in sorted(stems)
    ]


def folder_hashtag(folder: str) -> str | None:
    """The hashtag of the nearest enclosing folder named ``#tag``, lowercased (``printable``)."""
    for part in reversed(os.path.normpath(folder).split(os.sep)):
        if part.startswith("#") and len(part) > 1:
            return printable(part[1:].lower())
    return None


def read_metadata(post_files: PostFiles, context: instaloader.InstaloaderContext | None = None) -> PostMetadata:
    """The post's metadata from its ``.json.xz`` (instaloader's loader), caption falling back to the ``.txt``."""
    path = post_files.metadata
    if path is None:
        raise UnreadablePost(
            "missing_metadata", f"{post_files.source}: no .json.xz metadata (downloaded with --no-metadata-json?)"
        )
    try:
        structure = _read_json(path)
    except METADATA_ERRORS as exc:
        raise UnreadablePost("corrupt_metadata", f"{path}: {_describe(exc)}") from None
    try:
        post = load_structure(context or OfflineContext(), structure)
        if not isinstance(post, Post):
            raise UnreadablePost("not_a_post", f"{path}: holds a {type(post).__name__}, not a Post")
        shortcode, caption = post.shortcode, post.caption
        posted_at = utc(_posted_at(post, post_files.stem))
    except METADATA_ERRORS as exc:
        raise UnreadablePost("bad_metadata", f"{path}: {_describe(exc)}") from None
    if not (isinstance(shortcode, str) and SHORTCODE.match(shortcode)):
        raise UnreadablePost("bad_metadata", f"{path}: {shortcode!r} is not an Instagram shortcode")
    if caption is not None and not isinstance(caption, str):
        raise UnreadablePost("bad_metadata", f"{path}: the caption is a {type(caption).__name__}")
    decoded_as = None
    if caption is None and post_files.caption is not None:
        caption, decoded_as = _read_caption_file(post_files.caption)
    return PostMetadata(
        shortcode=shortcode,
        caption=caption,
        caption_hashtags=HASHTAG.findall(caption.lower()) if caption else [],
        posted_at=posted_at,
        owner=_offline_or_none(lambda: str(post.owner_id)),
        is_videos=_offline_or_none(lambda: tuple(bool(is_video) for is_video in post.get_is_videos())),
        caption_decoded_as=decoded_as,
    )


def _read_json(path: str):
    """The JSON in ``path`` (``.json.xz`` or ``.json``), always UTF-8: instaloader's own loader reads text in the
    locale's encoding, so the same file would read differently on another machine."""
    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rb") as handle:
        data = handle.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise ValueError(f"more than {MAX_METADATA_BYTES >> 20} MB of JSON")
    return json.loads(data.decode("utf-8"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _read_caption_file(path: str) -> tuple[str | None, str | None]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CAPTION_FILE_BYTES + 1)
    except OSError as exc:
        raise UnreadablePost("bad_caption_file", f"{path}: {_describe(exc)}") from None
    if len(data) > MAX_CAPTION_FILE_BYTES:
        raise UnreadablePost("bad_caption_file", f"{path}: more than {MAX_CAPTION_FILE_BYTES >> 20} MB, not a caption")
    text, encoding = decode_caption(data)
    if "\x00" in text:
        raise UnreadablePost("bad_caption_file", f"{path}: binary data, not a caption")
    return text.rstrip("\r\n") or None, encoding


def decode_caption(data: bytes) -> tuple[str, str | None]:
    """A caption file's text, and the encoding it was in when that was not UTF-8 (else None).

    instaloader writes UTF-8. A file edited on Windows may be UTF-16 (with a byte-order mark) or cp1252
    (Windows' Latin-1, which adds “ ” – € in 0x80-0x9F); Latin-1 decodes whatever is left, so a caption
    always reads, and the summary says how many did not read as UTF-8.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _posted_at(post: Post, stem: str) -> datetime.datetime:
    try:
        return post.date_utc
    except KeyError:
        return datetime.datetime.strptime(stem[:23], "%Y-%m-%d_%H-%M-%S_UTC")


def _offline_or_none(read):
    try:
        return read()
    except (LookupError, TypeError, InstaloaderException):
        return None


def media_records(post_files: PostFiles, metadata: PostMetadata, hashtags: list[str]) -> list[dict]:
    """One record per carousel position: the image's bytes, or ``video`` when the position is a video
    (by the metadata, else by a ``.mp4`` beside it; its ``.jpg`` is a thumbnail and is not read), or ``error``
    when its file is missing (a position the metadata names, or a post with no file at all) or unreadable."""
    fields = {
        "shortcode": metadata.shortcode,
        "hashtags_queried": sorted(hashtags),
        "caption": metadata.caption,
        "caption_hashtags": metadata.caption_hashtags,
        "posted_at": metadata.posted_at,
        "owner": metadata.owner,
    }
    by_position: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    for position, path, is_video_file in post_files.media:
        by_position[position].append((path, is_video_file))
    positions = set(by_position) | set(range(len(metadata.is_videos or ()))) or {0}
    records = []
    for position in sorted(positions):
        files = by_position.get(position, [])
        is_video = any(is_video_file for _, is_video_file in files)
        if metadata.is_videos is not None and position < len(metadata.is_videos):
            is_video = metadata.is_videos[position]
        images = [path for path, is_video_file in files if not is_video_file]
        if is_video:
            records.append(media_record(fields, position, VIDEO))
        elif not images:
            missing = f"{post_files.source}: no image file for position {position} (the download failed?)"
            records.append(media_record(fields, position, ERROR, error=f"no_media_file: {missing}"))
        else:
            data, error = read_image_file(images[0])
            records.append(
                media_record(fields, position, IMAGE, image=data)
                if error is None
                else media_record(fields, position, ERROR, error=error)
            )
    return records


def read_image_file(path: str) -> tuple[bytes | None, str | None]:
    """A media file's bytes, or ``(None, "reason: detail")``: ``not_a_file`` (a FIFO or device would block or
    stream forever), ``file_too_large``, ``unreadable_file`` (gone, a dangling link, no permission)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return None, f"not_a_file: {path}"
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            return None, f"file_too_large: {path}: {info.st_size} bytes"
        with open(path, "rb") as handle:
            return handle.read(), None
    except OSError as exc:
        return None, f"unreadable_file: {path}: {_describe(exc)}"
