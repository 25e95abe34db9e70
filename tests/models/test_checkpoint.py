import pytest
import torch

from models.checkpoint import load_stylizer, save_stylizer
from models.errors import CheckpointError
from models.stylizer import MultiStyleTransformer, StylizerConfig, one_hot


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
    from models.checkpoint import load_tensors, save_tensors

    path = tmp_path / "deep" / "dir" / "x.safetensors"
    save_tensors(str(path), {"w": torch.ones(2)}, {"kind": "stylebeam.other"})
    assert path.exists() and not (tmp_path / "deep" / "dir" / "x.safetensors.partial").exists()
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

    from models.errors import OutputUnwritableError
    from models.files import write_atomically

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
