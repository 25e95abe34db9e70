"""Reading download folders that instaloader itself wrote (its download_hashtag against the fake Instagram), and
the hostile variants of that format: corrupt metadata, captions in other encodings, symlinks, odd files."""

import json
import lzma
import os

import pytest

from scraping.instaloader_dir import (
    UnreadablePost,
    decode_caption,
    folder_hashtag,
    list_posts,
    media_records,
    read_metadata,
)
from tests.scraping import fake_instagram as fi

STEM = "2024-03-01_10-15-00_UTC"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("downloads")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fake = fi.install(monkeypatch)
        fi.miro_scenario(fake)
        fi.download_with_instaloader(str(root))
    return root, fake


def by_shortcode(root):
    posts = {}
    for post_files in list_posts([str(root)]).posts:
        if post_files.stem.startswith("#"):
            continue  # instaloader's metadata of the hashtag itself
        metadata = read_metadata(post_files)
        posts.setdefault(metadata.shortcode, []).append((post_files, metadata))
    return posts


def post_node(shortcode="HOSTILE1", caption: str | None = "Blue II #joanmiro", **extra) -> dict:
    """A post's node as instaloader's ``save_structure_to_file`` writes it."""
    node = {"__typename": "GraphImage", "shortcode": shortcode, "taken_at_timestamp": 1_709_288_100, **extra}
    if caption is not None:
        node["edge_media_to_caption"] = {"edges": [{"node": {"text": caption}}]}
    return {"node": node, "instaloader": {"version": "4.16", "node_type": "Post"}}


def write_post(folder, metadata: bytes | dict | None, image: bytes | None = None, stem: str = STEM):
    folder.mkdir(parents=True, exist_ok=True)
    if metadata is not None:
        data = lzma.compress(json.dumps(metadata).encode()) if isinstance(metadata, dict) else metadata
        (folder / f"{stem}.json.xz").write_bytes(data)
    (folder / f"{stem}.jpg").write_bytes(fi.jpeg(1) if image is None else image)
    return folder


def only_post(root):
    (post,) = list_posts([str(root)]).posts
    return post


def test_posts_are_grouped_by_stem_with_carousel_positions(folders):
    root, _ = folders
    posts = by_shortcode(root)
    # GONE0001 was never saved (404); HTML0001's "image" was saved as .html: metadata without a media file
    assert sorted(posts) == ["CAROUSEL1", "HTML0001", "IMAGE001", "MIRO0001", "SHARED01", "VIDEO001"]
    assert len(posts["SHARED01"]) == 2  # one copy per hashtag folder
    carousel_files, carousel = posts["CAROUSEL1"][0]
    assert [position for position, _, _ in carousel_files.media] == [0, 1, 2]  # from _1.jpg, _2.jpg, _3.jpg
    assert carousel_files.hashtag == "joanmiro"
    assert carousel.is_videos == (False, True, False)
    assert carousel.caption == "Tres obras de #JoanMiro en la #fundaciojoanmiro"
    assert carousel.caption_hashtags == ["joanmiro", "fundaciojoanmiro"]
    assert carousel.owner == "7" and carousel.posted_at.isoformat() == "2023-11-14T22:11:40+00:00"


def test_video_thumbnails_are_not_taken_for_images(folders):
    root, fake = folders
    posts = by_shortcode(root)
    carousel = media_records(*posts["CAROUSEL1"][0], ["joanmiro"])
    assert [(r["index"], r["kind"]) for r in carousel] == [(0, "image"), (1, "video"), (2, "image")]
    assert carousel[2]["image"] == fake.files[f"{fi.CDN}CAROUSEL1_2.jpg"]
    assert carousel[1]["image"] is None
    video = media_records(*posts["VIDEO001"][0], ["joanmiro"])
    assert [(r["index"], r["kind"]) for r in video] == [(0, "video")]


def test_metadata_without_its_image_is_an_error_record_not_nothing(folders):
    root, _ = folders
    (html,) = media_records(*by_shortcode(root)["HTML0001"][0], ["joanmiro"])
    assert (html["index"], html["kind"]) == (0, "error") and html["error"].startswith("no_media_file: ")


def test_a_missing_carousel_file_is_an_error_record(tmp_path):
    node = post_node(
        __typename="GraphSidecar",
        edge_sidecar_to_children={"edges": [{"node": {"is_video": False}}, {"node": {"is_video": False}}]},
    )
    folder = tmp_path / "#miro"
    folder.mkdir()
    (folder / f"{STEM}.json.xz").write_bytes(lzma.compress(json.dumps(node).encode()))
    (folder / f"{STEM}_1.jpg").write_bytes(fi.jpeg(1))  # _2.jpg never arrived
    post = only_post(tmp_path)
    records = media_records(post, read_metadata(post), ["miro"])
    assert [(r["index"], r["kind"]) for r in records] == [(0, "image"), (1, "error")]
    assert records[1]["error"].startswith("no_media_file: ")


def test_a_post_without_metadata_is_refused_and_other_json_is_not_a_post(folders, tmp_path):
    root, _ = folders
    folder = tmp_path / "#miro"
    folder.mkdir()
    jpg = next(p for p in os.listdir(root / "#miro") if p.endswith(".jpg"))
    (folder / "2020-01-01_00-00-00_UTC.jpg").write_bytes((root / "#miro" / jpg).read_bytes())
    (folder / "#miro.json.xz").write_bytes((root / "#miro" / "#miro.json.xz").read_bytes())  # hashtag, not a post
    hashtag, post = list_posts([str(tmp_path)]).posts
    assert (hashtag.stem, hashtag.media, post.stem) == ("#miro", (), "2020-01-01_00-00-00_UTC")
    with pytest.raises(UnreadablePost, match="no .json.xz metadata") as refused:
        read_metadata(post)
    assert refused.value.reason == "missing_metadata"
    with pytest.raises(UnreadablePost, match="holds a Hashtag") as refused:
        read_metadata(hashtag)
    assert refused.value.reason == "not_a_post"


def test_every_media_file_belongs_to_a_post_even_without_a_post_name(tmp_path):
    """An image named like no instaloader post is still an input: it is refused for its missing metadata."""
    (tmp_path / "photo.jpg").write_bytes(fi.jpeg(1))
    (tmp_path / "notes.md").write_text("not media")
    post = only_post(tmp_path)
    assert post.stem == "photo" and post.item_paths() == [(0, str(tmp_path / "photo.jpg"))]
    with pytest.raises(UnreadablePost) as refused:
        read_metadata(post)
    assert refused.value.reason == "missing_metadata"


CORRUPT = {
    "corrupt xz data (LZMAError)": b"\xfd7zXZ\x00\x00garbage",
    "empty file": b"",
    "truncated xz": lzma.compress(json.dumps(post_node()).encode())[:30],
    "not JSON": lzma.compress(b"<html>"),
    "JSON nested too deep": lzma.compress(b"[" * 100_000 + b"]" * 100_000),
    "not UTF-8": lzma.compress('{"node": "caf\xe9"}'.encode("latin-1")),
}
BAD = {
    "a number": 5,
    "null": None,
    "a list": [1, 2],
    "a node without a shortcode": {"node": {"taken_at_timestamp": 5}, "instaloader": {"node_type": "Post"}},
    "a node that is a list": {"node": [], "instaloader": {"node_type": "Post"}},
    "a timestamp that is a word": post_node(taken_at_timestamp="yesterday"),
    "a timestamp out of range": post_node(taken_at_timestamp=10**20),
    "a caption that is a number": post_node(caption=5),
    "a shortcode that is a number": post_node(shortcode=5),
    "a shortcode that is no shortcode": post_node(shortcode="../../etc"),
}


@pytest.mark.parametrize(
    "data, reason",
    [(data, "corrupt_metadata") for data in CORRUPT.values()]
    + [(lzma.compress(json.dumps(value).encode()), "bad_metadata") for value in BAD.values()],
    ids=list(CORRUPT) + list(BAD),
)
def test_unreadable_metadata_is_a_reason_not_a_traceback(tmp_path, data, reason):
    post = only_post(write_post(tmp_path, data))
    with pytest.raises(UnreadablePost) as refused:
        read_metadata(post)
    assert refused.value.reason == reason
    assert str(post.metadata) in refused.value.detail


def test_plain_json_metadata_is_read_as_utf8_whatever_the_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")  # instaloader's own loader opens text files in the locale's encoding
    folder = tmp_path / "#miro"
    folder.mkdir()
    (folder / f"{STEM}.json").write_text(json.dumps(post_node(caption="Miró"), ensure_ascii=False), "utf-8")
    (folder / f"{STEM}.jpg").write_bytes(fi.jpeg(1))
    assert read_metadata(only_post(tmp_path)).caption == "Miró"


@pytest.mark.parametrize(
    "data, caption, encoding",
    [
        ("Constel·lació de Miró #joanmiro".encode(), "Constel·lació de Miró #joanmiro", None),
        ("Constel·lació de Miró #joanmiro".encode("latin-1"), "Constel·lació de Miró #joanmiro", "cp1252"),
        ("“Miró” – 1940 €".encode("cp1252"), "“Miró” – 1940 €", "cp1252"),
        (b"\x81\x8d Mir\xf3", "\x81\x8d Miró", "latin-1"),  # bytes cp1252 leaves undefined
        ("\ufeffMiró".encode(), "Miró", None),  # a UTF-8 byte-order mark is not part of the caption
        ("Miró #joanmiro".encode("utf-16"), "Miró #joanmiro", "utf-16"),  # Windows Notepad's "Unicode"
    ],
)
def test_a_caption_file_in_another_encoding_is_decoded_and_says_so(tmp_path, data, caption, encoding):
    assert decode_caption(data) == (caption, encoding)
    folder = write_post(tmp_path, post_node(caption=None))
    (folder / f"{STEM}.txt").write_bytes(data)
    metadata = read_metadata(only_post(tmp_path))
    assert (metadata.caption, metadata.caption_decoded_as) == (caption, encoding)
    assert metadata.caption_hashtags == (["joanmiro"] if "#joanmiro" in caption else [])


@pytest.mark.parametrize("data", [fi.jpeg(1), b"x" * (2 << 20)], ids=["binary", "2 MB"])
def test_a_caption_file_that_is_no_caption_is_refused(tmp_path, data):
    folder = write_post(tmp_path, post_node(caption=None))
    (folder / f"{STEM}.txt").write_bytes(data)
    with pytest.raises(UnreadablePost) as refused:
        read_metadata(only_post(tmp_path))
    assert refused.value.reason == "bad_caption_file"


def test_an_image_file_that_cannot_be_read_is_an_error_record_and_the_others_are_read(tmp_path):
    node = post_node(
        __typename="GraphSidecar",
        edge_sidecar_to_children={"edges": [{"node": {"is_video": False}} for _ in range(3)]},
    )
    folder = tmp_path / "#miro"
    folder.mkdir()
    (folder / f"{STEM}.json.xz").write_bytes(lzma.compress(json.dumps(node).encode()))
    (folder / f"{STEM}_1.jpg").write_bytes(fi.jpeg(1))
    os.symlink(tmp_path / "gone.jpg", folder / f"{STEM}_2.jpg")  # dangling
    os.mkfifo(folder / f"{STEM}_3.jpg")  # reading a FIFO would wait forever
    post = only_post(tmp_path)
    records = media_records(post, read_metadata(post), ["miro"])
    assert [(r["index"], r["kind"]) for r in records] == [(0, "image"), (1, "error"), (2, "error")]
    assert records[1]["error"].startswith("unreadable_file: ") and records[2]["error"].startswith("not_a_file: ")


def test_symlinked_folders_are_followed_once_and_repeats_reported(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    write_post(root / "#miro", post_node("INSIDE01"))
    write_post(elsewhere / "#joanmiro", post_node("OUTSIDE1"))
    os.symlink(elsewhere / "#joanmiro", root / "#joanmiro")  # a folder kept on another disk
    os.symlink(root / "#miro", root / "again")  # a second name for a folder read already
    os.symlink(root, root / "#miro" / "loop")  # a loop
    listing = list_posts([str(root)])
    assert sorted(read_metadata(post).shortcode for post in listing.posts) == ["INSIDE01", "OUTSIDE1"]
    assert [post.hashtag for post in listing.posts] == ["joanmiro", "miro"]
    assert listing.links_followed == [str(root / "#joanmiro")]
    assert sorted(listing.links_already_read) == [str(root / "#miro" / "loop"), str(root / "again")]


def test_a_folder_that_cannot_be_listed_is_reported(tmp_path, monkeypatch):
    write_post(tmp_path / "#miro", post_node())
    (tmp_path / "#locked").mkdir()
    scandir = os.scandir

    def refuse_locked(path):
        if str(path).endswith("#locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    listing = list_posts([str(tmp_path)])
    assert len(listing.posts) == 1
    ((folder, error),) = listing.unreadable
    assert folder == str(tmp_path / "#locked") and "Permission denied" in error


def test_the_same_folder_given_twice_is_read_once(tmp_path):
    write_post(tmp_path / "#miro", post_node())
    assert len(list_posts([str(tmp_path), str(tmp_path / "#miro")]).posts) == 1


def test_folder_hashtag():
    assert folder_hashtag("/data/#JoanMiro/sub") == "joanmiro"
    assert folder_hashtag("/data/painter") is None
