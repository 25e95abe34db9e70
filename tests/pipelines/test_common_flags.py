"""The README's table of shared flags is true for every command: the flag, its meaning, its default, its commands."""

import re
from pathlib import Path

import pytest

from pipelines import (
    augment,
    clean,
    collect,
    deepdream,
    embed,
    evaluate_embeddings,
    stylize,
    stylizers,
    train_embeddings,
    train_stylizer,
)

README = Path(__file__).resolve().parents[2] / "README.md"
COMMANDS = {
    "augment": (augment.run, []),
    "collect": (collect.run, []),
    "clean": (clean.run, []),
    "embed": (embed.run, []),
    **{f"train_stylizer {mode}": (train_stylizer.main, [mode]) for mode in train_stylizer.MODES},
    **{f"stylize {mode}": (stylize.main, [mode]) for mode in stylize.MODES},
    "train_embeddings": (train_embeddings.main, []),
    "evaluate_embeddings": (evaluate_embeddings.main, []),
    "deepdream": (deepdream.main, []),
    "stylizers export": (stylizers.main, ["export"]),
    "stylizers sheet": (stylizers.main, ["sheet"]),
}


def flag_table() -> list[tuple[str, str, str, set[str]]]:
    """Rows of the README's "Flags every command shares" table: (flag, meaning, default, commands)."""
    section = README.read_text().split("## Flags every command shares", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`--"):
            flag, meaning, default, commands = cells
            rows.append((flag.strip("`"), meaning, default, {c.strip() for c in commands.split(",")}))
    return rows


def help_entries(command: str, capsys) -> dict[str, str]:
    """``--help`` of ``command``: flag → its help text, whitespace folded."""
    entry, prefix = COMMANDS[command]
    with pytest.raises(SystemExit) as exited:
        entry([*prefix, "--help"])
    assert exited.value.code == 0
    entries, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        match = re.match(r"^ {2}(--[a-z-]+)(?:[ =][^ ]+)?(?: {2,}(.*))?$", line)
        if match:
            current = match.group(1)
            entries[current] = match.group(2) or ""
        elif current and line.startswith(" " * 10):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


def test_the_readme_table_is_what_every_command_says(capsys):
    table = flag_table()
    assert {flag for flag, *_ in table} >= {"--input", "--output", "--seed", "--device", "--batch-size"}
    assert {flag for flag, *_ in table} >= {"--image-size", "--cpu-threads", "--no-progress", "--num-shards"}
    helps = {command: help_entries(command, capsys) for command in COMMANDS}
    for flag, meaning, default, commands in table:
        assert commands <= set(COMMANDS), (flag, commands - set(COMMANDS))
        for command, entries in helps.items():
            if command not in commands:
                assert flag not in entries, f"{command} has {flag} but the README table does not say so"
                continue
            assert flag in entries, f"{command} has no {flag}"
            assert entries[flag].startswith(meaning), f"{command} {flag}: {entries[flag]!r}"
            if default:
                assert f"(default: {default})" in entries[flag], f"{command} {flag}: {entries[flag]!r}"


def test_no_command_keeps_an_old_name_for_a_shared_meaning(capsys):
    for command in COMMANDS:
        entries = help_entries(command, capsys)
        assert "--quiet" not in entries, command
        assert "long side" not in entries.get("--image-size", ""), command


def test_every_seed_flag_takes_the_range_every_consumer_takes(capsys):
    """--seed 2**70 and --seed -1 were tracebacks in stylize, train_stylizer and train_embeddings (torch's and
    numpy's own overflow errors); every command with --seed shares one type: 0 to 2**32 - 1 (gensim's LDA seeds
    numpy's legacy RandomState, which stops there)."""
    from pipelines.cli import run_main

    max_seed = 2**32 - 1
    with_seed = [command for command in COMMANDS if "--seed" in help_entries(command, capsys)]
    stylizes = {f"stylize {mode}" for mode in ("gatys", "styles", "paintings")}
    trains = {"train_stylizer train", "train_stylizer add-styles"}
    assert set(with_seed) == {"augment", *stylizes, *trains, "train_embeddings", "deepdream"}
    for command in with_seed:
        entry, prefix = COMMANDS[command]
        for bad in (str(2**70), "-1", str(max_seed + 1), "1.5", "x"):
            assert run_main(entry, [*prefix, f"--seed={bad}"]) == 2, (command, bad)
            err = capsys.readouterr().err
            assert err.startswith(f"error: argument --seed: must be an integer from 0 to {max_seed}, got"), err
            assert len(err.splitlines()) == 1, (command, err)
