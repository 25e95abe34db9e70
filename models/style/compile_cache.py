"""``--compile``'s on-disk cache: Inductor's compiled code kept in the stylebeam cache, so a machine compiles the
stylizer once, not once per worker process.

Inductor already caches what it builds (its FX-graph cache and the AOTAutograd cache, both on by default in torch
2.14), but in ``/tmp/torchinductor_<user>``, which a reboot or a fresh container empties. ``compiling_in`` points
those caches at ``<stylebeam cache>/compile/<key>/`` while a shape compiles; ``key`` names what the compiled code
depends on (torch's version, the CPU model and its instruction-set flags, the network's weights digest, the dtype),
so a torch upgrade or another CPU gets a fresh folder instead of code built for something else. Writes are
Inductor's own: every cache file is written to a temporary name and renamed into place
(``torch._inductor.codecache.write_atomic``), so concurrent workers and a killed compile never leave a torn entry.

What the cache saves is Inductor's part (generating and building C++); dynamo still traces the network's Python in
each new process. The measured cold and warm times are in the README (Speed and memory).
"""

import contextlib
import hashlib
import os
import platform
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from models.style.precision import cpu_signature, network_digest

INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"

# The cache folder is process-wide (an environment variable Inductor reads as it compiles): two runners compiling
# at once in one process take turns, so neither writes into the other's folder.
_SWITCH_LOCK = threading.Lock()


def cache_key(network: str, dtype: torch.dtype, torch_version: str | None = None, cpu: str | None = None) -> str:
    """The compile cache's folder name for ``network`` (its ``precision.network_digest``) run in ``dtype``, under
    ``torch_version`` on ``cpu`` (by default this process's torch and this machine's ``precision.cpu_signature``):
    16 hex digits."""
    torch_version = torch_version or torch.__version__
    cpu = cpu or cpu_signature()
    return hashlib.sha256(f"{torch_version}\n{cpu}\n{network}\n{dtype}".encode()).hexdigest()[:16]


def cache_folder(model: torch.nn.Module, dtype: torch.dtype) -> Path:
    """``<stylebeam cache>/compile/<cache_key>/`` for ``model`` in ``dtype`` on this machine."""
    from models.style.registry import cache_dir  # registry sits above the models it names (README, layout)

    return cache_dir() / "compile" / cache_key(network_digest(model), dtype)


@contextlib.contextmanager
def compiling_in(folder: Path) -> Iterator[None]:
    """Inductor's caches in ``folder`` for the compiles inside the block (made if missing). A folder the user
    named with ``TORCHINDUCTOR_CACHE_DIR`` wins: it is left as it is. (Inductor writes its default, the temp-dir
    folder, into that variable itself once imported: that one is not the user's choice.)"""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    with _SWITCH_LOCK:
        before = os.environ.get(INDUCTOR_CACHE_VARIABLE)
        if before is not None and os.path.abspath(before) != os.path.abspath(default_cache_dir()):
            yield
            return
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[INDUCTOR_CACHE_VARIABLE] = str(folder)
        try:
            yield
        finally:
            if before is None:
                del os.environ[INDUCTOR_CACHE_VARIABLE]
            else:
                os.environ[INDUCTOR_CACHE_VARIABLE] = before


def why_not_compilable(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work on ``device`` here, in a few words, or None when it may: on CPU Inductor
    builds C++ and needs a compiler (``$CXX``, else ``g++``/``clang++``)."""
    if device.type != "cpu":
        return None
    from torch._inductor import config

    names = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    names = [name for name in names if name] + ["clang++" if platform.system() == "Darwin" else "g++"]
    if any(shutil.which(name) for name in names):
        return None
    return f"no C++ compiler found (looked for {', '.join(dict.fromkeys(names))}; set CXX to one)"
