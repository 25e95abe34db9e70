"""Forward passes of a fixed size: the one padding rule of every batched inference in the project.

CPU and GPU kernels are chosen by tensor shape, and a different kernel can flip a rounding. Running every forward
pass at the same batch size (the last one padded) makes an image's output independent of how many batch-mates it
had and which: a re-run, a Beam retry or a different bundling gives the same bytes. Each image is computed on its
own in these networks (convolutions and instance/eval-mode batch norms never mix batch entries), so what the padding
holds does not matter; it repeats the chunk's first row, which is valid input for any network.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch

Rows = np.ndarray | torch.Tensor


def pad_rows(rows: Rows, size: int) -> Rows:
    """``rows`` (``(n, ...)``, ``0 < n <= size``) → ``(size, ...)``: the first row repeated after the last."""
    missing = size - len(rows)
    if missing <= 0:
        return rows
    if isinstance(rows, torch.Tensor):
        return torch.cat([rows, rows[:1].expand(missing, *rows.shape[1:])])
    return np.concatenate([rows, np.repeat(rows[:1], missing, axis=0)])


def in_fixed_passes(forward: Callable[..., object], inputs: Sequence[Rows], size: int) -> list:
    """Call ``forward(*chunk)`` on consecutive chunks of ``size`` rows of ``inputs`` (arrays or tensors of one length),
    the last chunk padded by ``pad_rows``; return each call's output cut back to its real rows, in order.

    ``forward`` returns rows (an array or tensor) or a tuple of them; each is cut alike.
    """
    count = len(inputs[0])
    outputs = []
    for start in range(0, count, size):
        chunk = [rows[start : start + size] for rows in inputs]
        real = len(chunk[0])
        result = forward(*(pad_rows(rows, size) for rows in chunk))
        outputs.append(tuple(part[:real] for part in result) if isinstance(result, tuple) else result[:real])
    return outputs
