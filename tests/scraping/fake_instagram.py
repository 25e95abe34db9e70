"""A fake Instagram at the HTTP boundary instaloader uses: a ``requests`` transport adapter.

instaloader makes a new ``requests.Session`` for most requests (anonymous downloads, GraphQL copies of
the logged-in session, login), so the fixture mounts the adapter on every session created while it is
active. Responses have the JSON shapes instaloader 4.16 parses: ``api/v1/tags/web_info/`` for
``Hashtag.from_name``, ``graphql/query`` pages of ``edge_hashtag_to_media`` for ``get_posts_resumable``,
the ``xdt_api__v1__media__shortcode__web_info`` document for a carousel's full metadata, the login
endpoints, and image bytes from a CDN host. Failures (status + JSON, or an exception such as
``KeyboardInterrupt``) are scripted per resource and served before the normal answer.
"""

import http.client
import io
import json
import os
from collections import Counter, defaultdict
from urllib.parse import parse_qs, urlsplit

import requests
import urllib3
from instaloader import Instaloader, RateController

from scraping.session import Instagram, new_instagram
from tests.conftest import encode, make_image

HASHTAG_QUERY = "9b498c08113f1e09617a1703c22b2f32"
TEST_LOGIN_QUERY = "d6f4427fbe92d846298cf93df0b937d3"
POST_DOC_ID = "27128499623469141"
CDN = "https://scontent.cdninstagram.com/v/t51/"
SESSION_ID = "s3ss10n"
USERNAME = "tester"
PASSWORD = "correct horse battery staple"

CHECKPOINT = (400, {"message": "checkpoint_required", "status": "fail"})
TOO_MANY = (429, {"message": "rate limited", "status": "fail"})
PLEASE_WAIT = (401, {"message": "Please wait a few minutes before you try again.", "status": "fail"})


def jpeg(seed: int, width: int = 320, height: int = 240) -> bytes:
    return encode(make_image(width, height, seed=seed), "JPEG", quality=90)


def image_node(shortcode: str, timestamp: int, caption: str, owner: str = "7") -> dict:
    """A feed node as the hashtag query returns it: no username, no carousel children."""
    return {
        "__typename": "GraphImage",
        "id": str(int.from_bytes(shortcode.encode()[:8], "big")),
        "shortcode": shortcode,
        "display_url": f"{CDN}{shortcode}.jpg?stp=dst-jpg&oe=1",
        "is_video": False,
        "taken_at_timestamp": timestamp,
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}]},
        "owner": {"id": owner},
    }


def video_node(shortcode: str, timestamp: int, caption: str) -> dict:
    return {**image_node(shortcode, timestamp, caption), "__typename": "GraphVideo", "is_video": True}


def carousel_node(shortcode: str, timestamp: int, caption: str) -> dict:
    return {**image_node(shortcode, timestamp, caption), "__typename": "GraphSidecar"}


def carousel_media(node: dict, kinds: str) -> dict:
    """The full post (Polaris media item) for a carousel node; ``kinds`` like ``"ivi"`` (image, video, image)."""
    shortcode = node["shortcode"]
    children = []
    for position, kind in enumerate(kinds):
        child = {
            "media_type": 2 if kind == "v" else 1,
            "image_versions2": {"candidates": [{"url": f"{CDN}{shortcode}_{position}.jpg?oe=1"}]},
        }
        if kind == "v":
            child["video_versions"] = [{"url": f"{CDN}{shortcode}_{position}.mp4?oe=1"}]
        children.append(child)
    return {
        "code": shortcode,
        "pk": node["id"],
        "media_type": 8,
        "taken_at": node["taken_at_timestamp"],
        "user": {"pk": node["owner"]["id"], "username": "painter"},
        "caption": {"text": node["edge_media_to_caption"]["edges"][0]["node"]["text"]},
        "image_versions2": children[0]["image_versions2"],
        "carousel_media": children,
        "like_count": 3,
        "comment_count": 0,
    }


class FakeInstagram(requests.adapters.HTTPAdapter):
    def __init__(self):
        super().__init__()
        self.hashtag_pages: dict[str, list[list[dict]]] = {}
        self.full_posts: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.failures: dict[tuple, list] = defaultdict(list)
        self.log: list[tuple[str, str]] = []
        self.served: Counter = Counter()  # successful (200) responses per resource key

    # scenario building ------------------------------------------------------------------------------------------
    def add_hashtag(self, tag: str, pages: list[list[dict]]) -> None:
        self.hashtag_pages[tag] = pages
        for page in pages:
            for node in page:
                self.files.setdefault(node["display_url"].split("?")[0], jpeg(len(self.files) + 1))

    def fail(self, key: tuple, *responses) -> None:
        """Serve ``responses`` (``(status, json)`` or an exception to raise) for ``key`` before the normal answer.
        Keys: ``("page", tag, cursor)`` (cursor None for the first page), ``("post", shortcode)``, ``("file", url)``."""
        self.failures[key].extend(responses)

    # the adapter ------------------------------------------------------------------------------------------------
    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        url = urlsplit(request.url)
        base = f"{url.scheme}://{url.netloc}{url.path}"
        self.log.append((request.method, base))
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        if request.method == "POST" and request.body:
            body = request.body.decode() if isinstance(request.body, bytes) else request.body
            params.update({k: v[0] for k, v in parse_qs(body).items()})
        key, answer = self._route(request, base, params)
        if self.failures.get(key):
            failure = self.failures[key].pop(0)
            if isinstance(failure, BaseException):
                raise failure
            status, payload = failure
            return self._respond(request, status, json.dumps(payload).encode(), "application/json")
        self.served[key] += 1
        return answer()

    def _route(self, request, base, params):
        def json_answer(payload, status=200, cookies=()):
            return lambda: self._respond(request, status, json.dumps(payload).encode(), "application/json", cookies)

        if base.startswith(CDN):
            if base not in self.files:
                return ("file", base), lambda: self._respond(request, 404, b"not found", "text/plain")
            data = self.files[base]
            kind = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "text/html"
            return ("file", base), lambda: self._respond(request, 200, data, kind)
        if base == "https://www.instagram.com/":
            return ("home",), lambda: self._respond(
                request, 200, b"<html></html>", "text/html", ["csrftoken=t0k3n; Path=/"]
            )
        if base == "https://www.instagram.com/api/v1/web/accounts/login/ajax/":
            ok = params.get("username") == USERNAME and params.get("enc_password", "").endswith(":" + PASSWORD)
            payload = {"authenticated": ok, "user": True, "status": "ok"}
            cookies = ["csrftoken=t0k3n2; Path=/", f"sessionid={SESSION_ID}; Path=/", "ds_user_id=42; Path=/"]
            return ("login",), json_answer(payload, cookies=cookies if ok else ["csrftoken=t0k3n2; Path=/"])
        if base == "https://i.instagram.com/api/v1/tags/web_info/":
            tag = params["tag_name"]
            if tag not in self.hashtag_pages:
                return ("tag", tag), json_answer({"message": "not found", "status": "fail"}, status=404)
            count = sum(len(page) for page in self.hashtag_pages[tag])
            info = {"name": tag, "id": "17841", "media_count": count}
            return ("tag", tag), json_answer({"data": info, "status": "ok"})
        if base == "https://www.instagram.com/graphql/query":
            if params.get("query_hash") == TEST_LOGIN_QUERY:
                logged_in = f"sessionid={SESSION_ID}" in (request.headers.get("Cookie") or "")
                user = {"username": USERNAME} if logged_in else None
                return ("test_login",), json_answer({"data": {"user": user}, "status": "ok"})
            if params.get("query_hash") == HASHTAG_QUERY:
                variables = json.loads(params["variables"])
                tag, cursor = variables["tag_name"], variables.get("after")
                return ("page", tag, cursor), json_answer(self._page(tag, cursor))
            if params.get("doc_id") == POST_DOC_ID:
                shortcode = json.loads(params["variables"])["shortcode"]
                items = [self.full_posts[shortcode]] if shortcode in self.full_posts else []
                web_info = {"xdt_api__v1__media__shortcode__web_info": {"items": items}}
                return ("post", shortcode), json_answer({"data": web_info, "status": "ok"})
        raise AssertionError(f"the fake Instagram has no {request.method} {request.url}")

    def _page(self, tag: str, cursor: str | None) -> dict:
        pages = self.hashtag_pages[tag]
        number = int(cursor[1:]) if cursor else 0
        has_next = number + 1 < len(pages)
        media = {
            "count": sum(len(page) for page in pages),
            "page_info": {"has_next_page": has_next, "end_cursor": f"p{number + 1}" if has_next else None},
            "edges": [{"node": json.loads(json.dumps(node))} for node in pages[number]],
        }
        return {"data": {"hashtag": {"name": tag, "edge_hashtag_to_media": media}}, "status": "ok"}

    def _respond(self, request, status, body: bytes, content_type: str, cookies=()):
        message = http.client.HTTPMessage()
        message["Content-Type"] = content_type
        for cookie in cookies:
            message["Set-Cookie"] = cookie
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(body),
            headers=headers,
            status=status,
            reason=http.client.responses.get(status, ""),
            preload_content=False,
            decode_content=False,
            original_response=_HttplibResponse(message),
        )
        return self.build_response(request, raw)

    def fetched(self, url_prefix: str) -> int:
        """Successful fetches of the CDN file ``CDN + url_prefix`` (any extension)."""
        return sum(n for key, n in self.served.items() if key[0] == "file" and key[1].startswith(CDN + url_prefix))


class _HttplibResponse:
    """What requests reads Set-Cookie headers from (``.msg``) and urllib3 asks whether it is closed."""

    def __init__(self, message: http.client.HTTPMessage):
        self.msg = message

    def isclosed(self) -> bool:
        return False


class RecordingRateController(RateController):
    """instaloader's rate controller with its limits intact, but waits are recorded instead of slept."""

    def __init__(self, context):
        super().__init__(context)
        self.sleeps: list[float] = []

    def sleep(self, secs: float):
        self.sleeps.append(secs)


def test_instagram() -> Instagram:
    """The project's ``new_instagram`` without instaloader's random pauses and with recorded rate-limit waits."""
    return new_instagram(sleep=False, rate_controller=RecordingRateController)


test_instagram.__test__ = False  # a factory, not a test


def write_session_file(path: str, session_id: str = SESSION_ID) -> str:
    """A session file as instaloader writes it (``load_session`` + ``save_session_to_file``)."""
    loader = Instaloader(quiet=True)
    loader.load_session(USERNAME, {"sessionid": session_id, "csrftoken": "t0k3n", "ds_user_id": "42", "mid": "m"})
    loader.save_session_to_file(path)
    return path


def download_with_instaloader(root: str, tags=("joanmiro", "miro")) -> None:
    """Download folders as ``instaloader --login tester --no-videos "#joanmiro" "#miro"`` leaves them: instaloader's
    own ``download_hashtag`` (its jpg/txt naming, ``save_structure_to_file`` for the .json.xz) against the fake."""
    loader = Instaloader(
        sleep=False,
        quiet=True,
        dirname_pattern=os.path.join(root, "{target}"),
        download_videos=False,
        iphone_support=False,
        rate_controller=RecordingRateController,
    )
    loader.load_session(USERNAME, {"sessionid": SESSION_ID, "csrftoken": "t0k3n", "ds_user_id": "42", "mid": "m"})
    for tag in tags:
        loader.download_hashtag(tag, profile_pic=False)


def install(monkeypatch) -> FakeInstagram:
    """Mount a new fake on every ``requests.Session`` created from now on (until the test ends)."""
    fake = FakeInstagram()
    original_init = requests.Session.__init__

    def init(session, *args, **kwargs):
        original_init(session, *args, **kwargs)
        session.mount("https://", fake)
        session.mount("http://", fake)

    monkeypatch.setattr(requests.Session, "__init__", init)
    return fake


def miro_scenario(fake: FakeInstagram) -> None:
    """#joanmiro: an image, a carousel (image, video, image), a video, a post also under #miro, an image whose
    URL is gone (404), an "image" that is HTML; #miro: the shared post and one more. Page 2 of #joanmiro
    answers 429 once. Timestamps descend like a recent feed."""
    t = 1_700_000_000
    carousel = carousel_node("CAROUSEL1", t - 100, "Tres obras de #JoanMiro en la #fundaciojoanmiro")
    shared = image_node("SHARED01", t - 300, "Constellations by Joan Miró #joanmiro #miro")
    fake.add_hashtag(
        "joanmiro",
        [
            [
                image_node("IMAGE001", t, "Blue II #joanmiro @someone https://miro.org"),
                carousel,
                video_node("VIDEO001", t - 200, "A film about #miro"),
            ],
            [shared, image_node("GONE0001", t - 400, "lost #joanmiro")],
            [image_node("HTML0001", t - 500, "not an image #joanmiro")],
        ],
    )
    fake.add_hashtag("miro", [[shared, image_node("MIRO0001", t - 600, "El carnaval del arlequín #miro")]])
    fake.full_posts["CAROUSEL1"] = carousel_media(carousel, "ivi")
    fake.files[f"{CDN}CAROUSEL1_0.jpg"] = jpeg(101)
    fake.files[f"{CDN}CAROUSEL1_1.jpg"] = jpeg(103)  # the video's thumbnail: instaloader saves it, we never fetch it
    fake.files[f"{CDN}CAROUSEL1_2.jpg"] = jpeg(102, 240, 320)
    del fake.files[f"{CDN}GONE0001.jpg"]
    fake.files[f"{CDN}HTML0001.jpg"] = b"<html>login</html>"
    fake.fail(("page", "joanmiro", "p1"), TOO_MANY)
