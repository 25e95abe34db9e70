"""Reading instaloader download folders (what ``instaloader "#miro"`` leaves on disk).

With instaloader's default ``--filename-pattern {date_utc}_UTC`` a post is a group of files sharing a
stem: ``2024-03-01_10-15-00_UTC.jpg`` (one image), ``…_UTC_1.jpg``, ``…_UTC_2.jpg`` (carousel positions
from 1), ``….mp4`` / ``…_N.mp4`` (videos, whose ``.jpg`` is only a thumbnail), ``….txt`` (the caption) and
``….json.xz`` (the post's metadata, loaded here with instaloader's own ``load_structure_from_file``).
Other stems work too as long as the metadata file is there. A folder named ``#tag`` (instaloader's
target for a hashtag) gives its posts that hashtag in ``hashtags_queried``.

Nothing here touches the network: the structures are loaded into a context whose requests raise.
"""

import datetime
import os
import re
from collections import defaultdict
from dataclasses import dataclass

import instaloader
from instaloader import Post
from instaloader.exceptions import InstaloaderException
from instaloader.structures import load_structure_from_file

from scraping.records import IMAGE, VIDEO, media_record, utc

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4",)
METADATA_SUFFIXES = (".json.xz", ".json")
DATE_STEM = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_UTC$")
POSITION = re.compile(r"^(?P<stem>.+)_(?P<position>\d+)$")
# instaloader's hashtag pattern (structures._hashtag_regex), for captions read from a .txt
HASHTAG = re.compile(r"#(\w{1,150})")


class MetadataMissing(Exception):
    """A post folder entry without a usable ``.json``/``.json.xz``: no shortcode, so no id."""


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


@dataclass(frozen=True)
class PostMetadata:
    shortcode: str
    caption: str | None
    caption_hashtags: list[str]
    posted_at: datetime.datetime
    owner: str | None
    is_videos: tuple[bool, ...] | None


class OfflineContext(instaloader.InstaloaderContext):
    """A context for structures loaded from disk: a property that would need a request raises instead."""

    def __init__(self):
        super().__init__(sleep=False, quiet=True, iphone_support=False, max_connection_attempts=1)

    def _offline(self, *args, **kwargs):
        raise InstaloaderException("not available offline")

    get_json = graphql_query = doc_id_graphql_query = get_iphone_json = get_page_data = _offline
    get_raw = head = _offline


def find_posts(root: str) -> list[PostFiles]:
    """Every post group under ``root`` (recursively), sorted by path."""
    if not os.path.isdir(root):
        raise FileNotFoundError(root)
    posts = []
    for folder, _, names in sorted(os.walk(root)):
        posts.extend(_posts_in_folder(folder, sorted(names)))
    return posts


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
        if base in known or DATE_STEM.match(base):
            media[base].append((0, os.path.join(folder, name), is_video))
        elif match and (match["stem"] in known or DATE_STEM.match(match["stem"])):
            media[match["stem"]].append((int(match["position"]) - 1, os.path.join(folder, name), is_video))
    hashtag = folder_hashtag(folder)
    return [
        PostFiles(
            folder=folder,
            stem=stem,
            metadata=os.path.join(folder, metadata[stem]) if stem in metadata else None,
            caption=os.path.join(folder, captions[stem]) if stem in captions else None,
            media=tuple(sorted(items)),
            hashtag=hashtag,
        )
        for stem, items in sorted(media.items())
    ]


def folder_hashtag(folder: str) -> str | None:
    """The hashtag of the nearest enclosing folder named ``#tag``, lowercased."""
    for part in reversed(os.path.normpath(folder).split(os.sep)):
        if part.startswith("#") and len(part) > 1:
            return part[1:].lower()
    return None


def read_metadata(post_files: PostFiles, context: instaloader.InstaloaderContext | None = None) -> PostMetadata:
    """The post's metadata from its ``.json.xz`` (instaloader's loader), caption falling back to the ``.txt``."""
    if post_files.metadata is None:
        raise MetadataMissing(f"{post_files.source}: no .json.xz metadata (downloaded with --no-metadata-json?)")
    try:
        post = load_structure_from_file(context or OfflineContext(), post_files.metadata)
    except (OSError, ValueError, EOFError, InstaloaderException) as exc:
        raise MetadataMissing(f"{post_files.metadata}: {exc}") from None
    if not isinstance(post, Post):
        raise MetadataMissing(f"{post_files.metadata}: holds a {type(post).__name__}, not a Post")
    caption = post.caption
    if caption is None and post_files.caption is not None:
        with open(post_files.caption, encoding="utf-8") as handle:
            caption = handle.read().rstrip("\n") or None
    return PostMetadata(
        shortcode=post.shortcode,
        caption=caption,
        caption_hashtags=HASHTAG.findall(caption.lower()) if caption else [],
        posted_at=utc(_posted_at(post, post_files.stem)),
        owner=_offline_or_none(lambda: str(post.owner_id)),
        is_videos=_offline_or_none(lambda: tuple(post.get_is_videos())),
    )


def _posted_at(post: Post, stem: str) -> datetime.datetime:
    try:
        return post.date_utc
    except KeyError:
        return datetime.datetime.strptime(stem[:23], "%Y-%m-%d_%H-%M-%S_UTC")


def _offline_or_none(read):
    try:
        return read()
    except (KeyError, TypeError, InstaloaderException):
        return None


def media_records(post_files: PostFiles, metadata: PostMetadata, hashtags: list[str]) -> list[dict]:
    """One record per carousel position: the image's bytes, or ``video`` when the position is a video
    (by the metadata, else by a ``.mp4`` beside it; its ``.jpg`` is a thumbnail and is not read)."""
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
    records = []
    for position, files in sorted(by_position.items()):
        is_video = any(is_video_file for _, is_video_file in files)
        if metadata.is_videos is not None and position < len(metadata.is_videos):
            is_video = metadata.is_videos[position]
        images = [path for path, is_video_file in files if not is_video_file]
        if is_video or not images:
            records.append(media_record(fields, position, VIDEO))
            continue
        with open(images[0], "rb") as handle:
            records.append(media_record(fields, position, IMAGE, image=handle.read()))
    return records
