"""``--precision auto`` on a CPU with native bf16: measured once per machine, not assumed from a CPU flag.

Native bf16 kernels (AVX-512 BF16, AMX) do not make this network faster by themselves: its convolutions have few
channels, so a pass is bound by memory traffic and per-op overhead more than by arithmetic (256², 2 cores with
AVX-512 BF16: bf16 21.2 images/s against fp32 21.5). So on such a CPU ``auto`` times a few forward passes of the
network itself, at the size asked, in fp32 and in bf16, checks bf16 against fp32 (PSNR at least ``MIN_PSNR_DB``,
peak 1.0), and takes bf16 only when it is within that bound and faster by ``MIN_GAIN``. The choice is cached in the
user's cache folder (``models.style.registry.cache_dir``), one small JSON file per key (torch version, CPU model
and flags, the network's weights, the size and the torch thread count), written atomically; a missing, corrupt or
other-key file is measured again. On a CPU without native bf16 (AVX2 only) bf16 is emulated and several times
slower, so ``auto`` is fp32 there without measuring.
"""

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.common.errors import StylebeamError
from models.common.files import write_atomically

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 1
MIN_PSNR_DB = 40.0  # bf16 against fp32 on [0, 1] pixels: the accuracy bound the bf16 tests hold the network to
MIN_GAIN = 0.10  # bf16 must take at most 90% of fp32's time: a smaller gain is within a shared machine's noise
PROBE_SIDE = 256  # the job's default image size
REPEATS = 5


def cpu_signature() -> str:
    """The CPU model, its feature flags and torch's CPU capability: what a timing on this machine depends on."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and not model:
                    model = value.strip()
                elif name.strip() == "flags":
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:  # not Linux: the processor name and torch's capability stand for it
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model} | {capability} | {hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def network_digest(network: torch.nn.Module) -> str:
    """SHA-256 of a network's class, configuration and weights (the speed depends on the first two, the accuracy of
    bf16 on the last)."""
    digest = hashlib.sha256(f"{type(network).__qualname__}|{getattr(network, 'config', None)!r}".encode())
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(network: torch.nn.Module, side: int) -> dict:
    return {
        "version": CACHE_VERSION,
        "torch": torch.__version__,
        "cpu": cpu_signature(),
        "network": network_digest(network),
        "side": side,
        "threads": torch.get_num_threads(),
    }


def cache_path(key: dict) -> Path:
    from models.style.registry import cache_dir

    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "precision" / f"{name}.json"


def probe_inputs(code_size: int, num_styles: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, photo-like image (smooth noise) ``(1, 3, side, side)`` in [0, 1] and one conditioning vector: an
    even mixture of the styles, or a small fixed embedding."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, max(side // 16, 2), max(side // 16, 2), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False)
    if num_styles:
        code = torch.full((1, code_size), 1.0 / code_size)
    else:
        code = torch.randn(1, code_size, generator=generator) * 0.5
    return image.clamp(0, 1), code


def measure(stylize: Callable[[torch.dtype, torch.Tensor, torch.Tensor], torch.Tensor], image, code) -> dict:
    """Time ``stylize(dtype, image, code)`` in fp32 and bf16 (the fastest of ``REPEATS`` alternating passes, after
    one warm-up each) and the PSNR of bf16's output against fp32's."""
    outputs = {dtype: stylize(dtype, image, code).float() for dtype in (torch.float32, torch.bfloat16)}
    seconds = {torch.float32: [], torch.bfloat16: []}
    for _ in range(REPEATS):
        for dtype in seconds:
            start = time.perf_counter()
            stylize(dtype, image, code)
            seconds[dtype].append(time.perf_counter() - start)
    error = float(torch.mean((outputs[torch.float32] - outputs[torch.bfloat16]) ** 2))
    return {
        "fp32_s": min(seconds[torch.float32]),
        "bf16_s": min(seconds[torch.bfloat16]),
        "psnr_db": float(10 * np.log10(1.0 / max(error, 1e-20))),
    }


def choose(measured: dict) -> str:
    """``"bf16"`` when it is within the accuracy bound and faster by ``MIN_GAIN``, else ``"fp32"``."""
    accurate = measured["psnr_db"] >= MIN_PSNR_DB
    faster = measured["bf16_s"] <= (1 - MIN_GAIN) * measured["fp32_s"]
    return "bf16" if accurate and faster else "fp32"


def read_cached(path: Path, key: dict) -> str | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("choice") not in ("fp32", "bf16"):
        return None
    return record["choice"]


def measured_cpu_precision(
    network: torch.nn.Module,
    stylize: Callable[[torch.dtype, torch.Tensor, torch.Tensor], torch.Tensor],
    side: int = PROBE_SIDE,
) -> torch.dtype:
    """The faster of fp32 and bf16 for ``network`` on this CPU at ``side``², within the accuracy bound: from the
    cache, else measured with ``stylize(dtype, image, code)`` (a forward pass as the job runs it) and cached."""
    key = cache_key(network, side)
    path = cache_path(key)
    choice = read_cached(path, key)
    if choice is None:
        image, code = probe_inputs(network.code_size, network.num_styles, side)
        measured = measure(stylize, image, code)
        choice = choose(measured)
        LOGGER.info(
            "--precision auto: %s (a %d² pass: fp32 %.1f ms, bf16 %.1f ms, bf16 PSNR %.1f dB against fp32)",
            choice,
            side,
            measured["fp32_s"] * 1e3,
            measured["bf16_s"] * 1e3,
            measured["psnr_db"],
        )
        record = {"key": key, "choice": choice, **measured}
        try:
            write_atomically(str(path), json.dumps(record, indent=1, sort_keys=True).encode())
        except StylebeamError as exc:  # a read-only cache folder: measured again by the next process
            LOGGER.warning("could not cache the precision choice (%s)", exc)
    return torch.bfloat16 if choice == "bf16" else torch.float32
