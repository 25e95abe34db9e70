"""Model-only speed of Ghiasi et al.'s arbitrary-style network: our float port against the wheel's int8 graphs.

    python -m benchmarks.arbitrary_model [--threads 1] [--reps 20]

Milliseconds per image, batch 1, inputs already in memory: the style predictor at 256² and the transformer at
384² (the wheel's fixed size) and 256². Torch columns: ``models.style.magenta_import``'s port (``magenta_arbitrary``) in
fp32, fp32 channels-last and bf16 channels-last (``models.style.runner``'s CPU paths; bf16 is emulated, and slow, on
CPUs without native bf16). The onnxruntime column: the wheel's int8 files with the session options the wheel uses
(default graph optimisations); for 256² the transformer graph's fixed input size is freed in memory (its nodes do
not depend on it). CPUs shared with other work inflate every cell: the load average is printed first.
"""

import argparse
import copy
import os
import time

import torch

from models.style.checkpoint import load_arbitrary
from models.style.magenta_import import ARBITRARY_PREDICT, ARBITRARY_TRANSFORM, wheel_file
from models.style.registry import resolve


def median_ms(function, reps: int) -> float:
    function()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def onnx_session(file_name: str, threads: int, free_size: bool = False):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(wheel_file(file_name)))
    if free_size:
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[3].dim_value == 3:
                dims[1].dim_param, dims[2].dim_param = "height", "width"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def torch_ms(model: torch.nn.Module, inputs: list[torch.Tensor], reps: int) -> list[float]:
    """Milliseconds per call: fp32, fp32 channels-last, bf16 channels-last (the last two: ``models.style.runner``'s
    CPU paths without and with native bf16)."""
    timings = []
    for dtype, layout in (
        (torch.float32, None),
        (torch.float32, torch.channels_last),
        (torch.bfloat16, torch.channels_last),
    ):
        typed = copy.deepcopy(model).to(dtype=dtype)
        cast = [t.to(dtype) for t in inputs]
        if layout is not None:
            typed = typed.to(memory_format=layout)
            cast = [t.contiguous(memory_format=layout) if t.dim() == 4 else t for t in cast]
        with torch.inference_mode():
            timings.append(median_ms(lambda typed=typed, cast=cast: typed(*cast), reps))
    return timings


def onnx_ms(graph, feeds: dict, reps: int) -> float:
    return median_ms(lambda: graph.run(None, feeds), reps)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    predictor, transformer, _ = load_arbitrary(resolve("magenta_arbitrary"))
    generator = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 256, 256, generator=generator)
    with torch.inference_mode():
        embedding = predictor(style)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}; load average {load}")
    columns = ("torch fp32", "fp32 CL", "bf16 CL", "ort int8")
    print(f"{'model':<12}{'size':>6}" + "".join(f"{c:>12}" for c in columns) + "  (ms per image; CL: channels-last)")

    def report(name: str, size: int, timings: list[float]) -> None:
        print(f"{name:<12}{size:>5}²" + "".join(f"{t:>12.1f}" for t in timings), flush=True)

    graph = onnx_session(ARBITRARY_PREDICT, args.threads)
    feeds = {"style_image": style.permute(0, 2, 3, 1).numpy()}
    report("predictor", 256, torch_ms(predictor, [style], args.reps) + [onnx_ms(graph, feeds, args.reps)])
    graph = onnx_session(ARBITRARY_TRANSFORM, args.threads, free_size=True)
    for size in (384, 256):
        image = torch.rand(1, 3, size, size, generator=generator)
        feeds = {
            "content_image": image.permute(0, 2, 3, 1).numpy(),
            "mobilenet_conv/Conv/BiasAdd": embedding.numpy().reshape(1, 1, 1, -1),
        }
        report(
            "transformer",
            size,
            torch_ms(transformer, [image, embedding], args.reps) + [onnx_ms(graph, feeds, args.reps)],
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.arbitrary_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default: 1)")
    parser.add_argument("--reps", type=int, default=20, help="timed calls per cell, median taken (default: 20)")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
