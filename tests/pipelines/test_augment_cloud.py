"""The augment job against cloud storage (a local GCS emulator) and the Dataflow job builder (offline dry run)."""

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.io.filesystems import FileSystems

from models.style.checkpoint import save_stylizer
from models.style.stylizer import MultiStyleTransformer, StylizerConfig
from pipelines import augment
from pipelines.cli import run_main
from tests.conftest import encode, make_image, upload

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def stylizer(tmp_path):
    torch.manual_seed(1)
    model = MultiStyleTransformer(StylizerConfig(num_styles=2, width=0.125, num_residual=1))
    path = tmp_path / "two.safetensors"
    save_stylizer(str(path), model, ["warm", "cold"])
    return str(path)


def write(path: str, data: bytes) -> None:
    with FileSystems.create(path) as handle:
        handle.write(data)


def read(path: str) -> bytes:
    with FileSystems.open(path) as handle:
        return handle.read()


@pytest.mark.slow
def test_reads_and_writes_gcs(gcs_bucket, stylizer):
    for i in range(3):
        write(f"{gcs_bucket}/in/birds/{i}.png", encode(make_image(40, 36, seed=i)))
    write(f"{gcs_bucket}/in/birds/broken.jpg", b"\xff\xd8 not really")
    result = augment.run(
        [
            f"--input={gcs_bucket}/in",
            f"--output={gcs_bucket}/out",
            f"--stylizer={stylizer}",
            "--styles=all",
            "--image-size=32",
            "--num-shards=1",
            "--no_auth",
        ]
    )
    assert result.state == "DONE"
    table = pq.read_table(io.BytesIO(read(f"{gcs_bucket}/out/data/augmented-00000-of-00001.parquet")))
    assert sorted(table.column("id").to_pylist()) == [f"birds/{i}.png#{n}" for i in range(3) for n in range(2)]
    assert set(table.column("label").to_pylist()) == {"birds"}
    rejected = pq.read_table(io.BytesIO(read(f"{gcs_bucket}/out/rejected/rejected-00000-of-00001.parquet"))).to_pylist()
    assert [(r["source_id"], r["stage"]) for r in rejected] == [("birds/broken.jpg", "decode")]
    summary = json.loads(read(f"{gcs_bucket}/out/summary.json"))
    assert summary["counts"]["rows_written"] == 6 and summary["counts"]["rejected"] == 1


@pytest.mark.slow
def test_dataflow_job_builds_offline(gcs_bucket, stylizer, capsys):
    """--dry_run builds and validates the whole Dataflow job (GPU workers, custom container) without a network."""
    write(f"{gcs_bucket}/in/a.png", encode(make_image(40, 40)))
    upload(stylizer, f"{gcs_bucket}/two.safetensors")
    dataflow = [
        "--runner=DataflowRunner",
        "--dry_run=True",
        "--project=stylebeam-demo",
        "--region=us-central1",
        f"--temp_location={gcs_bucket}/tmp",
        "--no_auth",
        "--styles=all",
    ]
    # a local checkpoint cannot reach Dataflow workers: refused up front, in one line
    argv = [f"--input={gcs_bucket}/in", f"--output={gcs_bucket}/out", f"--stylizer={stylizer}", *dataflow]
    assert run_main(augment.run, argv) == 2
    assert "workers cannot read this machine's files: --stylizer" in capsys.readouterr().err
    result = augment.run(
        [
            f"--input={gcs_bucket}/in",
            f"--output={gcs_bucket}/out",
            f"--stylizer={gcs_bucket}/two.safetensors",
            "--styles=all",
            "--device=cuda",
            *dataflow,
            f"--setup_file={REPO / 'setup.py'}",
            "--sdk_container_image=us-docker.pkg.dev/stylebeam-demo/images/stylebeam-gpu:2.77.0",
            "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
            "--experiments=use_runner_v2",
        ]
    )
    transforms = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for step in ["ReadImages", "DecodeImages", "Stylize", "WriteAugmented", "WriteRejected", "WriteSummary"]:
        assert step in transforms
    assert any(
        "worker_accelerator=type:nvidia-l4" in option
        for option in result.job.options.get_all_options()["dataflow_service_options"]
    )
    # A built-in stylizer is not a local file: workers build it from the installed wheel themselves.
    result = augment.run([f"--input={gcs_bucket}/in", f"--output={gcs_bucket}/out2", *dataflow])
    assert "Stylize" in {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
