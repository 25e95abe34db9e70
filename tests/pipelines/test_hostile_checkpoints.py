"""Checkpoints as input: every command that loads one refuses a hostile or hand-made document in one line, exit 2.

Before: tracebacks of 495 (augment, a document without style names) and 673 lines (augment, 29 names for 26
styles), KeyError/AttributeError in stylize, deepdream and embed, and files written outside --output.
"""

import pytest
import torch

from pipelines import augment, deepdream, embed, stylize, stylizers, train_stylizer
from pipelines.cli import run_main
from tests.conftest import make_image
from tests.models.style.test_checkpoint import DROP, evil_stylizer, write_document

NAMES = [f"s{i:02d}" for i in range(26)]
STYLIZER_DOCUMENTS = {
    "29 names": ({"style_names": [*NAMES, "x", "y", "z"]}, "29 style names for a 26-style network"),
    "2 names": ({"style_names": NAMES[:2]}, "2 style names for a 26-style network"),
    "no style names": ({"style_names": DROP}, "has no 'style_names'"),
    "a string": ({"style_names": "abcdefghijklmnopqrstuvwxyz"}, "style_names is a string, not a list"),
    "traversal": ({"style_names": ["/../../x", *NAMES[1:]]}, "path separator"),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    make_image(48, 40, seed=1).save(folder / "p0.png")
    return folder


def one_line_error(capsys, entry, argv) -> str:
    code = run_main(entry, [str(arg) for arg in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("case", STYLIZER_DOCUMENTS)
def test_every_stylizer_command_refuses_a_bad_document(photos, tmp_path, capsys, case):
    changes, message = STYLIZER_DOCUMENTS[case]
    evil = evil_stylizer(tmp_path / "evil.safetensors", **changes)
    out = tmp_path / "out"
    commands = {
        "augment": (augment.run, ["--input", photos, "--output", out, "--stylizer", evil, "--runner=FnApiRunner"]),
        "stylize": (stylize.main, ["styles", "--stylizer", evil, "--content", photos / "p0.png", "--output", out]),
        "sheet": (stylizers.main, ["sheet", evil, "--content", photos / "p0.png", "--output", tmp_path / "s.png"]),
        "add styles": (
            train_stylizer.main,
            ["add-styles", "--base", evil, "--content", photos, "--style", photos / "p0.png", "--output", out / "x"]
            + ["--loss-network", "random", "--steps", "1", "--no-progress"],
        ),
    }
    for command, (entry, argv) in commands.items():
        err = one_line_error(capsys, entry, argv)
        assert message in err and evil in err, (command, err)
    assert not (tmp_path / "s.png").exists() and not list(tmp_path.rglob("*.parquet"))


EMBEDDING_DOCUMENTS = {
    "null": (None, "its stylebeam document is null, not an object"),
    "a list": ([1, 2], "its stylebeam document is a list, not an object"),
    "a string": ("x", "its stylebeam document is a string, not an object"),
    "no text": ({"kind": "stylebeam.embedding", "config": {}}, "document has no 'text'"),
    "a stylizer": ({"kind": "stylebeam.stylizer"}, "is a 'stylebeam.stylizer' checkpoint, not a 'stylebeam.embedding'"),
}


@pytest.mark.parametrize("case", EMBEDDING_DOCUMENTS)
def test_every_embedding_command_refuses_a_bad_document(photos, tmp_path, capsys, case):
    document, message = EMBEDDING_DOCUMENTS[case]
    evil = write_document(tmp_path / "model.safetensors", {"model.w": torch.ones(2)}, document)
    out = tmp_path / "out"
    commands = {
        "deepdream": (deepdream.main, ["--input", photos / "p0.png", "--output", out, "--model", evil]),
        "embed": (embed.run, ["--input", photos, "--output", out, "--model", evil, "--runner=FnApiRunner"]),
    }
    for command, (entry, argv) in commands.items():
        err = one_line_error(capsys, entry, argv)
        assert message in err and evil in err, (command, err)
