"""pipelines.train_embeddings and pipelines.evaluate_embeddings end to end, on a generated clean corpus."""

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import deepdream, embed, evaluate_embeddings, train_embeddings
from pipelines.cli import run_main
from tests.models.corpus_fixture import corpus_rows, write_corpus
from transforms.schemas import EMBEDDINGS, RAW_CORPUS, REJECTED, rejected_row

TINY = ["--backbone=resnet-tiny", "--weights=random", "--image-size=32", "--min-count=2", "--text-dim=16"]
TINY += ["--heldout-fraction=0.25", "--batch-size=32", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rows = corpus_rows(160, seed=2, size=40)
    rows[0] = rows[0] | {"image": b"not an image"}
    rows[1] = rows[1] | {"text": "", "caption": "", "caption_hashtags": []}
    write_corpus(root / "clean", rows)
    # the clean job's dead letters sit beside its table; training must not read them as posts
    pq.write_table(
        pa.Table.from_pylist([rejected_row("x", "clean", "duplicate")], REJECTED),
        root / "clean" / "rejected-00000-of-00001.parquet",
    )
    return root, rows


@pytest.fixture(scope="module")
def trained(corpus):
    root, _ = corpus
    train_embeddings.main([f"--input={root / 'clean'}", f"--output={root / 'run'}", "--epochs=2", *TINY])
    return root / "run"


def test_training_writes_checkpoint_curves_and_accounts_for_every_post(corpus, trained):
    _, rows = corpus
    for name in ["model.safetensors", "train_state.pt", "history.json", "loss_curve.png", "summary.json"]:
        assert (trained / name).exists(), name
    summary = json.loads((trained / "summary.json").read_text())
    counts = summary["counts"]
    assert sum(v for k, v in counts.items() if k.endswith(".rejected.not_an_image")) == 1
    assert counts["train.no_text_target"] + counts["heldout.no_text_target"] == 1
    assert counts["train.examples"] + counts["heldout.examples"] == len(rows) - 2
    assert summary["loss"] == "cosine" and summary["text_model"]["kind"] == "word2vec"
    assert [h["epoch"] for h in json.loads((trained / "history.json").read_text())] == [1, 2]


def test_existing_run_needs_resume_and_resume_extends_it(corpus, trained, capsys):
    root, _ = corpus
    argv = [f"--input={root / 'clean'}", f"--output={trained}", *TINY]
    assert run_main(train_embeddings.main, [*argv, "--epochs=3"]) == 2
    assert "already holds a training run; pass --resume" in capsys.readouterr().err
    train_embeddings.main([*argv, "--epochs=3", "--resume"])
    assert [h["epoch"] for h in json.loads((trained / "history.json").read_text())] == [1, 2, 3]


@pytest.mark.slow
def test_evaluation_reports_model_and_random_and_agrees_with_embed_job_output(corpus, trained, capsys):
    root, _ = corpus
    direct = evaluate_embeddings.main(
        [f"--input={root / 'clean'}", f"--model={trained}", "--queries=red,green,blue,yellow,circle", "--no-progress"]
    )
    printed = capsys.readouterr().out
    assert "P@5" in printed and "median_rank" in printed and "random" in printed
    saved = json.loads((trained / "retrieval.json").read_text())
    assert saved["model"] == direct["model"] and set(saved["random"]) == set(direct["model"])
    assert direct["word_queries"] == ["red", "green", "blue", "yellow", "circle"]
    assert direct["counts"]["posts"] == direct["num_images"] > 20

    embed.run([f"--input={root / 'clean'}", f"--output={root / 'emb'}", f"--model={trained}"])
    stored = evaluate_embeddings.main(
        [
            f"--input={root / 'clean'}",
            f"--model={trained}",
            f"--embeddings={root / 'emb'}",
            f"--output={root / 'stored.json'}",
            "--queries=red,green,blue,yellow,circle",
        ]
    )
    assert stored["num_images"] == direct["num_images"]
    for name, value in direct["model"].items():
        assert stored["model"][name] == pytest.approx(value, abs=1e-6), name


def test_lda_targets_with_the_contrastive_loss(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "lda"
    argv = [f"--input={root / 'clean'}", f"--output={out}", "--epochs=1", "--text-model=lda", "--loss=infonce"]
    train_embeddings.main(argv + TINY)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["loss"] == "infonce" and summary["text_model"] == {"dim": 16, "kind": "lda", "vocabulary": 19}


@pytest.mark.parametrize(
    "module, flags",
    [
        (train_embeddings, ["--text-model", "--backbone", "--resume", "--heldout-fraction"]),
        (evaluate_embeddings, ["--embeddings", "--queries", "--k"]),
        (embed, ["--model", "--batch-size", "--cpu-threads", "--runner"]),
        (deepdream, ["--layer", "--text", "--octaves", "--torchvision"]),
    ],
)
def test_help_lists_the_flags(module, flags, capsys):
    entry = getattr(module, "main", None) or module.run
    with pytest.raises(SystemExit) as exit_info:
        entry(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in flags)


def test_a_damaged_resume_state_is_one_line_that_says_what_is_wrong(corpus, trained, tmp_path, capsys):
    from tests.pipelines.test_train_stylizer import damaged_copies

    root, _ = corpus
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = run / "train_state.pt"
    for damage, content in damaged_copies(state.read_bytes()).items():
        state.write_bytes(content)
        argv = [f"--input={root / 'clean'}", f"--output={run}", *TINY, "--epochs=9", "--resume"]
        assert run_main(train_embeddings.main, argv) == 2, damage
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (damage, err)
        assert damage in err and str(state) in err, (damage, err)


@pytest.mark.parametrize("table", ["raw", "embeddings"])
def test_a_corpus_that_is_not_clean_is_one_line_that_says_to_clean_it(corpus, trained, table, tmp_path, capsys):
    _, rows = corpus
    folder = tmp_path / table
    folder.mkdir()
    if table == "raw":  # pipelines.collect's output: captions never cleaned, no text or phash column
        written = pa.Table.from_pylist([{k: v for k, v in row.items() if k in RAW_CORPUS.names} for row in rows])
        pq.write_table(written.cast(RAW_CORPUS), folder / "raw-00000-of-00001.parquet")
    else:
        written = pa.Table.from_pylist([{"id": row["id"], "embedding": [0.5]} for row in rows], EMBEDDINGS)
        pq.write_table(written, folder / "embeddings-00000-of-00001.parquet")
    (folder / "summary.json").write_text("{}")  # a finished run of the job that writes this table
    commands = {
        train_embeddings.main: [f"--input={folder}", f"--output={tmp_path / 'run'}", *TINY],
        evaluate_embeddings.main: [f"--input={folder}", f"--model={trained}", "--no-progress"],
    }
    for main, argv in commands.items():
        assert run_main(main, argv) == 2, main.__module__
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {folder} is not a clean corpus"), err
        assert "text, phash columns)" in err and f"python -m pipelines.clean --input {folder}" in err, err
    assert not (tmp_path / "run").exists()


def test_resume_refuses_changed_settings_naming_the_flag_and_both_values(corpus, trained, tmp_path, capsys):
    """--resume took the run's settings and ignored the flags given; now a flag that differs is refused."""
    root, _ = corpus
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    history = (run / "history.json").read_text()
    argv = [f"--input={root / 'clean'}", f"--output={run}", *TINY, "--epochs=9", "--resume"]
    changed = {
        "--lr": ("0.001", "0.01"),
        "--seed": ("0", "3"),
        "--image-size": ("32", "40"),
        "--batch-size": ("32", "16"),
        "--text-dim": ("16", "8"),
        "--min-count": ("2", "3"),
        "--backbone": ("resnet-tiny", "resnet18"),
        "--loss": ("cosine", "infonce"),
    }
    for flag, (before, now) in changed.items():
        assert run_main(train_embeddings.main, [*argv, f"{flag}={now}"]) == 2, flag
        err = capsys.readouterr().err
        assert err.startswith(f"error: cannot resume {run}: {flag} differs (the run: {before}; now: {now})"), err
        assert len(err.splitlines()) == 1, err
    assert (run / "history.json").read_text() == history  # nothing trained


def test_a_hand_made_resume_state_without_its_optimizer_is_one_line(corpus, trained, tmp_path, capsys):
    from models.common.resume import load_resume_state, save_resume_state
    from models.embedding.trainer import RESUME_KIND

    root, _ = corpus
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state_file = str(run / "train_state.pt")
    state = load_resume_state(state_file, RESUME_KIND)
    save_resume_state(state_file, RESUME_KIND, {key: value for key, value in state.items() if key != "optimizer"})
    argv = [f"--input={root / 'clean'}", f"--output={run}", *TINY, "--epochs=3", "--resume"]
    assert run_main(train_embeddings.main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: resume state {state_file} has no optimizer") and len(err.splitlines()) == 1, err
    save_resume_state(state_file, RESUME_KIND, state | {"loss": [1, 2]})
    assert run_main(train_embeddings.main, argv) == 2
    err = capsys.readouterr().err
    assert f"resume state {state_file} is damaged" in err and len(err.splitlines()) == 1, err
