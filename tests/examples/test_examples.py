"""The training examples run end to end on a tiny augment output: a few resnet18 steps, loss a number."""

import math
import runpy
import sys
from pathlib import Path

import pytest

from tests.pipelines.test_augment import stylizer  # noqa: F401 (fixture)
from tests.pipelines.test_output_formats import datasets_cache, photos, run_job  # noqa: F401 (fixtures)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def train(monkeypatch, capsys, script: str, output: Path) -> list[float]:
    """Run ``examples/<script>`` as ``python examples/<script> OUT --max-steps 2``; return the losses it printed."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [script, str(output), "--max-steps=2", "--batch-size=4", "--image-size=32"])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    return [float(line.split("loss ")[1].split()[0]) for line in lines]


def test_imagefolder_example_trains(photos, stylizer, tmp_path, monkeypatch, capsys):  # noqa: F811
    root, _ = photos
    run_job(root, tmp_path / "out", stylizer, "--output-format=imagefolder")
    losses = train(monkeypatch, capsys, "train_imagefolder.py", tmp_path / "out")
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
@pytest.mark.parametrize("output_format", ["parquet", "webdataset"])
def test_the_other_examples_train(photos, stylizer, tmp_path, monkeypatch, capsys, output_format):  # noqa: F811
    pytest.importorskip("datasets" if output_format == "parquet" else "webdataset")
    root, _ = photos
    shards = ["--shard-size=5"] if output_format == "webdataset" else []
    run_job(root, tmp_path / "out", stylizer, f"--output-format={output_format}", *shards)
    losses = train(monkeypatch, capsys, f"train_{output_format}.py", tmp_path / "out")
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
