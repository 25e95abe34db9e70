"""The same emoji drawn by several vendors, from the npm registry: a drawing-style shift (PACS-like).

Each vendor's images come in an ``emoji-datasource-<vendor>`` package (``img/<vendor>/64/<code points>.png`` and
``emoji.json``, whose ``category``/``subcategory`` give the classes). A package is fetched by name and version
from the registry's tarball address (npm's layout, ``<registry>/<name>/-/<name>-<version>.tgz``), its sha512
checked against the digest pinned here (the registry's ``dist.integrity``), and only ``emoji.json`` and the 64 px
PNGs are kept, in the user's cache (``models.style.registry.cache_dir()/npm/<name>-<version>``, written to a
temporary folder and renamed into place, so a half-written cache is never read). Nothing is committed to the
repository; offline, the fetch fails with one line that says what it needs.

Licences of the images (emoji-datasource's README; the packages' own MIT licence covers its code and data):
Google's Noto Emoji, Apache-2.0; Twitter's Twemoji, CC-BY-4.0; Facebook's, "no clear licensing": used locally as
a measurement, never redistributed, and left out by ``--vendors google,twitter``. Apple's are excluded ("not
licensed for commercial usage"). OpenMoji (CC-BY-SA-4.0) ships SVG only, which nothing here rasterises.
"""

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.common.errors import StylebeamError
from models.style.registry import cache_dir

REGISTRY = "https://registry.npmjs.org"
IMAGE_FOLDER = "64"  # the 64 px PNGs; the sprite sheets are not read


class EmojiFetchError(StylebeamError):
    """A vendor package could not be fetched or did not verify."""


@dataclass(frozen=True)
class NpmPackage:
    vendor: str
    name: str
    version: str
    integrity: str  # "sha512-<base64>", the registry's dist.integrity
    licence: str  # of the images

    @property
    def tarball(self) -> str:
        """The tarball's path under the registry (npm's layout)."""
        return f"{self.name}/-/{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    @property
    def cache_name(self) -> str:
        return f"{self.name.replace('/', '_')}-{self.version}"


VENDORS = {
    "google": NpmPackage(
        "google",
        "emoji-datasource-google",
        "16.0.0",
        "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
        "Apache-2.0 (Noto Emoji)",
    ),
    "twitter": NpmPackage(
        "twitter",
        "emoji-datasource-twitter",
        "16.0.0",
        "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
        "CC-BY-4.0 (Twemoji)",
    ),
    "facebook": NpmPackage(
        "facebook",
        "emoji-datasource-facebook",
        "16.0.0",
        "sha512-b9ZxJdB7nMWGckH1vyCjPSosaa6MJYuojPPFiQ0LmDIZS8vlG454XKcmTFKrXIMAA72O4MRJMYFhvWI8pjyciQ==",
        "no clear licence (emoji-datasource README); used locally, never redistributed",
    ),
}
DEFAULT_VENDORS = ("google", "twitter", "facebook")
# Eight sub-categories with at least 26 emoji drawn by all three vendors (emoji-datasource 16.0.0), of distinct
# kinds (animals, vehicles, weather, clothes, dishes, faces, buildings, sports).
CLASSES = (
    "animal-mammal",
    "transport-ground",
    "sky & weather",
    "clothing",
    "food-prepared",
    "face-concerned",
    "place-building",
    "sport",
)
MAX_PER_CLASS = 36  # the first 36 by sort order: classes stay within 26–36 emoji each


@dataclass
class VendorImages:
    package: NpmPackage
    catalogue: list[dict]  # emoji.json
    folder: Path  # <cache>/<name>-<version>/64

    def pixels(self, image: str, size: int, background: float = 1.0) -> np.ndarray:
        """One emoji, alpha-composited on a flat ``background`` grey, ``(size, size, 3)`` uint8."""
        with Image.open(self.folder / image) as file:
            rgba = np.asarray(file.convert("RGBA"), np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + background * (1 - rgba[..., 3:])
        out = Image.fromarray((rgb * 255).round().astype(np.uint8))
        if out.size != (size, size):
            out = out.resize((size, size), Image.Resampling.BICUBIC if size > out.size[0] else Image.Resampling.BOX)
        return np.asarray(out, np.uint8)


def fetch_vendor(package: NpmPackage, registry: str = REGISTRY, cache: Path | None = None) -> VendorImages:
    """The vendor's ``emoji.json`` and 64 px PNGs, from the cache or fetched, verified and cached."""
    root = (cache or cache_dir()) / "npm"
    target = root / package.cache_name
    if not (target / "emoji.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{package.cache_name}.") as scratch:
            tarball = Path(scratch) / "package.tgz"
            _download(f"{registry.rstrip('/')}/{package.tarball}", tarball, package)
            _verify(tarball, package)
            staged = Path(scratch) / "staged"
            _extract(tarball, staged, package)
            try:
                os.replace(staged, target)  # atomic: a reader sees the whole folder or none
            except OSError:
                if not (target / "emoji.json").is_file():  # not another process's finished copy
                    raise
    catalogue = json.loads((target / "emoji.json").read_text())
    return VendorImages(package, catalogue, target / IMAGE_FOLDER)


def _download(url: str, path: Path, package: NpmPackage) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EmojiFetchError(
            f"cannot download {package.name} {package.version} from {url} ({reason}); the emoji family needs the "
            f"npm registry once (then {cache_dir() / 'npm'}), or leave it out with --families"
        ) from None


def _verify(path: Path, package: NpmPackage) -> None:
    algorithm, _, expected = package.integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    actual = base64.b64encode(digest.digest()).decode()
    if actual != expected:
        raise EmojiFetchError(
            f"{package.name} {package.version}: the tarball's {algorithm} is {actual}, not the pinned {expected}; "
            "refusing it"
        )


def _extract(tarball: Path, folder: Path, package: NpmPackage) -> None:
    """Only ``package/emoji.json`` and ``package/img/<vendor>/64/*.png``, flattened; no other path is written."""
    images = folder / IMAGE_FOLDER
    images.mkdir(parents=True)
    prefix = f"package/img/{package.vendor}/{IMAGE_FOLDER}/"
    found_catalogue = False
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile():
                continue
            if member.name == "package/emoji.json":
                (folder / "emoji.json").write_bytes(archive.extractfile(member).read())
                found_catalogue = True
            elif (
                member.name.startswith(prefix)
                and member.name.endswith(".png")
                and "/" not in member.name[len(prefix) :]
            ):
                (images / member.name[len(prefix) :]).write_bytes(archive.extractfile(member).read())
    if not found_catalogue or not any(images.iterdir()):
        raise EmojiFetchError(f"{package.name} {package.version}: no package/emoji.json or {prefix}*.png inside")


def class_members(
    vendors: list[VendorImages], classes=CLASSES, max_per_class: int = MAX_PER_CLASS
) -> dict[str, list[str]]:
    """Class → image file names drawn by every vendor (``has_img_<vendor>`` and the file present), in sort order."""
    catalogue = vendors[0].catalogue
    present = [{p.name for p in vendor.folder.iterdir()} for vendor in vendors]
    members: dict[str, list[str]] = {name: [] for name in classes}
    for entry in sorted(catalogue, key=lambda e: e.get("sort_order", 0)):
        name = entry.get("subcategory")
        if name not in members or len(members[name]) >= max_per_class:
            continue
        vendor_names = [vendor.package.vendor for vendor in vendors]
        if all(entry.get(f"has_img_{v}") for v in vendor_names) and all(entry["image"] in p for p in present):
            members[name].append(entry["image"])
    short = [name for name, images in members.items() if len(images) < 3]
    if short:
        raise EmojiFetchError(f"emoji classes with fewer than 3 images drawn by every vendor: {', '.join(short)}")
    return members


def folder_name(class_name: str) -> str:
    """A class name as an ImageFolder directory: ``sky & weather`` → ``sky-and-weather``."""
    return class_name.replace(" & ", "-and-").replace(" ", "-")


def fixture_tarball(path: Path, vendor: str, classes: dict[str, int], seed: int = 0) -> str:
    """A tiny package in the real layout (``emoji.json`` + ``img/<vendor>/64/*.png``) for tests; returns its
    integrity string. ``classes``: sub-category → number of emoji; each vendor draws them in its own colours."""
    rng = np.random.default_rng([seed, sum(map(ord, vendor))])
    catalogue, files = [], {}
    order = 0
    for class_index, (name, count) in enumerate(classes.items()):
        for n in range(count):
            code = f"{0x1F300 + class_index * 64 + n:x}"
            catalogue.append(
                {"image": f"{code}.png", "unified": code.upper(), "category": "Test", "subcategory": name}
                | {"sort_order": order, **{f"has_img_{v}": True for v in VENDORS}}
            )
            order += 1
            image = np.zeros((64, 64, 4), np.uint8)
            colour = rng.integers(0, 256, 3)
            low, high = 8 + 6 * class_index, 56 - 2 * n % 8
            image[low:high, low:high, :3] = colour
            image[low:high, low:high, 3] = 255
            buffer = io.BytesIO()
            Image.fromarray(image, "RGBA").save(buffer, "PNG")
            files[f"package/img/{vendor}/64/{code}.png"] = buffer.getvalue()
    files["package/emoji.json"] = json.dumps(catalogue).encode()
    files[f"package/img/{vendor}/sheets/64.png"] = b"sprite sheets are not read"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
