"""Import pytorch/examples ``fast_neural_style`` checkpoints (``*.pth``/``*.model``) as one-style stylizers.

Their ``TransformerNet`` (``neural_style/transformer_net.py``) is Johnson's network with plain
``InstanceNorm2d(affine=True)`` layers. ``models.style.stylizer`` keeps its module names, so the mapping is key for key;
only each instance norm's ``(C,)`` scale/shift becomes the single row ``(1, C)`` of a conditional instance norm
(one style = one row, Dumoulin et al. 2017). Files saved by PyTorch before 0.4 also carry ``running_mean`` /
``running_var`` buffers for those norms; instance norm never uses them (statistics are per image), and their own
``neural_style.py`` deletes them before loading, as we do.

Their forward takes pixels on the 0–255 scale and returns 0–255; ours takes [0, 1] and scales internally, so
``ours(x / 255) == theirs(x) / 255`` with the same weights.
"""

import posixpath
import re

import torch

from models.common.errors import CheckpointError
from models.common.weights import load_state_dict
from models.style.checkpoint import save_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

# Channels of their fixed architecture at width 1.0 (transformer_net.py: 32, 64, 128).
BASE_CHANNELS = 32
STRAY_BUFFER = re.compile(r"(^|\.)in\d+\.(running_mean|running_var|num_batches_tracked)$")
INSTANCE_NORM = re.compile(r"(^|\.)in\d+\.(weight|bias)$")


def stylizer_from_fast_neural_style(
    state: dict[str, torch.Tensor], source: str = "state_dict"
) -> MultiStyleTransformer:
    """A one-style ``MultiStyleTransformer`` with the weights of a ``TransformerNet`` state_dict."""
    state = {key.removeprefix("module."): value for key, value in state.items() if not STRAY_BUFFER.search(key)}
    first_conv = state.get("conv1.conv2d.weight")
    if first_conv is None or first_conv.dim() != 4 or first_conv.shape[1:] != (3, 9, 9):
        raise CheckpointError(
            f"{source} is not a fast_neural_style TransformerNet state_dict (no 9x9 RGB conv1.conv2d.weight)"
        )
    num_residual = len({key.split(".")[0] for key in state if re.match(r"res\d+\.", key)})
    config = StylizerConfig(num_styles=1, width=first_conv.shape[0] / BASE_CHANNELS, num_residual=num_residual)
    model = MultiStyleTransformer(config)
    mapped = {key: value[None] if INSTANCE_NORM.search(key) else value for key, value in state.items()}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(mapped) if expected[k].shape != mapped[k].shape)
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label}: {', '.join(keys[:4])}" + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape))
            if keys
        ]
        raise CheckpointError(
            f"{source} does not have the fast_neural_style TransformerNet layout; {'; '.join(problems)}"
        )
    model.load_state_dict({key: value.float() for key, value in mapped.items()})
    return model.eval()


def import_fast_neural_style(path: str, output: str, style_name: str | None = None) -> str:
    """Convert ``path`` into a one-style stylebeam checkpoint at ``output``; return its digest."""
    name = style_name or posixpath.splitext(posixpath.basename(path))[0]
    model = stylizer_from_fast_neural_style(load_state_dict(path), source=path)
    training = {"imported_from": posixpath.basename(path), "source": "pytorch/examples fast_neural_style"}
    return save_stylizer(output, model, [name], training)
