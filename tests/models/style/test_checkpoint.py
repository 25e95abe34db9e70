import os

import pytest
import torch

from models.common.errors import CheckpointError
from models.style.checkpoint import load_stylizer, save_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig, one_hot


def make_net(seed=0):
    torch.manual_seed(seed)
    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.25, num_residual=1))
    with torch.no_grad():
        for p in model.style_parameters():
            p.add_(torch.randn_like(p))
    return model.eval()


def test_round_trip_is_bit_exact(tmp_path):
    model = make_net()
    path = str(tmp_path / "two.safetensors")
    digest = save_stylizer(path, model, ["blue", "red"], training={"steps": 3})
    loaded, info = load_stylizer(path)
    assert info.style_names == ["blue", "red"] and info.training == {"steps": 3} and info.digest == digest
    assert info.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(model.stylize(images, one_hot([1], 2)), loaded.stylize(images, one_hot([1], 2)))


def test_same_weights_same_bytes_and_digest(tmp_path):
    a = save_stylizer(str(tmp_path / "a.safetensors"), make_net(), ["x", "y"])
    b = save_stylizer(str(tmp_path / "b.safetensors"), make_net(), ["x", "y"])
    c = save_stylizer(str(tmp_path / "c.safetensors"), make_net(seed=1), ["x", "y"])
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert a == b != c


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_stylizer(str(tmp_path / "missing.safetensors"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a stylebeam checkpoint"):
        load_stylizer(str(junk))
    with pytest.raises(ValueError, match="style names"):
        save_stylizer(str(tmp_path / "x.safetensors"), make_net(), ["only-one"])


def test_kind_is_checked_and_local_writes_leave_no_partial(tmp_path):
    from models.style.checkpoint import load_tensors, save_tensors

    path = tmp_path / "deep" / "dir" / "x.safetensors"
    save_tensors(str(path), {"w": torch.ones(2)}, {"kind": "stylebeam.other"})
    # write_atomically writes beside the file under a hidden ".x.safetensors.*.partial" name and renames it
    assert sorted(os.listdir(path.parent)) == ["x.safetensors"]
    assert load_tensors(str(path), "stylebeam.other")[1]["kind"] == "stylebeam.other"
    with pytest.raises(CheckpointError, match="not a 'stylebeam.stylizer'"):
        load_stylizer(str(path))


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    model = make_net()
    with torch.no_grad():
        model.res1.in2.weight[1, 0] = float("nan")
        model.deconv3.conv2d.bias[0] = float("inf")
    path = str(tmp_path / "nan.safetensors")
    save_stylizer(path, model, ["a", "b"])
    with pytest.raises(CheckpointError, match=r"tensor deconv3\.conv2d\.bias holds 1 non-finite"):
        load_stylizer(path)


def test_checkpoints_written_before_the_family_grew_still_load(tmp_path):
    """A checkpoint of the first format: three config fields, no tensors checksum."""
    import json

    from safetensors.torch import save_file

    model = make_net()
    document = {
        "format_version": 1,
        "kind": "stylebeam.stylizer",
        "config": {"num_styles": 2, "width": 0.25, "num_residual": 1},
        "style_names": ["a", "b"],
        "training": {},
    }
    path = tmp_path / "old.safetensors"
    save_file(model.state_dict(), str(path), metadata={"stylebeam": json.dumps(document)})
    loaded, info = load_stylizer(str(path))
    assert info.config == model.config and info.source == {}
    images = torch.rand(1, 3, 32, 32)
    assert torch.equal(loaded.stylize(images, one_hot([1], 2)), model.stylize(images, one_hot([1], 2)))


def test_a_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="directory"):
        load_stylizer(str(tmp_path))


def test_a_write_that_fails_says_so_in_one_line(tmp_path, monkeypatch):
    """A file in the way locally, or a storage library's own network error remotely: an OutputUnwritableError
    naming the path, not a traceback (stylizers export to gs:// offline printed 215 lines of aiohttp tracebacks)."""
    import fsspec

    from models.common.errors import OutputUnwritableError
    from models.common.files import write_atomically

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputUnwritableError, match=r"cannot write .*/file/x\.safetensors \(FileExistsError"):
        write_atomically(str(tmp_path / "file" / "x.safetensors"), b"data")

    class ClientConnectorDNSError(Exception):  # what aiohttp raises under gcsfs when DNS fails
        pass

    def unreachable(*args, **kwargs):
        raise ClientConnectorDNSError("Cannot connect to host storage.googleapis.com:443\nmore lines")

    monkeypatch.setattr(fsspec, "open", unreachable)
    expected = r"^cannot write gs://b/x\.safetensors \(ClientConnectorDNSError: Cannot connect to host [^\n]*443\)$"
    with pytest.raises(OutputUnwritableError, match=expected):
        write_atomically("gs://b/x.safetensors", b"data")


def write_document(path, tensors: dict, document) -> str:
    """A checkpoint file holding ``tensors`` and any JSON ``document`` (what a hostile or hand-made file holds)."""
    import json

    from safetensors.torch import save

    data = save({name: t.contiguous() for name, t in tensors.items()}, metadata={"stylebeam": json.dumps(document)})
    path.write_bytes(data)
    return str(path)


def evil_stylizer(path, style_names=None, **changes) -> str:
    """A 26-style stylizer checkpoint (a tiny network) whose document says what the caller wants."""
    model = MultiStyleTransformer(StylizerConfig(num_styles=26, width=0.25, num_residual=1))
    document = {
        "format_version": 1,
        "kind": "stylebeam.stylizer",
        "config": model.config.to_dict(),
        "style_names": [f"s{i:02d}" for i in range(26)] if style_names is None else style_names,
        "training": {},
    }
    document = {key: value for key, value in (document | changes).items() if value is not DROP}
    return write_document(path, model.state_dict(), document)


DROP = object()
NAMES = [f"s{i:02d}" for i in range(26)]
CONFIG = {"num_styles": 26, "width": 0.25, "num_residual": 1}
BAD_DOCUMENTS = {
    "2 names for 26 styles": ({"style_names": NAMES[:2]}, "2 style names for a 26-style network"),
    "29 names for 26 styles": ({"style_names": [*NAMES, "x", "y", "z"]}, "29 style names for a 26-style network"),
    "26 copies of one name": ({"style_names": ["same"] * 26}, "must be unique: 'same'"),
    "a string of 26 letters": ({"style_names": "abcdefghijklmnopqrstuvwxyz"}, "style_names is a string, not a list"),
    "no config": ({"config": DROP}, "has no 'config'"),
    "no style names": ({"style_names": DROP}, "has no 'style_names'"),
    "config a list": ({"config": [26]}, "config is a list, not an object"),
    "unknown config key": ({"config": CONFIG | {"layers": 9}}, "unknown config key 'layers'"),
    "config of the wrong type": (
        {"config": CONFIG | {"num_styles": "26"}},
        "config num_styles is '26', not an integer",
    ),
    "config for other tensors": ({"config": CONFIG | {"num_styles": 27}}, "weights do not fit the stored architecture"),
    "a huge claimed network": ({"config": CONFIG | {"width": 1e6}}, "weights do not fit the stored architecture"),
    "training a string": ({"training": "x"}, "training is a string, not an object"),
    "absolute traversal": ({"style_names": ["/" + "../" * 20 + "any/where/x", *NAMES[1:]]}, "path separator"),
    "relative traversal": ({"style_names": ["../../x", *NAMES[1:]]}, "path separator"),
    "backslashes": ({"style_names": ["..\\..\\x", *NAMES[1:]]}, "path separator"),
    "NUL": ({"style_names": ["a\x00b", *NAMES[1:]]}, "control character"),
    "newline": ({"style_names": ["a\nb", *NAMES[1:]]}, "control character"),
    "ESC": ({"style_names": ["\x1b[2Jx", *NAMES[1:]]}, "control character"),
    "10,000 characters": ({"style_names": ["x" * 10_000, *NAMES[1:]]}, "longer than 100 characters"),
    "empty name": ({"style_names": ["", *NAMES[1:]]}, "it is empty"),
    "a number as a name": ({"style_names": [5, *NAMES[1:]]}, "it is a int, not a string"),
    "a newer format": ({"format_version": 2}, "format_version 2; this stylebeam reads 1"),
}


@pytest.mark.parametrize("case", BAD_DOCUMENTS)
def test_every_bad_document_is_one_checkpoint_error_line(tmp_path, case):
    """Style names count, uniqueness, type and characters, required keys and config are checked on every load
    (load_tensors without a kind is what augment uses; load_stylizer what stylize and train_stylizer use)."""
    from models.style.checkpoint import load_tensors

    changes, message = BAD_DOCUMENTS[case]
    path = evil_stylizer(tmp_path / "evil.safetensors", **changes)
    for load in (load_stylizer, load_tensors):
        with pytest.raises(CheckpointError) as error:
            load(path)
        text = str(error.value)
        assert message in text and path in text and "\n" not in text and "\x1b" not in text, text
        assert len(text) < 400, text


@pytest.mark.parametrize("document", [[1, 2], "stylizer", None, 7])
def test_a_document_that_is_not_an_object_is_refused(tmp_path, document):
    from models.style.checkpoint import load_tensors

    path = write_document(tmp_path / "x.safetensors", {"w": torch.ones(2)}, document)
    for load in (load_stylizer, load_tensors):
        with pytest.raises(CheckpointError, match="its stylebeam document is .*, not an object"):
            load(path)


def test_a_document_of_an_unknown_kind_is_refused_where_no_kind_is_asked(tmp_path):
    from models.style.checkpoint import load_tensors

    path = write_document(tmp_path / "x.safetensors", {"w": torch.ones(2)}, {"kind": "stylebeam.other"})
    with pytest.raises(CheckpointError, match="stylebeam reads stylebeam.stylizer"):
        load_tensors(path)


def test_arbitrary_documents_are_checked_against_their_tensors(tmp_path):
    from models.style.checkpoint import load_arbitrary, load_tensors, save_arbitrary
    from models.style.predictor import StylePredictor

    transformer = MultiStyleTransformer(StylizerConfig(0, embedding_size=100, width=0.25, num_residual=1))
    path = tmp_path / "pair.safetensors"
    save_arbitrary(str(path), StylePredictor(), transformer)
    tensors, document, _ = load_tensors(str(path))
    for changes, message in [
        ({"config": document["config"] | {"num_residual": 2}}, r"no tensor transformer\.res2"),
        ({"config": DROP}, "has no 'config'"),
        ({"source": ["x"]}, "source is a list, not an object"),
    ]:
        changed = {k: v for k, v in (document | changes).items() if v is not DROP and k != "tensors_sha256"}
        bad = write_document(tmp_path / "bad.safetensors", tensors, changed)
        with pytest.raises(CheckpointError, match=message):
            load_arbitrary(bad)


def test_writers_refuse_names_a_loader_would_refuse(tmp_path):
    for names, message in [(["a/b", "c"], "path separator"), (["a", "b\x1b"], "control character")]:
        with pytest.raises(ValueError, match=message):
            save_stylizer(str(tmp_path / "x.safetensors"), make_net(), names)
