"""Reading download folders that instaloader itself wrote (its download_hashtag against the fake Instagram)."""

import os

import pytest

from scraping.instaloader_dir import MetadataMissing, find_posts, folder_hashtag, media_records, read_metadata
from tests.scraping import fake_instagram as fi


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
    for post_files in find_posts(str(root)):
        metadata = read_metadata(post_files)
        posts.setdefault(metadata.shortcode, []).append((post_files, metadata))
    return posts


def test_posts_are_grouped_by_stem_with_carousel_positions(folders):
    root, _ = folders
    posts = by_shortcode(root)
    # GONE0001 was never saved (404); HTML0001 was saved as .html, which is no image
    assert sorted(posts) == ["CAROUSEL1", "IMAGE001", "MIRO0001", "SHARED01", "VIDEO001"]
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


def test_a_post_without_metadata_is_refused_and_other_json_is_ignored(folders, tmp_path):
    root, _ = folders
    folder = tmp_path / "#miro"
    folder.mkdir()
    jpg = next(p for p in os.listdir(root / "#miro") if p.endswith(".jpg"))
    (folder / "2020-01-01_00-00-00_UTC.jpg").write_bytes((root / "#miro" / jpg).read_bytes())
    (folder / "#miro.json.xz").write_bytes((root / "#miro" / "#miro.json.xz").read_bytes())  # hashtag, not a post
    posts = find_posts(str(tmp_path))
    assert [p.stem for p in posts] == ["2020-01-01_00-00-00_UTC"]
    with pytest.raises(MetadataMissing, match="no .json.xz metadata"):
        read_metadata(posts[0])


def test_folder_hashtag():
    assert folder_hashtag("/data/#JoanMiro/sub") == "joanmiro"
    assert folder_hashtag("/data/painter") is None
