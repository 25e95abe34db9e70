"""Shared fixtures: generated images, Beam options that never reach for the Prism runner."""

import io
import os

import numpy as np
import pytest
from PIL import Image

# gcsfs's experimental bucket-type probe speaks gRPC, which the GCS emulator does not: each first access to a
# bucket would wait out a 60 s timeout. Read at gcsfs import, so set before any test imports it.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


@pytest.fixture(autouse=True, scope="session")
def stylizer_cache(tmp_path_factory):
    """Built-in stylizers (``magenta26``) are cached in a session folder, never in the user's cache dir;
    subprocesses started by tests inherit it."""
    before = os.environ.get("STYLEBEAM_CACHE")
    os.environ["STYLEBEAM_CACHE"] = str(tmp_path_factory.mktemp("stylebeam-cache"))
    yield os.environ["STYLEBEAM_CACHE"]
    if before is None:
        os.environ.pop("STYLEBEAM_CACHE", None)
    else:
        os.environ["STYLEBEAM_CACHE"] = before


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Tests never touch the network: a download of ImageNet weights fails as it does offline. Tests of the
    download path replace ``models.common.weights.fetch`` themselves."""
    import urllib.error

    import models.common.weights

    def offline(url, path, timeout_s=60.0):
        raise urllib.error.URLError("tests never touch the network")

    monkeypatch.setattr(models.common.weights, "fetch", offline)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Test tensors are tiny: intra-op threads only add synchronisation, and on a shared 2-core machine
    OpenMP threads waiting on each other made torch tests ~10x slower (a 32 px VGG19 pass: 0.9 s with
    2 threads vs 0.07 s with 1; a tiny-ResNet training step: 523 ms vs 39 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def beam_options():
    """In-process FnApiRunner options for ``TestPipeline``."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(["--runner=FnApiRunner"])


def make_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A deterministic image with structure (gradients + blocks), not flat noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [x * 255.0 / max(width - 1, 1), y * 255.0 / max(height - 1, 1), ((x // 8 + y // 8) % 2) * 255.0], axis=-1
    )
    base = (base * 0.7 + rng.uniform(0, 255, size=3) * 0.3).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(base, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def image_factory():
    return make_image


@pytest.fixture
def gcs_bucket(monkeypatch):
    """An in-process GCS emulator on 127.0.0.1 with one bucket; yields ``gs://stylebeam-test``.

    Beam's GCS filesystem and gcsfs both honour ``STORAGE_EMULATOR_HOST``; pipelines need ``--no_auth``.
    """
    import logging
    import socket

    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="stylebeam-test")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # Without credentials Beam retries google.auth.default() for ~20 s wherever a GCS client is made
    # without the pipeline's --no_auth (the launcher's sinks); anonymous is what the emulator wants.
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default", lambda *args, **kwargs: (AnonymousCredentials(), "stylebeam-test"))
    # gcsfs (checkpoints are read through fsspec) looks for credentials its own way: anonymous, at once.
    import fsspec.config

    monkeypatch.setitem(fsspec.config.conf, "gcs", {"token": "anon"})
    FileSystems.set_options(PipelineOptions(["--no_auth"]))
    try:
        yield "gs://stylebeam-test"
    finally:
        server.stop()


def upload(local, remote: str) -> None:
    """Copy a local file, or every file below a local folder, to ``remote`` (any Beam filesystem)."""
    from pathlib import Path

    from apache_beam.io.filesystems import FileSystems

    local = Path(local)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        target = remote if local.is_file() else f"{remote}/{path.relative_to(local).as_posix()}"
        with FileSystems.create(target) as handle:
            handle.write(path.read_bytes())


@pytest.fixture
def world_tmp():
    """A temporary folder every user can enter (pytest's own are root-only when the tests run as root)."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="stylebeam-test-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def run_unprivileged(args: list[str], **kwargs):
    """Run a command as a user who cannot write everywhere: as it is when the tests are not root, as ``nobody``
    through ``setpriv`` when they are; skip the calling test where neither is possible."""
    import shutil
    import subprocess

    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv is not available to drop to nobody")
        checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if not _readable_by_nobody(checkout):
            # A clone under a 0700 folder (what mktemp -d makes) or a 0750 home: nobody cannot import the project.
            pytest.skip(f"user nobody cannot read the checkout at {checkout} (a folder above it is not world-readable)")
        args = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=180, **kwargs)


def _readable_by_nobody(path: str) -> bool:
    """Whether every folder from / down to ``path`` lets others in (x) and ``path`` lets them list (r)."""
    import stat

    folder = os.path.abspath(path)
    while True:
        mode = os.stat(folder).st_mode
        if not mode & stat.S_IXOTH or (folder == os.path.abspath(path) and not mode & stat.S_IROTH):
            return False
        parent = os.path.dirname(folder)
        if parent == folder:
            return True
        folder = parent


@pytest.fixture(scope="session")
def two_style_stylizer(tmp_path_factory) -> str:
    """A tiny two-style checkpoint (styles ``a`` and ``b``, random weights): fast input for the jobs' tests."""
    import torch

    from models.style.checkpoint import save_stylizer
    from models.style.stylizer import MultiStyleTransformer, StylizerConfig

    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1))
    path = tmp_path_factory.mktemp("ckpt") / "two.safetensors"
    save_stylizer(str(path), model, ["a", "b"])
    return str(path)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder, pattern="*")``: from now on, files opened for writing below ``folder`` whose names match
    ``pattern`` behave as on a full disk: the file is created, then every write raises ENOSPC (the 0-byte file a
    non-atomic writer leaves behind). Works at the level every writer shares (``open``, ``io.open``, which
    ``os.fdopen`` and Pillow's ``Image.save`` use), so it holds for the old code and the new alike."""
    import builtins
    import errno
    import fnmatch

    real_open = builtins.open
    targets = []

    class FullDiskFile:
        def __init__(self, handle):
            self._handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device", getattr(self._handle, "name", None))

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    def path_of(file) -> str:
        if isinstance(file, int):
            try:
                return os.readlink(f"/proc/self/fd/{file}")
            except OSError:
                return ""
        return os.path.realpath(os.fsdecode(file)) if isinstance(file, (str, bytes, os.PathLike)) else ""

    def full_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if not any(flag in mode for flag in "wax+"):
            return handle
        path = path_of(file)
        for folder, pattern in targets:
            if path.startswith(folder + os.sep) and fnmatch.fnmatch(os.path.basename(path), pattern):
                return FullDiskFile(handle)
        return handle

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("the full-disk injection reads /proc/self/fd (Linux)")
    monkeypatch.setattr(builtins, "open", full_open)
    monkeypatch.setattr(io, "open", full_open)
    return lambda folder, pattern="*": targets.append((os.path.realpath(folder), pattern))


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 64 KiB tmpfs (a disk that fills up for real); skipped where mounting is not permitted (not root)."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip() or 'not permitted'}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
