"""The one way to run a stylizer: ``StylizerRunner``, with the fast settings per device and one precision rule.

Every caller that stylises goes through it: the augment job (``transforms.stylize``), ``pipelines.stylize`` in both
modes, the stylizer sheets, ``StyleAugment`` and the trainer's sample grid. So a picture from the CLI and a row of
the job, from the same image, style, alpha and seed, are the same bytes.

Images travel as uint8 ``(B, H, W, 3)`` (4x fewer bytes than float, and what decoders/encoders speak);
conversion to float happens on the device. Training loops hand float ``(B, 3, H, W)`` in [0, 1] to
``StylizerRunner.stylize`` instead; both run the same forward pass. Forward passes have a fixed size
(``models.common.batching``), so an image's bytes do not depend on how Beam bundled it.

On CPU the forward size is 1: the network is bound by cache, not arithmetic, and one image at a time is
fastest (256², 2 cores, AVX-512 BF16: width 1.0 bf16 21.0 img/s at 1 vs 10.9 at 8; fp32 8.0 vs 5.3).
On CUDA it is the whole batch.
"""

import copy
import logging
import threading
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from models.common.batching import in_fixed_passes
from models.common.device import resolve_device
from models.common.errors import UsageError
from models.common.pixels import float_to_uint8, uint8_to_float
from models.style.checkpoint import load_arbitrary, load_stylizer
from models.style.choices import PRECISIONS  # noqa: F401  (re-exported: callers name it from here)
from models.style.compile_cache import cache_folder, compiling_in, why_not_compilable
from models.style.policy import Conditioning, StylePlan, style_conditioning
from models.style.precision import PROBE_SIDE, measured_cpu_precision
from models.style.registry import resolve
from models.style.stylizer import MultiStyleTransformer

LOGGER = logging.getLogger(__name__)


_ALLOCATOR_TUNED = False

# One graph per image shape (``dynamic=False``), each cached on disk: compiling the 26-style net at 256² and 320²
# took 57 + 70 s static against 400 + 247 s with dynamic shapes (2-core AVX2, loaded; README, Speed). A job sees a
# few shapes (``transforms.decode``'s bucket grid); dynamo's default of 8 compiled shapes per function, after which it
# runs eagerly, is raised to cover more of them.
COMPILE_DYNAMIC = False
COMPILED_SHAPES_LIMIT = 64


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
    return is_out_of_memory_error(type(exc), str(exc))


def is_out_of_memory_error(error_type: type, message: str) -> bool:
    """``is_out_of_memory`` from an exception's type and message (what a Beam dead letter carries)."""
    if issubclass(error_type, (MemoryError, torch.OutOfMemoryError)):
        return True
    return issubclass(error_type, RuntimeError) and (
        "can't allocate memory" in message or "not enough memory" in message
    )


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


def resolve_precision(
    precision: str, device: torch.device, network: torch.nn.Module | None = None, side: int = PROBE_SIDE
) -> torch.dtype:
    """``--precision`` → the dtype the stylizer runs in on ``device``; the one rule of every caller.

    ``auto``: bf16 on a CUDA GPU that has it (else fp16). On CPU, fp32, unless the CPU has native bf16 and bf16 is
    measurably faster for ``network`` at ``side``² within the accuracy bound (``models.style.precision``: measured
    once per machine and cached); without a ``network`` there is nothing to measure, and fp32 it is.
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
        if network is None or not cpu_supports_bf16():
            return torch.float32
        runners = {}

        def stylize(dtype: torch.dtype, image: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
            if dtype not in runners:
                runners[dtype] = StylizerRunner(network, device, dtype)
            return runners[dtype].stylize(image, code)

        return measured_cpu_precision(network, stylize, side)
    return torch.bfloat16


class StylizerRunner:
    """A stylizer on a device, ready for uint8 batches (``__call__``, ``stylize_plans``) and float ones
    (``stylize``). Create once per worker process.

    ``device``: a ``torch.device`` or a ``--device`` name; ``precision``: a ``--precision`` name (``auto`` ...,
    resolved by ``resolve_precision``) or a dtype. ``predictor``: an arbitrary-style network's style predictor, for
    the content embeddings that alpha < 1 on paintings blends toward (``embed``).
    """

    def __init__(
        self,
        model: MultiStyleTransformer,
        device: torch.device | str = "auto",
        precision: str | torch.dtype = "auto",
        batch_size: int = 1,
        forward_batch: int | None = None,
        compile: bool = False,
        predictor: torch.nn.Module | None = None,
    ):
        device = resolve_device(device) if isinstance(device, str) else device
        dtype = resolve_precision(precision, device, model) if isinstance(precision, str) else precision
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
        self.embedder = StyleEmbedder(predictor, device, dtype) if predictor is not None else None
        # torch.compile fuses the pads, norms and ReLUs around the convs: 256², 2 cores, bf16: width 0.5
        # 118 img/s vs 58 eager, width 1.0 56 vs 22. Compiling a shape costs seconds to a minute the first time
        # on a machine, then much less from the compile cache (models.style.compile_cache).
        self.compiled = compile
        if compile and (reason := why_not_compilable(device)):
            LOGGER.warning("--compile: %s; running the stylizer eagerly", reason)
            self.compiled = False
        self._start_compiling()

    def _start_compiling(self) -> None:
        self._compile_lock = threading.Lock()
        self._compiled_shapes: set = set()
        self._compile_folder = None  # compile_cache.cache_folder, once a shape compiles
        self.forward = self.model
        if self.compiled:
            try:
                self.forward = torch.compile(self.model, dynamic=COMPILE_DYNAMIC)
                dynamo_config = torch._dynamo.config
                dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, COMPILED_SHAPES_LIMIT)
            except Exception as exc:  # e.g. a Python that this torch's dynamo does not support yet
                self._compile_failed(exc)

    def _compile_failed(self, exc: Exception) -> None:
        """Say in one line why the network is not compiled, and run it eagerly from now on."""
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        failure = f"{type(exc).__name__}: {first_line}"
        LOGGER.warning("--compile: torch.compile failed (%s); running the stylizer eagerly", failure)
        self.forward, self.compiled = self.model, False

    def __getstate__(self) -> dict:
        # A lock and a compiled graph do not pickle (StyleAugment travels to DataLoader workers): both are remade.
        state = dict(self.__dict__)
        for name in ("forward", "_compile_lock", "_compiled_shapes", "_compile_folder"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._start_compiling()

    def _forward(self, batch: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.forward(batch, weights)
        key = (tuple(batch.shape), batch.dtype)
        if key in self._compiled_shapes:
            return self.forward(batch, weights)
        # The first pass of a shape compiles: one thread at a time. Worker threads sharing this runner (the local
        # job runs one per core) that compiled concurrently made dynamo throw its work away and recompile.
        with self._compile_lock:
            if self._compile_folder is None:
                self._compile_folder = cache_folder(self.model, self.dtype)
            try:
                with compiling_in(self._compile_folder):
                    output = self.forward(batch, weights)
            except Exception as exc:  # a broken compiler, an unsupported op: say so in one line, go on eagerly
                self._compile_failed(exc)
                return self.forward(batch, weights)
            self._compiled_shapes.add(key)
            return output

    @property
    def num_styles(self) -> int:
        return self.model.num_styles

    def _pass(self, images: torch.Tensor, weights: torch.Tensor, alphas: torch.Tensor):
        """One forward pass: ``images`` ``(n, 3, H, W)`` float32 in [0, 1] on the device, channels-last strides →
        (stylised and blended toward ``images`` by ``alphas``, unclamped float32; which rows are finite)."""
        if self.cast_model:
            stylised = self._forward(images.to(self.dtype), weights)
        else:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                stylised = self._forward(images, weights)
        finite = torch.isfinite(stylised).flatten(1).all(1)
        return torch.lerp(images, stylised.float(), alphas.reshape(-1, 1, 1, 1)), finite

    @staticmethod
    def _check_finite(finite: list[np.ndarray]) -> None:
        finite = np.concatenate(finite)
        if not finite.all():
            raise NonFiniteOutput(np.flatnonzero(~finite).tolist())

    @torch.inference_mode()
    def __call__(self, pixels: np.ndarray, style_weights: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """``pixels`` ``(B, H, W, 3)`` uint8, ``style_weights`` ``(B, code_size)`` (style mixtures or style
        embeddings), ``alpha`` ``(B,)`` → ``(B, H, W, 3)`` uint8.

        Any ``B``: it is cut into forward passes of ``batch_size``, the last padded. Raises ``NonFiniteOutput``
        naming every image whose output holds NaN/Inf (e.g. weights that overflow in bf16).
        """
        if pixels.shape[0] == 0:
            return pixels.copy()
        cuda = self.device.type == "cuda"

        def one_pass(pixels, style_weights, alpha):
            pixels = np.ascontiguousarray(pixels)
            if not pixels.flags.writeable:  # e.g. np.asarray of a PIL image; torch.from_numpy wants to own writes
                pixels = pixels.copy()
            batch = torch.from_numpy(pixels)
            if cuda:
                batch = batch.pin_memory()
            batch = uint8_to_float(batch.to(self.device, non_blocking=cuda), channels_last=True)
            weights = torch.from_numpy(np.asarray(style_weights, np.float32)).to(self.device)
            alphas = torch.from_numpy(np.asarray(alpha, np.float32)).to(self.device)
            blended, finite = self._pass(batch, weights, alphas)
            return float_to_uint8(blended).cpu().numpy(), finite.cpu().numpy()

        outputs, finite = zip(*in_fixed_passes(one_pass, (pixels, style_weights, alpha), self.batch_size), strict=True)
        self._check_finite(finite)
        return np.concatenate(outputs)

    @torch.no_grad()
    def stylize(self, images: torch.Tensor, style_weights, alpha=1.0) -> torch.Tensor:
        """``images`` ``(B, 3, H, W)`` float in [0, 1] on any device, ``style_weights`` ``(B, code_size)``, ``alpha``
        a scalar or ``(B,)`` → ``(B, 3, H, W)`` float32 in [0, 1] on the runner's device; the same forward passes as
        ``__call__`` (which is this on ``images`` quantised to uint8, then quantised back)."""
        images = images.detach().to(self.device, torch.float32)
        weights = torch.as_tensor(style_weights, dtype=torch.float32).to(self.device)
        alphas = torch.as_tensor(alpha, dtype=torch.float32).to(self.device).expand(images.shape[0])

        def one_pass(images, weights, alphas):
            blended, finite = self._pass(images.contiguous(memory_format=torch.channels_last), weights, alphas)
            return blended.clamp_(0, 1), finite.cpu().numpy()

        outputs, finite = zip(*in_fixed_passes(one_pass, (images, weights, alphas), self.batch_size), strict=True)
        self._check_finite(finite)
        return torch.cat(outputs)

    def embed(self, images: list[np.ndarray]) -> np.ndarray:
        """Content images ``[(H, W, 3) uint8]`` → their style embeddings (an arbitrary-style runner only)."""
        if self.embedder is None:
            raise UsageError("this stylizer has no style predictor: content embeddings need an arbitrary-style one")
        return self.embedder(images)

    def stylize_plans(
        self, pixels: np.ndarray, plans: Sequence[StylePlan], keys: Sequence[Hashable] | None = None
    ) -> tuple[np.ndarray, Conditioning]:
        """``pixels`` ``(B, H, W, 3)`` uint8, one ``StylePlan`` per image (``models.style.policy``) → the stylised
        ``(B, H, W, 3)`` uint8 and the conditioning the network was given. ``keys``: which rows share a content image
        (its embedding is computed once)."""
        conditioning = style_conditioning(plans, pixels.__getitem__, self.embed if self.embedder else None, keys)
        return self(pixels, conditioning.codes, conditioning.alphas), conditioning


def load_runner(
    checkpoint: str,
    *,
    arbitrary: bool = False,
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int = 1,
    compile: bool = False,
):
    """A checkpoint (path, URL or built-in name) → ``(StylizerRunner, its CheckpointInfo)``. ``arbitrary``: an
    arbitrary-style pair (predictor + transformer), whose runner embeds content images too."""
    device = resolve_device(device) if isinstance(device, str) else device
    if arbitrary:
        predictor, transformer, info = load_arbitrary(resolve(checkpoint), device="cpu")
        runner = StylizerRunner(transformer, device, precision, batch_size, compile=compile, predictor=predictor)
        LOGGER.info("loaded arbitrary stylizer %s on %s as %s", info.digest, device, runner.dtype)
        return runner, info
    model, info = load_stylizer(resolve(checkpoint), device="cpu")
    runner = StylizerRunner(model, device, precision, batch_size, compile=compile)
    LOGGER.info("loaded stylizer %s (%d styles) on %s as %s", info.digest, model.num_styles, device, runner.dtype)
    return runner, info


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

        from models.style.predictor import prepare_style_image

        if not images:
            return np.zeros((0, 0), np.float32)
        prepared = torch.stack([prepare_style_image(Image.fromarray(image, "RGB")) for image in images])

        def one_pass(chunk):
            chunk = chunk.to(self.device)
            if self.device.type == "cpu":
                return self.model(chunk.to(self.dtype)).float().cpu()
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                return self.model(chunk).float().cpu()

        return torch.cat(in_fixed_passes(one_pass, (prepared,), self.batch_size)).numpy()
