"""models.files: names a file supplies become file names only as one plain component inside the output folder."""

import os

import pytest

from models.errors import OutputUnwritableError, UsageError
from models.files import file_name_problem, path_under, safe_file_name


@pytest.mark.parametrize(
    "name, problem",
    [
        ("/" + "../" * 20 + "any/where/x", "path separator"),
        ("../../x", "path separator"),
        ("..\\..\\x", "path separator"),
        ("..", "starts with a dot"),
        (".hidden", "starts with a dot"),
        ("", "empty"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("\x1b[31mred", "control character"),
        ("é" * 200, "longer than 255 bytes"),
        (7, "not a string"),
    ],
)
def test_unsafe_names_are_refused_in_one_line(name, problem):
    assert problem in file_name_problem(name)
    with pytest.raises(UsageError) as error:
        safe_file_name(name, "style name")
    assert problem in str(error.value) and "\n" not in str(error.value) and "\x1b" not in str(error.value)


def test_plain_names_pass_unchanged(tmp_path):
    for name in ("magenta_01", "la muse", "starry+night", "a..b", "日本画"):
        assert safe_file_name(name, "style name") == name
    assert path_under(str(tmp_path), "p__la muse.png", "output") == f"{tmp_path}/p__la muse.png"
    assert path_under("gs://bucket/out/", "p__x.png", "output") == "gs://bucket/out/p__x.png"


def test_a_symlink_in_the_output_folder_cannot_lead_outside(tmp_path):
    outside, output = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    output.mkdir()
    os.symlink(outside / "victim.png", output / "p__x.png")
    with pytest.raises(OutputUnwritableError, match="leads outside"):
        path_under(str(output), "p__x.png", "output name")
    # the output folder itself may be a link: what counts is where its files land
    os.symlink(outside, tmp_path / "linked")
    assert path_under(str(tmp_path / "linked"), "p__y.png", "output") == f"{tmp_path}/linked/p__y.png"
