"""The experiment: arms × seeds, each arm's training set built from the real augment job, one CNN per run.

Order of work: make (or load) the data; run every augment job the arms need (all cores, one after the other);
build each arm's training set from the jobs' Parquet; then train and evaluate the (arm, seed) runs in a pool
of single-threaded worker processes. Each run depends only on its arm's data and its seed, never on the worker
or the order, so results are the same with any ``jobs``.
"""

import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.augmentation_value.augment_job import (
    AugmentRequest,
    ExperimentError,
    StylisedRows,
    read_augmented,
    run_augment,
)
from benchmarks.augmentation_value.classifier import (
    ClassicAugment,
    TrainingSet,
    TrainSettings,
    accuracy,
    predict,
    shape_bias,
    train_classifier,
)
from benchmarks.augmentation_value.cue_conflict import CueConflictSpec, LabelledImages, make_cue_conflict
from benchmarks.augmentation_value.datasets import Dataset, cue_conflict_dataset, image_folder_dataset
from benchmarks.augmentation_value.report import machine_facts, samples_sheet
from models.style.augment import StyleAugment
from models.style.checkpoint import load_stylizer
from models.style.policy import parse_alpha
from models.style.registry import resolve


@dataclass(frozen=True)
class Arm:
    """How one arm makes its training data. ``offline``: the augment job's ``--styles`` policy whose rows join the
    originals; ``paintings``: the job stylises with ``--style-images`` instead of a checkpoint; ``classic``: crop/
    flip/colour jitter on every training image, per epoch; ``online``: ``models.style.augment.StyleAugment``'s
    policy, per epoch; ``originals``: False trains on the job's rows alone (Stylized-ImageNet's SIN training)."""

    name: str
    description: str
    offline: str | None = None
    paintings: bool = False
    classic: bool = False
    online: str | None = None
    originals: bool = True


ARMS = (
    Arm("none", "originals only"),
    Arm("classic", "crop, flip, colour jitter (per epoch)", classic=True),
    Arm("style-random", "augment --styles random:K (offline, Beam → Parquet)", offline="random"),
    Arm("style-mix", "augment --styles mix:K (offline)", offline="mix"),
    Arm("style-only", "style-random's rows alone, ≥ 1 per image (SIN)", offline="random", originals=False),
    Arm("painting-random", "augment --style-images --styles random:K (offline)", offline="random", paintings=True),
    Arm(
        "painting-randomize",
        "augment --style-images --styles randomize:K (offline)",
        offline="randomize",
        paintings=True,
    ),
    Arm("classic+style", "style-random's rows + classic on every image", offline="random", classic=True),
    Arm("online-style", "models.style.augment.StyleAugment, random style, fresh draws per epoch", online="random"),
)
ARM_NAMES = tuple(arm.name for arm in ARMS)


@dataclass(frozen=True)
class Variant:
    """An arm at one augmented:original ratio and alpha."""

    arm: Arm
    ratio: float
    alpha: str

    @property
    def label(self) -> str:
        return f"{self.arm.name} ratio {self.ratio:g} alpha {self.alpha}" if self.styled else self.arm.name

    @property
    def styled(self) -> bool:
        return bool(self.arm.offline or self.arm.online)

    @property
    def copies_per_image(self) -> float:
        """Stylised rows per original in the training set. Without the originals (SIN), every image is replaced
        by at least one stylised copy: fewer would shrink the training set, not change its style."""
        return self.ratio if self.arm.originals else max(1.0, self.ratio)


@dataclass(frozen=True)
class Settings:
    output: str
    variants: tuple[Variant, ...]
    seeds: tuple[int, ...]
    data_seed: int = 0
    stylizer: str = "magenta26"
    style_images: str | None = None
    cue_conflict: CueConflictSpec = field(default_factory=CueConflictSpec)
    train_dir: str | None = None
    test_dirs: tuple[str, ...] = ()
    train: TrainSettings = field(default_factory=TrainSettings)
    jobs: int = 1

    image_size: int = 64  # the CNN's input
    stylise_size: int = 128  # the augment job's --image-size; the data are made (or loaded) at this size


@dataclass
class ArmData:
    variant: Variant
    training: TrainingSet
    jobs: list[dict]  # the augment jobs its rows came from: output, rows, seconds


def augment_requests(settings: Settings) -> dict[tuple, AugmentRequest]:
    """One job per (policy, alpha, source) the variants need, with as many copies as its largest ratio needs."""
    requests: dict[tuple, AugmentRequest] = {}
    for variant in settings.variants:
        if not variant.arm.offline:
            continue
        key = (variant.arm.offline, variant.alpha, variant.arm.paintings)
        copies = max(1, math.ceil(variant.copies_per_image))
        if key in requests:
            copies = max(copies, requests[key].copies)
        requests[key] = AugmentRequest(
            policy=variant.arm.offline,
            copies=copies,
            alpha=variant.alpha,
            stylizer=None if variant.arm.paintings else settings.stylizer,
            style_images=settings.style_images if variant.arm.paintings else None,
        )
    return requests


def select_rows(rows: StylisedRows, ratio: float, seed: int) -> np.ndarray:
    """Indices of ``round(ratio × sources)`` rows: ``floor(ratio)`` or ``ceil(ratio)`` per source, picked at random
    among its copies (a job's copies are sorted by style index, so taking the first would favour low ones)."""
    by_source: dict[str, list[int]] = {}
    for index, source in enumerate(rows.source_ids):
        by_source.setdefault(source, []).append(index)
    sources = sorted(by_source)
    rng = np.random.default_rng([seed, 7])
    extra = set(rng.permutation(len(sources))[: round((ratio - math.floor(ratio)) * len(sources))].tolist())
    chosen = []
    for position, source in enumerate(sources):
        count = math.floor(ratio) + (1 if position in extra else 0)
        copies = by_source[source]
        if count > len(copies):
            raise ExperimentError(f"ratio {ratio} needs {count} copies of {source}; the job made {len(copies)}")
        chosen += [copies[i] for i in sorted(rng.permutation(len(copies))[:count])]
    return np.array(sorted(chosen), np.int64)


def build_arm_data(
    variant: Variant, originals: LabelledImages, class_names: list[str], stylised: StylisedRows | None, seed: int
) -> ArmData:
    pixels, labels, jobs = [], [], []
    if variant.arm.originals:
        pixels.append(originals.pixels)
        labels.append(originals.labels)
    count = sum(len(p) for p in pixels)
    if stylised is not None:
        chosen = select_rows(stylised, variant.copies_per_image, seed)
        index = {name: i for i, name in enumerate(class_names)}
        pixels.append(stylised.pixels[chosen])
        labels.append(np.array([index[stylised.labels[i]] for i in chosen], np.int64))
        jobs.append(
            {"output": stylised.output, "rows": len(stylised.ids), "used": len(chosen), "s": stylised.elapsed_s}
        )
    pixels = np.concatenate(pixels)
    training = TrainingSet(
        pixels=pixels,
        labels=np.concatenate(labels),
        keys=np.arange(len(pixels), dtype=np.int64),
        stylised=np.arange(len(pixels)) >= count,
    )
    return ArmData(variant, training, jobs)


# ---- runs (in worker processes) ----------------------------------------------------------------------------

_TESTS: dict[str, LabelledImages] = {}
_STYLIZERS: dict[str, torch.nn.Module] = {}


def _init_worker(tests: dict[str, LabelledImages], threads: int) -> None:
    torch.set_num_threads(threads)
    _TESTS.clear()
    _TESTS.update(tests)


def _transform(variant: Variant, seed: int, stylizer: str, stylise_size: int):
    steps = []
    if variant.arm.online:
        if stylizer not in _STYLIZERS:  # loaded once per worker process
            _STYLIZERS[stylizer] = load_stylizer(resolve(stylizer))[0]
        probability = variant.ratio / (1 + variant.ratio)  # the offline arms' share of stylised images
        alpha = parse_alpha(variant.alpha)
        online = StyleAugment(_STYLIZERS[stylizer], variant.arm.online, alpha, probability, seed, stylise_size)
        steps.append(online)
    if variant.arm.classic:
        steps.append(ClassicAugment(seed))
    if not steps:
        return None

    def transform(images, keys, epoch):
        for step in steps:
            images = step(images, keys, epoch)
        return images

    return transform


def run_one(variant: Variant, seed: int, training: TrainingSet, num_classes: int, settings: Settings) -> dict:
    """Train one CNN and evaluate it on every test set."""
    transform = _transform(variant, seed, settings.stylizer, settings.stylise_size)
    model, timing = train_classifier(training, num_classes, settings.train, seed, transform)
    result = {"seed": seed, "accuracy": {}, "shape_bias": None, **{k: round(v, 3) for k, v in timing.items()}}
    for name, test in _TESTS.items():
        predictions = predict(model, test.pixels)
        result["accuracy"][name] = accuracy(predictions, test.labels)
        if (test.texture_labels >= 0).all() and (test.texture_labels != test.labels).all():
            result["shape_bias"] = shape_bias(predictions, test.labels, test.texture_labels)
    return result


# ---- the whole experiment ----------------------------------------------------------------------------------


def run_experiment(settings: Settings, log=print) -> dict:
    """Every (arm, seed) run of ``settings``; the results document that ``report`` writes out."""
    started, load_start = time.perf_counter(), os.getloadavg()
    work = Path(settings.output) / "work"
    dataset = load_dataset(settings, work)
    stylised = run_augment_jobs(settings, dataset, work / "jobs", log)
    write_samples(Path(settings.output) / "samples.png", dataset, stylised)
    arm_data = []
    for variant in settings.variants:
        rows = (
            stylised.get((variant.arm.offline, variant.alpha, variant.arm.paintings)) if variant.arm.offline else None
        )
        arm_data.append(build_arm_data(variant, dataset.train, dataset.class_names, rows, settings.data_seed))
    prepared_s = time.perf_counter() - started
    runs = train_all(arm_data, dataset, settings, log)
    arms = {}
    for data in arm_data:
        variant = data.variant
        arms[variant.label] = {
            "arm": variant.arm.name,
            "description": variant.arm.description,
            "ratio": variant.ratio if variant.styled else None,
            "alpha": variant.alpha if variant.styled else None,
            "training_images": len(data.training),
            "stylised_images": int(data.training.stylised.sum()),
            "augment_jobs": data.jobs,
            **summarise(runs[variant.label]),
            "runs": runs[variant.label],
        }
    return {
        "settings": settings_document(settings, dataset),
        "arms": arms,
        "timing": {
            "total_s": round(time.perf_counter() - started, 1),
            "data_and_augment_s": round(prepared_s, 1),
            "augment_jobs_s": round(sum(rows.elapsed_s for rows in stylised.values()), 1),
        },
        "machine": machine_facts(settings.jobs, load_start),
    }


def run_augment_jobs(settings: Settings, dataset: Dataset, folder: Path, log) -> dict[tuple, StylisedRows]:
    """Each augment job the arms need, one after the other, read back and checked."""
    stylised = {}
    for key, request in augment_requests(settings).items():
        output = str(folder / request.name)
        size, seed = settings.stylise_size, settings.data_seed
        elapsed = run_augment(request, str(dataset.augment_input), output, size, seed)
        rows = read_augmented(request, output, dataset.sources, size, seed, elapsed, train_size=settings.image_size)
        stylised[key] = rows
        log(
            f"augment job --styles {request.styles} --alpha {request.alpha}: {len(rows.ids)} rows from "
            f"{len(dataset.sources)} images in {elapsed:.1f}s → {output}"
        )
    return stylised


def write_samples(path: Path, dataset: Dataset, stylised: dict[tuple, StylisedRows], count: int = 12) -> None:
    """The first training images, their rows from each augment job, and the first images of each test set."""
    rows = [("training originals", dataset.train.pixels[:count])]
    first = dataset.train.ids[:count]
    for (policy, alpha, paintings), job in stylised.items():
        position = {source: i for i, source in reversed(list(enumerate(job.source_ids)))}  # each source's row #0
        caption = f"{'paintings' if paintings else 'stylizer'} {policy}, alpha {alpha}"
        rows.append((caption, job.pixels[[position[source] for source in first]]))
    rows += [(f"test: {name.replace('_', ' ')}", test.pixels[:count]) for name, test in dataset.tests.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    samples_sheet(rows, count).save(path)


def train_all(arm_data: list[ArmData], dataset: Dataset, settings: Settings, log) -> dict[str, list[dict]]:
    """Every (arm, seed) run, ``settings.jobs`` at a time; a progress line as each arm's last seed finishes.
    Returns each arm's runs in seed order."""
    num_classes = len(dataset.class_names)
    # The online arms stylise every epoch, ~5x the time of the others: start them first so they are not the tail.
    ordered = sorted(arm_data, key=lambda data: not data.variant.arm.online)
    tasks = [(data, seed) for data in ordered for seed in settings.seeds]
    arguments = [(data.variant, seed, data.training, num_classes, settings) for data, seed in tasks]
    runs: dict[str, list[dict]] = {data.variant.label: [] for data in arm_data}

    def finished(data: ArmData, result: dict) -> None:
        label = data.variant.label
        runs[label].append(result)
        if len(runs[label]) == len(settings.seeds):
            runs[label].sort(key=lambda run: run["seed"])
            done = sum(len(r) == len(settings.seeds) for r in runs.values())
            seconds = np.mean([run["train_s"] for run in runs[label]])
            log(f"[{done}/{len(arm_data)}] {progress_line(label, summarise(runs[label]))} ({seconds:.0f}s per run)")

    if settings.jobs <= 1:
        previous = torch.get_num_threads()
        _init_worker(dataset.tests, 1)
        try:
            for (data, _), args in zip(tasks, arguments, strict=True):
                finished(data, run_one(*args))
        finally:
            torch.set_num_threads(previous)
        return runs
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    with ProcessPoolExecutor(settings.jobs, context, initializer=_init_worker, initargs=(dataset.tests, 1)) as pool:
        futures = [pool.submit(run_one, *args) for args in arguments]
        for (data, _), future in zip(tasks, futures, strict=True):
            finished(data, future.result())
    return runs


def load_dataset(settings: Settings, work: Path) -> Dataset:
    if settings.train_dir:
        return image_folder_dataset(settings.train_dir, settings.test_dirs, settings.stylise_size, settings.image_size)
    folder = work / "data"
    if folder.exists():
        shutil.rmtree(folder)
    spec = replace(settings.cue_conflict, image_size=settings.stylise_size)
    return cue_conflict_dataset(make_cue_conflict(spec), folder, settings.image_size)


def summarise(runs: list[dict]) -> dict:
    """Mean and standard deviation (over seeds, ddof 1) of each test set's accuracy, of the shape bias and of the
    ``score``: the accuracy averaged over the test sets."""
    names = list(runs[0]["accuracy"])
    mean, std = {}, {}
    for name in names:
        values = np.array([r["accuracy"][name] for r in runs])
        mean[name], std[name] = float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
    biases = np.array([r["shape_bias"] for r in runs if r["shape_bias"] is not None], np.float64)
    if len(biases):
        mean["shape_bias"] = float(biases.mean())
        std["shape_bias"] = float(biases.std(ddof=1)) if len(biases) > 1 else 0.0
    # The sweep's criterion: accuracy averaged over the test sets (clean and shifted alike), per run.
    scores = np.array([np.mean([r["accuracy"][name] for name in names]) for r in runs])
    score = {"mean": float(scores.mean()), "std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0}
    return {"mean": mean, "std": std, "score": score}


def progress_line(label: str, summary: dict) -> str:
    parts = [f"{name} {summary['mean'][name]:.3f}±{summary['std'][name]:.3f}" for name in summary["mean"]]
    return f"{label}: " + ", ".join(parts)


def settings_document(settings: Settings, dataset: Dataset) -> dict:
    return {
        "data": dataset.describe(),
        "stylizer": settings.stylizer,
        "style_images": settings.style_images,
        "seeds": list(settings.seeds),
        "data_seed": settings.data_seed,
        "image_size": settings.image_size,
        "stylise_size": settings.stylise_size,
        "train": asdict(settings.train),
        "variants": [v.label for v in settings.variants],
    }
