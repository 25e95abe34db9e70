"""Run the real ``pipelines.augment`` job (Beam → Parquet) and read its output back, checked.

The style arms train on exactly what a user's job would write: the experiment calls ``pipelines.augment.run``
with the job's own flags, then reads ``data/augmented-*.parquet`` and refuses to go on unless the table accounts for
every training image (``copies`` rows per source, nothing rejected that decoded here) and every row's provenance
columns agree with what was asked (source, label, seed, stylizer digest, style weights, alpha, size).
"""

import contextlib
import glob
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from models.common.errors import StylebeamError
from models.style.policy import parse_alpha, record_seed
from pipelines import augment
from transforms.images import center_crop, decode_image, pil_to_uint8, resize_short_side


class ExperimentError(StylebeamError):
    """The experiment cannot go on (an augment job's output does not account for its input, bad flags, ...)."""


@dataclass(frozen=True)
class AugmentRequest:
    """One augment job: ``--styles {policy}:{copies}`` with ``stylizer`` or, for paintings, ``style_images``."""

    policy: str  # random | mix | randomize
    copies: int
    alpha: str  # "A" or "LO,HI", as the job takes it
    stylizer: str | None = None
    style_images: str | None = None

    @property
    def styles(self) -> str:
        return f"{self.policy}:{self.copies}"

    @property
    def name(self) -> str:
        source = "paintings" if self.style_images else "stylizer"
        return f"{source}-{self.policy}{self.copies}-alpha{self.alpha.replace(',', '-')}"


@dataclass
class StylisedRows:
    """An augment job's rows, decoded: ``pixels`` ``(M, S, S, 3)`` uint8, in the table's order."""

    ids: list[str]
    source_ids: list[str]
    labels: list[str | None]
    styles: list[str]
    pixels: np.ndarray
    elapsed_s: float
    output: str


def run_augment(request: AugmentRequest, input_dir: str, output_dir: str, image_size: int, seed: int) -> float:
    """Run the job on ``input_dir`` (an ImageFolder) into ``output_dir``; its log goes to ``output_dir/job.log``.
    Returns the wall time in seconds."""
    argv = [
        f"--input={input_dir}",
        f"--output={output_dir}",
        f"--styles={request.styles}",
        f"--alpha={request.alpha}",
        f"--image-size={image_size}",
        f"--min-side={min(32, image_size)}",
        f"--seed={seed}",
        "--format=png",  # lossless: stylised rows differ from originals by style only, not by JPEG artefacts
        "--num-shards=1",
        "--overwrite",
        "--runner=FnApiRunner",
        # One torch thread: at 64 px two threads gain little, and on a busy 2-core machine OpenMP threads waiting
        # on each other made the job ~8x slower (40 images at 32 px: 7.4 s with 2 threads, 1.0 s with 1).
        "--cpu-threads=1",
    ]
    if request.style_images:
        argv.append(f"--style-images={request.style_images}")
    if request.stylizer:
        argv.append(f"--stylizer={request.stylizer}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(Path(output_dir) / "job.log", "w") as log, contextlib.redirect_stderr(log):
        result = augment.run(argv)
    if result.state != "DONE":
        raise ExperimentError(f"augment job into {output_dir} ended {result.state}; see {output_dir}/job.log")
    return time.perf_counter() - started


def read_augmented(
    request: AugmentRequest,
    output_dir: str,
    sources: dict[str, str | None],
    image_size: int,
    seed: int,
    elapsed_s: float = 0.0,
    train_size: int | None = None,
) -> StylisedRows:
    """Read the job's table back and check it against ``sources`` (source id → label: the images that decoded).
    Rows were stylised at short side ``image_size``; their pixels come back centre-cropped and scaled to
    ``train_size`` squares (default: ``image_size``), as the originals are."""
    where = f"augment job output {output_dir}"
    rejected = _read_table(output_dir, "rejected")
    unexpected = [row for row in rejected.to_pylist() if row["source_id"] in sources]
    if unexpected:
        first = unexpected[0]
        raise ExperimentError(f"{where}: {len(unexpected)} training images rejected, e.g. {first}")
    table = _read_table(output_dir, "augmented")
    expected = len(sources) * request.copies
    if table.num_rows != expected:
        raise ExperimentError(
            f"{where}: {table.num_rows} rows for {len(sources)} images × {request.copies} copies = {expected}"
        )
    summary = json.loads((Path(output_dir) / "summary.json").read_text())
    digest = summary.get("stylizer", {}).get("digest")
    style_names = summary.get("stylizer", {}).get("styles") or []
    paintings = _painting_ids(request.style_images) if request.style_images else set()
    low, high = parse_alpha(request.alpha)
    rows = table.drop_columns(["image"]).to_pylist()
    seen: dict[str, set[str]] = {}
    for row in rows:
        source = row["source_id"]
        problem = None
        if source not in sources:
            problem = "a source that is not a training image"
        elif row["label"] != sources[source]:
            problem = f"label {row['label']!r}, expected {sources[source]!r}"
        elif row["seed"] != record_seed(seed, source):
            problem = f"seed {row['seed']}, expected record_seed({seed}, id)"
        elif digest and row["stylizer"] != digest:
            problem = f"stylizer {row['stylizer']}, expected {digest}"
        elif not low - 1e-6 <= row["alpha"] <= high + 1e-6:
            problem = f"alpha {row['alpha']} outside [{low}, {high}]"
        elif min(row["width"], row["height"]) != image_size:
            problem = f"size {row['width']}x{row['height']}, expected short side {image_size}"
        elif request.style_images:
            problem = _check_painting(request.policy, row, paintings)
        else:
            problem = _check_style(request.policy, row["style"], row["style_weights"], style_names)
        if problem:
            raise ExperimentError(f"{where}: row {row['id']}: {problem}")
        seen.setdefault(source, set()).add(row["id"])
    wanted = {f"#{n}" for n in range(request.copies)}
    short = [source for source in sources if seen.get(source, set()) != {f"{source}{n}" for n in wanted}]
    if short:
        rows_of = sorted(seen.get(short[0], []))
        raise ExperimentError(f"{where}: {short[0]} has rows {rows_of}, expected #0..#{request.copies - 1}")
    pixels = np.stack(
        [_square(data, image_size, train_size or image_size) for data in table.column("image").to_pylist()]
    )
    return StylisedRows(
        ids=[row["id"] for row in rows],
        source_ids=[row["source_id"] for row in rows],
        labels=[row["label"] for row in rows],
        styles=[row["style"] for row in rows],
        pixels=pixels,
        elapsed_s=elapsed_s,
        output=output_dir,
    )


def _check_painting(policy: str, row: dict, paintings: set[str]) -> str | None:
    """What is wrong with a painting row's provenance columns (which painting, mixture or sample), or None."""
    ids, embedding = row.get("style_ids") or [], row.get("style_embedding")
    if row["style_weights"] is not None or not embedding:
        return "a painting row needs a style_embedding and no style_weights"
    if paintings and not set(ids) <= paintings:
        return f"paintings {ids} are not in the collection"
    if policy == "random" and (len(ids) != 1 or row["style"] != ids[0]):
        return f"style {row['style']!r} with paintings {ids} is not one painting"
    if policy == "mix" and (row["style"] != "mix" or len(ids) < 2 or abs(sum(row["style_mix"]) - 1) > 1e-4):
        return f"style {row['style']!r} with paintings {ids} is not a mixture"
    if policy == "randomize" and (row["style"] != "random" or ids):
        return f"style {row['style']!r} with paintings {ids} is not a sampled embedding"
    return None


def _check_style(policy: str, style: str, weights: list[float] | None, style_names: list[str]) -> str | None:
    """What is wrong with a checkpoint-style row's style columns, or None."""
    if weights is None:
        return "a checkpoint-style row needs style_weights"
    if style_names and len(weights) != len(style_names):
        return f"{len(weights)} style weights for {len(style_names)} styles"
    if abs(sum(weights) - 1) > 1e-4:
        return f"style weights sum to {sum(weights)}"
    if policy == "random" and style_names and (max(weights) != 1 or style != style_names[int(np.argmax(weights))]):
        return f"style {style!r} with weights {weights} is not one style"
    if policy == "mix" and style != "mix":
        return f"style {style!r} in a mix:K job"
    return None


def _painting_ids(style_images: str) -> set[str]:
    """The ids the job gives a local painting folder's files: their paths relative to it."""
    root = Path(style_images)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def _read_table(output_dir: str, prefix: str):
    folder = "rejected" if prefix == "rejected" else "data"  # transforms.io's layout
    paths = sorted(glob.glob(f"{output_dir}/{folder}/{prefix}-*.parquet"))
    if not paths:
        raise ExperimentError(f"augment job output {output_dir}: no {prefix}-*.parquet")
    return pq.ParquetDataset(paths).read()


def _square(data: bytes, size: int, train_size: int) -> np.ndarray:
    """Encoded row image → ``(train_size, train_size, 3)`` uint8, centre-cropped and scaled like the originals."""
    image = decode_image(data, min_side=1)
    if image.size != (size, size):
        image = center_crop(image, size)
    return pil_to_uint8(resize_short_side(image, train_size))


def write_painting_collection(folder: Path) -> Path:
    """The package's Miró-like style PNGs and scikit-image's textures (when installed), as PNG files: the painting
    collection of the painting arms (no network: both ship with the installed packages)."""
    import shutil

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted((Path(__file__).resolve().parents[2] / "pipelines" / "assets" / "styles").glob("*.png")):
        shutil.copyfile(path, folder / path.name)
    try:
        from skimage import data
    except ImportError:
        return folder
    for name in ("brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"skimage_{name}.png")
    return folder


def stylise_copies(
    images, folder: Path, request: AugmentRequest, image_size: int, seed: int, train_size: int
) -> tuple[np.ndarray, float]:
    """``images`` (``LabelledImages`` at ``image_size``) through the augment job as ``request`` asks (a checkpoint's
    styles or paintings, ``--styles policy:copies``): ``(N, copies, train_size, train_size, 3)`` uint8 in the
    images' order, copy n = the job's row ``#n``, and the job's wall time. The job's input is ``folder/input`` (an
    ImageFolder of the images), its output ``folder/job``."""
    from benchmarks.augmentation_value.cue_conflict import write_image_folder

    if Path(folder).exists():
        import shutil

        shutil.rmtree(folder)
    write_image_folder(images, Path(folder) / "input")
    output = str(Path(folder) / "job")
    elapsed = run_augment(request, str(Path(folder) / "input"), output, image_size, seed)
    sources = {image_id: image_id.split("/")[0] for image_id in images.ids}
    rows = read_augmented(request, output, sources, image_size, seed, elapsed, train_size=train_size)
    position = {row_id: i for i, row_id in enumerate(rows.ids)}
    index = [[position[f"{image_id}#{n}"] for n in range(request.copies)] for image_id in images.ids]
    return rows.pixels[np.array(index, np.int64)], elapsed
