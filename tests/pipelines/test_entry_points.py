"""Every ``python -m pipelines.X`` answers ``--help`` without loading torch or Beam, and shows every default."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each command, and each of its subcommands, as a user asks for its help.
HELPS = [
    ["augment"],
    ["collect"],
    ["clean"],
    ["embed"],
    ["stylize"],
    ["stylize", "gatys"],
    ["stylize", "styles"],
    ["stylize", "paintings"],
    ["train_stylizer"],
    ["train_stylizer", "train"],
    ["train_stylizer", "add-styles"],
    ["train_stylizer", "bake"],
    ["train_stylizer", "import-fns"],
    ["train_embeddings"],
    ["evaluate_embeddings"],
    ["deepdream"],
    ["stylizers"],
    ["stylizers", "sheet"],
]
# One interpreter that holds nothing but the standard library forks a child per help: each child imports its
# command from nothing, as `python -m` does, answers --help, and reports which heavy packages it loaded.
PROBE = """
import contextlib, io, json, os, runpy, sys
for argv in json.loads(sys.argv[1]):
    read, write = os.pipe()
    if os.fork() == 0:
        sys.argv = [argv[0], *argv[1:], "--help"]
        text, code = io.StringIO(), None
        try:
            with contextlib.redirect_stdout(text):
                runpy.run_module(f"pipelines.{argv[0]}", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
        loaded = [name for name in ("torch", "torchvision", "apache_beam", "gensim") if name in sys.modules]
        os.write(write, json.dumps({"argv": argv, "code": code, "loaded": loaded, "help": text.getvalue()}).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        print(answer.read())
    os.wait()
"""


@pytest.mark.slow  # 18 fresh imports: ~14 s on a busy 2-core machine
def test_every_help_answers_without_torch_beam_or_gensim():
    """--help took 8-18 s on a busy 2-core machine when every command imported torch and Beam first; a parser
    needs neither. (A time limit would be flaky on a shared machine; what is imported is the honest measure.)"""
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HELPS)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    answers = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    assert [answer["argv"] for answer in answers] == HELPS
    for answer in answers:
        assert answer["code"] == 0 and answer["help"].startswith("usage: python -m pipelines."), answer["argv"]
        assert answer["loaded"] == [], (answer["argv"], answer["loaded"])


@pytest.fixture
def parsers(monkeypatch):
    """Every ``pipelines.cli.ArgumentParser`` built while the test runs (subcommands' included)."""
    from pipelines.cli import ArgumentParser

    built = []
    init = ArgumentParser.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(ArgumentParser, "__init__", recording)
    return built


def test_every_help_shows_every_default(parsers, capsys):
    import importlib

    for argv in HELPS:
        entry = importlib.import_module(f"pipelines.{argv[0]}")
        with pytest.raises(SystemExit):
            (getattr(entry, "run", None) or entry.main)([*argv[1:], "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert text.startswith("usage: python -m pipelines."), argv
    assert {parser.prog for parser in parsers} >= {f"python -m pipelines.{' '.join(argv)}" for argv in HELPS}
    for parser in parsers:
        for action in parser.declared:
            if action.default in (None, False, [], argparse.SUPPRESS) or action.help == argparse.SUPPRESS:
                continue
            assert "default" in action.help, (parser.prog, action.option_strings)


def test_the_names_the_parsers_hold_are_the_models():
    """Choices and defaults a parser names without importing torch or Beam are the ones the code below uses."""
    import dataclasses

    from models.dream import DreamConfig
    from models.style.registry import BUILTINS
    from pipelines import clean, cli, deepdream
    from transforms.dedup import DEFAULT_MAX_DISTANCE

    assert tuple(BUILTINS) == cli.BUILTIN_STYLIZERS
    assert clean.DEFAULT_MAX_HAMMING == DEFAULT_MAX_DISTANCE
    defaults = {field.name: field.default for field in dataclasses.fields(DreamConfig)}
    assert {name: defaults[name] for name in deepdream.DREAM_DEFAULTS} == deepdream.DREAM_DEFAULTS
