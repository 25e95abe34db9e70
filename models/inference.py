"""Batched stylizer inference with the fast settings per device, shared by the augment job and the CLIs.

Images travel as uint8 ``(B, H, W, 3)`` (4x fewer bytes than float, and what decoders/encoders speak);
conversion to float happens on the device. Forward passes have a fixed size, padded when short, so that
every image is computed by the same kernels whatever its batch-mates: an image's bytes do not depend on
how Beam bundled it (kernels are picked by shape, and a different kernel can flip a rounding).

On CPU the forward size is 1: the network is bound by cache, not arithmetic, and one image at a time is
fastest (256², 2 cores, AVX-512 BF16: width 1.0 bf16 21.0 img/s at 1 vs 10.9 at 8; fp32 8.0 vs 5.3).
On CUDA it is the whole batch.
"""

import copy
import logging
import threading

import numpy as np
import torch

from models.errors import UsageError
from models.pixels import float_to_uint8, uint8_to_float
from models.stylizer import MultiStyleTransformer

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOGGER = logging.getLogger(__name__)


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed activation buffers for the next forward pass instead of returning them to
    the OS. By default blocks of a few MB are mmap'd and unmapped each time, so every CPU forward pass faults its
    activations in anew: 6,080 page faults per 256² forward of the Magenta net, which then took 86 ms instead of
    55 ms (1 thread; what jemalloc/tcmalloc users get by LD_PRELOAD). Process-wide and idempotent; memory then stays
    at its peak instead of shrinking between images. A no-op where the C library is not glibc. Returns whether it
    took effect."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(
            libc.mallopt(m_trim_threshold, 1 << 31)
        )
    except (OSError, AttributeError):  # not Linux/glibc (macOS, Windows, musl): nothing to tune
        _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: Python's ``MemoryError``, CUDA's ``torch.OutOfMemoryError``, or the
    ``RuntimeError`` torch's CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in message or "not enough memory" in message)


class NonFiniteOutput(RuntimeError):
    """A forward pass produced NaN or Inf for some images (``indices`` in the batch): never encode those."""

    def __init__(self, indices: list[int]):
        super().__init__(f"the stylizer produced NaN or Inf pixels for {len(indices)} image(s)")
        self.indices = indices


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX-512 BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a CUDA GPU that has it (else fp16) and on a CPU with native bf16 (else fp32).

    bf16 vs fp32 on the demo stylizer: see README (PSNR measured by benchmarks/stylizer.py).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return torch.float32
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16":
        raise UsageError("fp16 is for CUDA; on CPU use --precision bf16 or fp32")
    if precision == "auto":
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    return torch.bfloat16


class StylizerRunner:
    """A stylizer on a device, ready for uint8 batches. Create once per worker process."""

    def __init__(
        self,
        model: MultiStyleTransformer,
        device: torch.device,
        dtype: torch.dtype,
        batch_size: int,
        forward_batch: int | None = None,
        compile: bool = False,
    ):
        self.device = device
        self.dtype = dtype
        if device.type == "cpu":
            keep_freed_memory()
        # images per forward pass: the whole batch on CUDA, one on CPU (module docstring), unless told
        self.batch_size = forward_batch or (batch_size if device.type == "cuda" else 1)
        self.model = copy.deepcopy(model).to(device).eval()  # a private copy: casting must not touch the caller's
        # On CPU the whole network runs in bf16, not under autocast: autocast keeps instance norm in fp32 and
        # spent a third of the time copying between dtypes (width 0.5 at 256², 2 cores: 62 img/s vs 50,
        # fp32 23; PSNR against fp32 56.5 dB either way). On CUDA autocast keeps norms in fp32: fp16 would
        # overflow in the norms' sums of squares on the network's 0-255 scale.
        self.cast_model = device.type == "cpu" and dtype == torch.bfloat16
        if self.cast_model:
            self.model = self.model.to(dtype)
        if device.type == "cpu":
            # channels_last lets oneDNN skip layout reorders around every conv (benchmarks/stylizer.py).
            self.model = self.model.to(memory_format=torch.channels_last)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        # torch.compile fuses the pads, norms and ReLUs around the convs: 256², 2 cores, bf16: width 0.5
        # 118 img/s vs 58 eager, width 1.0 56 vs 22; it costs 10-30 s of compiling per process and shape.
        self.forward = torch.compile(self.model) if compile else self.model
        self.compiled = compile
        self._compile_lock = threading.Lock()
        self._compiled_shapes: set = set()

    def _forward(self, batch: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.forward(batch, weights)
        key = (tuple(batch.shape), batch.dtype)
        if key in self._compiled_shapes:
            return self.forward(batch, weights)
        # The first pass of a shape compiles: one thread at a time. Worker threads sharing this runner (the local
        # job runs one per core) that compiled concurrently made dynamo throw its work away and recompile.
        with self._compile_lock:
            try:
                output = self.forward(batch, weights)
            except Exception as exc:  # no C++ compiler on the worker, an unsupported op: say so, go on eagerly
                LOGGER.warning("torch.compile failed (%s: %s); running the stylizer eagerly", type(exc).__name__, exc)
                self.forward, self.compiled = self.model, False
                return self.forward(batch, weights)
            self._compiled_shapes.add(key)
            return output

    @property
    def num_styles(self) -> int:
        return self.model.num_styles

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray, style_weights: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """``pixels`` ``(B, H, W, 3)`` uint8, ``style_weights`` ``(B, code_size)`` (style mixtures or style
        embeddings), ``alpha`` ``(B,)`` → ``(B, H, W, 3)`` uint8.

        Any ``B``: it is cut into forward passes of ``batch_size``, the last padded with zeros. Raises
        ``NonFiniteOutput`` when any image's output holds NaN/Inf (e.g. weights that overflow in bf16).
        """
        count = pixels.shape[0]
        if count == 0:
            return pixels.copy()
        if count > self.batch_size:
            return np.concatenate(
                [
                    self(
                        pixels[i : i + self.batch_size],
                        style_weights[i : i + self.batch_size],
                        alpha[i : i + self.batch_size],
                    )
                    for i in range(0, count, self.batch_size)
                ]
            )
        pad = self.batch_size - count
        if pad:
            pixels = np.concatenate([pixels, np.zeros((pad, *pixels.shape[1:]), np.uint8)])
            style_weights = np.concatenate([style_weights, np.repeat(style_weights[:1], pad, 0)])
            alpha = np.concatenate([alpha, np.zeros(pad, alpha.dtype)])
        cuda = self.device.type == "cuda"
        pixels = np.ascontiguousarray(pixels)
        if not pixels.flags.writeable:  # e.g. np.asarray of a PIL image; torch.from_numpy wants to own writes
            pixels = pixels.copy()
        batch = torch.from_numpy(pixels)
        if cuda:
            batch = batch.pin_memory()
        batch = uint8_to_float(batch.to(self.device, non_blocking=cuda), channels_last=True)
        weights = torch.from_numpy(np.asarray(style_weights, np.float32)).to(self.device)
        alphas = torch.from_numpy(np.asarray(alpha, np.float32)).to(self.device)
        if self.cast_model:
            stylised = self._forward(batch.to(self.dtype), weights)
        else:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                stylised = self._forward(batch, weights)
        finite = torch.isfinite(stylised[:count]).flatten(1).all(1)
        if not bool(finite.all()):
            raise NonFiniteOutput([int(i) for i in torch.nonzero(~finite).flatten()])
        blended = torch.lerp(batch, stylised.float(), alphas.reshape(-1, 1, 1, 1))
        return float_to_uint8(blended[:count]).cpu().numpy()


class StyleEmbedder:
    """A style predictor on a device (Ghiasi et al. 2017): uint8 images → style embeddings. Create once per
    worker process. Each image is prepared as the predictor was trained (centre square crop, 256², LANCZOS) and,
    as in ``StylizerRunner``, run in forward passes of a fixed size, so an embedding does not depend on its
    batch-mates. Under autocast on CUDA.

    On CPU in float64, cast to float32 at the end, so that an embedding does not depend on the thread count
    either: oneDNN's float32 convolutions split their sums by thread, and the embeddings of one painting with 1 and
    2 torch threads differed by up to 1.2e-6 (357 of 400 values), which changed the bytes of ``augment
    --style-images`` with ``--cpu-threads`` and between a DataLoader worker and the main process. In float64 those
    differences (~1e-16) vanish in the cast. It costs ~250 ms per image instead of ~40 ms (256², 1 thread): once
    per painting per job, and once per content image only where alpha < 1.
    """

    def __init__(self, predictor: torch.nn.Module, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device = device
        self.dtype = dtype if device.type == "cuda" else torch.float64  # on CPU: see above
        self.batch_size = 8 if device.type == "cuda" else 1
        self.model = copy.deepcopy(predictor).to(device).eval()
        if device.type == "cpu":
            self.model = self.model.to(self.dtype)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """``[(H, W, 3) uint8, ...]`` → ``(B, embedding_size)`` float32."""
        from PIL import Image

        from models.style_predictor import prepare_style_image

        if not images:
            return np.zeros((0, 0), np.float32)
        prepared = torch.stack([prepare_style_image(Image.fromarray(image, "RGB")) for image in images])
        outputs = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            count = len(chunk)
            if count < self.batch_size:
                chunk = torch.cat([chunk, chunk[:1].expand(self.batch_size - count, -1, -1, -1)])
            chunk = chunk.to(self.device)
            if self.device.type == "cpu":
                embedded = self.model(chunk.to(self.dtype))
            else:
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                    embedded = self.model(chunk)
            outputs.append(embedded.float()[:count].cpu())
        return torch.cat(outputs).numpy()
