import os
import sys

import pytest
import torch
from PIL import Image

from models.style.checkpoint import save_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from pipelines.cli import run_main
from pipelines.stylize import main
from tests.conftest import make_image

GATYS_FAST = ["--loss-network", "random", "--steps", "3", "--max-size", "32"]


@pytest.fixture
def images(tmp_path):
    make_image(48, 36, seed=1).save(tmp_path / "cat.png")
    make_image(48, 36, seed=2).save(tmp_path / "dog.jpg")
    make_image(40, 40, seed=3).rotate(30).save(tmp_path / "starry.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    return tmp_path


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = MultiStyleTransformer(StylizerConfig(2, width=0.25))
    with torch.no_grad():
        for rows in model.style_parameters():  # a fresh network's styles are identical; make "oil" differ
            rows[1] += 0.5 * torch.randn_like(rows[1])
    path = tmp_path / "two.safetensors"
    save_stylizer(str(path), model, ["ink", "oil"])
    return path


def run(argv, capsys):
    code = run_main(main, [str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def help_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_describes_every_mode(capsys):
    assert all(mode in help_of([], capsys) for mode in ("gatys", "styles", "paintings"))
    for flag in ("--preserve-color", "--style-weights", "--loss-network", "--content", "--max-size"):
        assert flag in help_of(["gatys"], capsys)
    for mode in ("styles", "paintings"):
        text = help_of([mode], capsys)
        assert "--stylizer" in text and "--alpha" in text and "(default: auto)" in text and "--steps" not in text


def test_gatys_writes_a_png_and_prints_final_losses(images, capsys):
    output = images / "out.png"
    argv = ["gatys", "--content", images / "cat.png", "--style", images / "starry.png", "--output", output]
    code, out, err = run([*argv, *GATYS_FAST], capsys)
    assert code == 0, err
    with Image.open(output) as result:
        assert result.format == "PNG" and result.size == (32, 24)  # long side = --max-size, aspect kept
    assert "content" in out and "style" in out and "total" in out
    assert "3/3" in err  # the progress bar ran every step


def test_gatys_several_contents_and_blended_styles_into_a_directory(images, capsys):
    make_image(40, 40, seed=4).save(images / "waves.png")
    argv = ["gatys", "--content", images / "cat.png", images / "dog.jpg", "--style", images / "starry.png"]
    argv += ["--style", images / "waves.png", "--style-weights", "3,1", "--output", images / "out", "--preserve-color"]
    argv += ["--optimizer", "adam"]
    code, out, err = run([*argv, *GATYS_FAST], capsys)
    assert code == 0, err
    assert sorted(os.listdir(images / "out")) == ["cat__starry+waves.png", "dog__starry+waves.png"]
    assert "1/1" in err  # same size: one batch
    assert out.count("total") == 2


def test_gatys_loss_network_flags(images, capsys):
    argv = ["gatys", "--content", images / "cat.png", "--style", images / "starry.png", "--output", images / "o.png"]
    argv += ["--loss-arch", "vgg16", "--pooling", "avg", "--content-layers", "relu2_2", "--style-layers", "relu1_2"]
    code, _, err = run([*argv, *GATYS_FAST], capsys)
    assert code == 0, err
    code, _, err = run([*argv, *GATYS_FAST, "--style-layers", "relu5_4"], capsys)
    assert code == 2 and err.startswith("error: unknown vgg16 layer(s) relu5_4;") and err.count("\n") == 1


@pytest.mark.slow
def test_gatys_is_reproducible_by_seed(images, capsys):
    def stylise(seed, name):
        argv = ["gatys", "--content", images / "cat.png", "--style", images / "starry.png", "--output", images / name]
        argv += ["--init", "noise", "--optimizer", "adam", "--seed", seed, *GATYS_FAST]
        assert run(argv, capsys)[0] == 0
        return (images / name).read_bytes()

    assert stylise(1, "a.png") == stylise(1, "b.png")
    assert stylise(1, "a.png") != stylise(2, "c.png")


def test_missing_or_unreadable_inputs_give_one_error_line(images, capsys):
    style = ["--style", images / "starry.png", "--output", images / "o.png", *GATYS_FAST]
    code, out, err = run(["gatys", "--content", images / "nope.png", *style], capsys)
    assert code == 2 and err == f"error: file not found: {images / 'nope.png'}\n"
    code, out, err = run(["gatys", "--content", images / "broken.png", *style], capsys)
    assert code == 2 and err.count("\n") == 1 and "broken.png" in err and err.startswith("error: ")
    assert not (images / "o.png").exists()


def test_imagenet_loss_network_without_weights_says_what_to_do(images, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(images / "empty-hub"))
    argv = ["gatys", "--content", images / "cat.png", "--style", images / "starry.png", "--output", images / "o.png"]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "ImageNet VGG19 weights are not in the torch hub cache" in err and "--loss-network random" in err


def test_usage_errors(images, checkpoint, capsys):
    content = ["--content", images / "cat.png", images / "dog.jpg"]
    code, _, err = run(["gatys", *content, "--style", images / "starry.png", "--output", images / "o.png"], capsys)
    assert code == 2 and "pass a directory" in err
    argv = ["gatys", *content, "--style", images / "starry.png", "--style-weights", "1,2", "--output", "d"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "2 value(s) for 1 --style" in err
    argv = ["styles", "--stylizer", checkpoint, *content, "--output", images / "d", "--steps", "3"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith("error: unrecognized arguments: --steps 3 (see python -m pipelines.stylize")
    code, _, err = run(["gatys", *content, "--output", images / "d"], capsys)
    assert code == 2 and "the following arguments are required: --style" in err


def test_checkpoint_writes_every_style_for_every_content(images, checkpoint, capsys):
    argv = [
        "styles",
        "--stylizer",
        checkpoint,
        "--content",
        images / "cat.png",
        images / "dog.jpg",
        "--output",
        images / "out",
    ]
    code, out, err = run([*argv, "--batch-size", "1"], capsys)
    assert code == 0, err
    names = ["cat__ink.png", "cat__oil.png", "dog__ink.png", "dog__oil.png"]
    assert sorted(os.listdir(images / "out")) == names
    with Image.open(images / "out" / "cat__ink.png") as result:
        assert result.size == (48, 36)  # the content's own size by default
    with Image.open(images / "out" / "cat__ink.png") as ink, Image.open(images / "out" / "cat__oil.png") as oil:
        assert ink.tobytes() != oil.tobytes()


def test_checkpoint_alpha_zero_returns_the_content(images, checkpoint, capsys):
    argv = ["styles", "--stylizer", checkpoint, "--content", images / "cat.png", "--output", images / "out"]
    code, _, err = run([*argv, "--style", "oil", "--alpha", "0"], capsys)
    assert code == 0, err
    assert os.listdir(images / "out") == ["cat__oil.png"]
    with Image.open(images / "out" / "cat__oil.png") as result, Image.open(images / "cat.png") as original:
        assert result.tobytes() == original.convert("RGB").tobytes()


def test_checkpoint_unknown_style_lists_the_known_ones(images, checkpoint, capsys):
    argv = ["styles", "--stylizer", checkpoint, "--content", images / "cat.png", "--output", images / "out"]
    code, _, err = run([*argv, "--style", "water"], capsys)
    assert code == 2 and err == "error: unknown style 'water'; this checkpoint has: ink, oil\n"
    code, _, err = run(["styles", "--stylizer", images / "missing.safetensors", *argv[3:]], capsys)
    assert code == 2 and "checkpoint not found" in err


def test_module_entry_point_exits_2_with_one_line(images, capsys, monkeypatch):
    """``python -m pipelines.stylize`` goes through ``run_main``: exit 2 and one line. Run as ``-m`` runs it (runpy,
    as ``__main__``), in this interpreter: what a fresh interpreter prints is checked once, for the heavier
    ``pipelines.augment``, in test_augment.py."""
    import runpy
    import warnings

    argv = ["gatys", "--content", str(images / "nope.png"), "--style", str(images / "starry.png"), "--output", "o.png"]
    monkeypatch.chdir(images)
    monkeypatch.setattr(sys, "argv", ["stylize", *argv])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as exited:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is imported already (this file did)
        runpy.run_module("pipelines.stylize", run_name="__main__", alter_sys=True)
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: file not found: {images / 'nope.png'}"]


def test_style_image_stylises_with_any_painting(images, capsys):
    paintings = [images / "starry.png", images / "dog.jpg"]
    argv = ["paintings", "--content", images / "cat.png", "--output", images / "out", "--style-image", *paintings[:1]]
    code, out, err = run([*argv, "--style-image", paintings[1]], capsys)
    assert code == 0, err
    full = Image.open(images / "out" / "cat__starry.png")
    assert full.size == (48, 36) and (images / "out" / "cat__dog.png").exists()
    code, _, err = run([*argv, "--output", images / "weak", "--alpha", "0.1"], capsys)
    assert code == 0, err
    import numpy as np

    photo = np.asarray(Image.open(images / "cat.png").convert("RGB"), np.float64)
    weak = np.asarray(Image.open(images / "weak" / "cat__starry.png"), np.float64)
    assert np.abs(weak - photo).mean() < np.abs(np.asarray(full, np.float64) - photo).mean()
    code, _, err = run([*argv, "--steps", "3"], capsys)
    assert code == 2 and "unrecognized arguments: --steps 3" in err


def test_an_output_named_like_an_image_it_cannot_write_is_refused(images, checkpoint, capsys):
    """--output one.gif used to become a folder named one.gif holding PNGs."""
    content = ["--content", str(images / "cat.png")]
    code, _, err = run(["styles", *content, "--stylizer", checkpoint, "--output", str(images / "one.gif")], capsys)
    assert code == 2 and err == f"error: --output must be a directory with stylize styles, got {images / 'one.gif'}\n"
    argv = ["gatys", *content, "--style", str(images / "starry.png"), *GATYS_FAST, "--output", "o.webp"]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.startswith("error: --output o.webp: .webp images cannot be written here")
    assert not (images / "one.gif").exists()


def test_a_full_disk_is_one_line_and_leaves_no_empty_image(images, checkpoint, capsys, full_disk):
    """On a full disk stylize left a 0-byte p0__magenta_01.png and a traceback."""
    out = images / "out"
    full_disk(out)
    argv = ["styles", "--stylizer", checkpoint, "--content", images / "cat.png", "--output", out, "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write {out}/cat__"), err
    assert err.rstrip().endswith("no space left on the device (ENOSPC)"), err
    assert os.listdir(out) == []  # neither an empty image under its name nor a temporary file


def written_images(root) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*.png")}


@pytest.mark.parametrize(
    "evil_name",
    [
        "/" + "../" * 20 + "{root}/anywhere/x",  # absolute: cat__/ then up to / and down to any folder
        "/../../escaped",  # relative: out/cat__/../../escaped.png is beside out's parent
    ],
)
def test_a_checkpoint_style_name_cannot_write_outside_the_output(images, capsys, evil_name):
    """A checkpoint whose style name climbs out of --output wrote {root}/anywhere/x.png (any *.png anywhere)."""
    from tests.models.style.test_checkpoint import evil_stylizer

    names = [evil_name.format(root=images), *(f"s{i:02d}" for i in range(1, 26))]
    evil = evil_stylizer(images / "evil.safetensors", names)
    before = written_images(images)
    output = images / "work" / "out"
    code, _, err = run(["styles", "--stylizer", evil, "--content", images / "cat.png", "--output", output], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "path separator" in err, err
    assert written_images(images) == before  # nothing written anywhere, inside --output or out of it


def test_names_are_checked_again_when_paths_are_built(images, capsys, monkeypatch):
    """The second wall: were a bad name to pass the checkpoint validator, the output path built from it is still
    one plain component inside --output, checked for every output before the first is written."""
    import models.style.checkpoint
    from tests.models.style.test_checkpoint import evil_stylizer

    monkeypatch.setattr(models.style.checkpoint, "style_names_problem", lambda names, count: None)
    names = [*(f"s{i:02d}" for i in range(25)), "/../../escaped"]
    evil = evil_stylizer(images / "evil.safetensors", names)
    before = written_images(images)
    code, _, err = run(
        ["styles", "--stylizer", evil, "--content", images / "cat.png", "--output", images / "out"], capsys
    )
    assert code == 2 and err.startswith("error: output name 'cat__/../../escaped.png' cannot name a file"), err
    assert written_images(images) == before


def test_painting_and_content_names_with_control_characters_or_backslashes_are_refused(images, capsys):
    odd = images / "new\nline.png"
    make_image(40, 40, seed=5).save(odd)
    argv = ["paintings", "--content", images / "cat.png", "--output", images / "out", "--style-image", odd]
    code, _, err = run(argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "control character" in err and "\\n" in err, err
    back = images / "back\\slash.png"
    make_image(40, 40, seed=6).save(back)
    argv = ["paintings", "--content", back, "--output", images / "out2", "--style-image", images / "starry.png"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "path separator" in err, err
    assert not (images / "out").exists() and not (images / "out2").exists()


def test_a_symlink_in_the_output_folder_is_not_followed_outside(images, checkpoint, capsys):
    outside = images / "elsewhere"
    outside.mkdir()
    (images / "out").mkdir()
    os.symlink(outside / "victim.png", images / "out" / "cat__oil.png")
    code, _, err = run(
        ["styles", "--stylizer", checkpoint, "--content", images / "cat.png", "--output", images / "out"], capsys
    )
    assert code == 2 and "leads outside" in err, err
    assert not (outside / "victim.png").exists() and not (images / "out" / "cat__ink.png").exists()


def test_duplicate_style_names_in_a_checkpoint_are_refused_not_overwritten(images, capsys):
    """26 copies of one name said "wrote 26 image(s)" and wrote one file."""
    from tests.models.style.test_checkpoint import evil_stylizer

    evil = evil_stylizer(images / "evil.safetensors", ["same"] * 26)
    code, out, err = run(
        ["styles", "--stylizer", evil, "--content", images / "cat.png", "--output", images / "out"], capsys
    )
    assert code == 2 and "style names must be unique: 'same'" in err and "wrote" not in out


def test_sizes_past_what_a_mode_runs_at_are_refused_in_one_line(images, checkpoint, capsys):
    """Stylize --image-size 3000 ran out of memory with a traceback."""
    gatys = ["gatys", "--content", images / "cat.png", "--style", images / "starry.png", "--loss-network", "random"]
    code, _, err = run([*gatys, "--output", images / "g.png", "--image-size", "3000"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--image-size 3000" in err and "gatys stylises at most" in err
    fast = ["styles", "--stylizer", checkpoint, "--content", images / "cat.png", "--output", images / "out"]
    code, _, err = run([*fast, "--image-size", "5000"], capsys)
    assert code == 2 and err.count("\n") == 1 and "at most 16777216 pixels" in err
    # --max-size is the long side: a 48x36 photo at 5000 would be 5000x3750, judged before any pixel is resized
    code, _, err = run([*fast, "--max-size", "5000"], capsys)
    assert code == 2 and err.count("\n") == 1 and "cat.png would be stylised at 5000x3750" in err
    code, _, err = run([*fast, "--image-size", "20000"], capsys)
    assert code == 2 and "--image-size" in err and "from 0 to 8192" in err
    code, _, err = run([*fast, "--batch-size", "100000"], capsys)
    assert code == 2 and "--batch-size" in err and "from 1 to 1024" in err
    assert not (images / "out").exists()


def test_running_out_of_memory_is_one_line(images, checkpoint, capsys, monkeypatch):
    from models.style.stylizer import MultiStyleTransformer

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(MultiStyleTransformer, "forward", no_memory)
    argv = [
        "styles",
        "--stylizer",
        checkpoint,
        "--content",
        images / "cat.png",
        "--output",
        images / "out",
        "--no-progress",
    ]
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: out of memory") and "--batch-size" in err


@pytest.mark.parametrize("precision", [None, pytest.param("bf16", marks=pytest.mark.slow)])
def test_a_checkpoint_picture_is_the_jobs_row_for_the_same_photo_style_and_alpha(tmp_path, capsys, precision):
    """One runner and one precision rule: `stylize styles` writes the bytes `augment` writes for that row.

    The photo is a square on the job's size grid (no resize, no crop at --image-size 0); `--styles all` makes the job
    plan every style at the one --alpha, as the CLI does; both outputs are PNG, so pixels compare exactly. bf16 is
    where the two parted before (the job ran bf16 under auto on a bf16 CPU, the CLI fp32).
    """
    import io

    import numpy as np
    import pandas as pd

    from pipelines import augment

    (tmp_path / "in").mkdir()
    make_image(40, 40, seed=5).save(tmp_path / "in" / "photo.png")
    chosen = ["--precision", precision] if precision else []
    argv = [
        "styles",
        "--stylizer",
        "magenta26",
        "--content",
        tmp_path / "in" / "photo.png",
        "--output",
        tmp_path / "cli",
    ]
    code, _, err = run([*argv, "--style", "magenta_05", "--alpha", "0.6", *chosen], capsys)
    assert code == 0, err
    job = [f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'job'}", "--styles=all", "--alpha=0.6", "--seed=3"]
    job += ["--image-size=0", "--min-side=16", "--format=png", "--num-shards=1", "--runner=FnApiRunner"]
    assert augment.run([*job, *(["--precision=bf16"] if precision else [])]).state == "DONE"

    rows = pd.read_parquet(next((tmp_path / "job").glob("data/augmented-*.parquet")))
    (row,) = rows[rows["style"] == "magenta_05"].itertuples()
    assert row.alpha == np.float32(0.6)
    with Image.open(io.BytesIO(row.image)) as from_job, Image.open(tmp_path / "cli" / "photo__magenta_05.png") as cli:
        assert np.array_equal(np.asarray(cli), np.asarray(from_job))


@pytest.mark.slow
def test_the_old_mode_flags_still_work_with_a_one_line_notice(images, checkpoint, capsys):
    """The release before chose the mode with flags; each old spelling gives the same pictures as its subcommand,
    and says once, on stderr, what to write instead."""
    content = ["--content", images / "cat.png", "--no-progress"]
    spellings = [
        (["--checkpoint", checkpoint], ["styles", "--stylizer", checkpoint], "stylize styles --stylizer CKPT"),
        (["--style-image", images / "starry.png"], ["paintings", "--style-image", images / "starry.png"], "paintings"),
        (["--method", "gatys", "--style", images / "starry.png", *GATYS_FAST], ["gatys", "--style"], "stylize gatys"),
        (["--style", images / "starry.png", *GATYS_FAST], ["gatys", "--style"], "stylize gatys"),  # no mode: gatys
    ]
    made = {}  # subcommand argv → its output folder: the two old Gatys spellings share one subcommand run
    for number, (old, new, notice) in enumerate(spellings):
        if new == ["gatys", "--style"]:
            new = ["gatys", "--style", images / "starry.png", *GATYS_FAST]
        code, _, err = run([*old, *content, "--output", images / f"old{number}"], capsys)
        assert code == 0, err
        (line,) = [line for line in err.splitlines() if line.startswith("deprecated:")]
        assert notice in line and line == err.splitlines()[0]
        if tuple(map(str, new)) not in made:
            code, _, err = run([*new, *content, "--output", images / f"new{number}"], capsys)
            assert code == 0 and "deprecated" not in err, err
            made[tuple(map(str, new))] = images / f"new{number}"
        new_folder = made[tuple(map(str, new))]
        old_files = sorted(os.listdir(images / f"old{number}"))
        assert old_files == sorted(os.listdir(new_folder)) and old_files
        for name in old_files:
            assert (images / f"old{number}" / name).read_bytes() == (new_folder / name).read_bytes()
    code, _, err = run(["--checkpoint", checkpoint, "--method", "gatys", *content, "--output", images / "x"], capsys)
    assert code == 2 and "two different modes" in err


def test_a_content_folder_is_read_as_augment_reads_its_input(tmp_path, checkpoint, capsys):
    """Class sub-folders are labels (pictures go to OUT/<label>/), every image below is read, one picture per image
    and style; a file that cannot be decoded is skipped with a warning naming it, as augment rejects it."""
    photos = tmp_path / "photos"
    for label, seeds in {"cats": (1, 2), "dogs": (3,)}.items():
        (photos / label).mkdir(parents=True)
        for seed in seeds:
            make_image(40, 32, seed=seed).save(photos / label / f"p{seed}.png")
    make_image(40, 32, seed=4).save(photos / "loose.jpg")
    (photos / "dogs" / "broken.png").write_bytes(b"not a png")
    argv = ["styles", "--stylizer", checkpoint, "--content", photos, "--output", tmp_path / "out", "--style", "ink"]
    code, out, err = run([*argv, "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png")) == [
        "cats/p1__ink.png",
        "cats/p2__ink.png",
        "dogs/p3__ink.png",
        "loose__ink.png",
    ]
    assert "wrote 4 image(s)" in out
    assert [line for line in err.splitlines() if line.startswith("warning")] == [
        f"warning: skipping {photos}/dogs/broken.png: " + err.split("broken.png: ", 1)[1].splitlines()[0]
    ]
    # the same picture as the file named alone
    code, _, err = run([*argv[:4], photos / "cats" / "p1.png", "--output", tmp_path / "one", "--style", "ink"], capsys)
    assert code == 0, err
    assert (tmp_path / "one" / "p1__ink.png").read_bytes() == (tmp_path / "out" / "cats" / "p1__ink.png").read_bytes()
