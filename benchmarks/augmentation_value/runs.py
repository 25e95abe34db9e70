"""Training runs as picklable tasks, run ``jobs`` at a time in single-threaded worker processes.

A task says what to train on (a ``TrainingSet``), how to augment it per batch (an ``Augmentation``), the seed and
the sets to evaluate on; its result depends on nothing else, so results are the same with any ``jobs`` and any
order.
"""

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks.augmentation_value.classifier import (
    ClassicAugment,
    ColourRandomise,
    TrainingSet,
    TrainSettings,
    accuracy,
    predict,
    to_tensor,
    train_classifier,
)


@dataclass
class Augmentation:
    """``classic``, ``colour``, ``pool`` or ``pair``. A pool arm's training set holds the originals, then one slot
    per original (keys ``originals + i``) whose image is, each epoch, one of that original's ``K`` stylised copies
    ``pool[i]`` ``(N, K, S, S, 3)`` uint8, drawn from ``(seed, key, epoch)``: online style augmentation at the cost
    of an offline job of K copies. A pair arm's training set holds the originals alone (keys ``i``); each batch comes
    back with two distinct copies of each image from its pool after the originals (``TrainSettings.views`` = 3),
    for AugMix's consistency term."""

    kind: str
    seed: int
    pool: np.ndarray | None = None
    originals: int = 0

    def build(self) -> Callable:
        if self.kind == "classic":
            return ClassicAugment(self.seed)
        if self.kind == "colour":
            return ColourRandomise(self.seed)
        if self.kind == "pool":
            return self._pool_transform
        if self.kind == "pair":
            return self._pair_transform
        raise ValueError(f"unknown augmentation {self.kind!r}")

    def _pool_transform(self, images: torch.Tensor, keys: torch.Tensor, epoch: int) -> torch.Tensor:
        images = images.clone()
        copies = self.pool.shape[1]
        for row, key in enumerate(keys.tolist()):
            if key >= self.originals:
                draw = np.random.default_rng([self.seed, key, epoch, 3]).integers(copies)
                images[row] = to_tensor(self.pool[key - self.originals, draw][None])[0]
        return images

    def _pair_transform(self, images: torch.Tensor, keys: torch.Tensor, epoch: int) -> torch.Tensor:
        index = np.array(keys.tolist(), np.int64)
        draws = [np.random.default_rng([self.seed, key, epoch, 4]).permutation(self.pool.shape[1])[:2] for key in index]
        first, second = (to_tensor(self.pool[index, [d[view] for d in draws]]) for view in (0, 1))
        return torch.cat([images, first, second])


@dataclass
class Task:
    """One CNN: ``label`` names it in the results (family, arm, seed ...)."""

    label: tuple
    training: TrainingSet
    num_classes: int
    settings: TrainSettings
    seed: int
    tests: dict[str, tuple[np.ndarray, np.ndarray]]  # name → (pixels (N, S, S, 3) uint8, labels (N,))
    augmentation: Augmentation | None = None
    extra: dict = field(default_factory=dict)


def run_task(task: Task) -> dict:
    transform = task.augmentation.build() if task.augmentation else None
    model, timing = train_classifier(task.training, task.num_classes, task.settings, task.seed, transform)
    accuracies = {name: accuracy(predict(model, pixels), labels) for name, (pixels, labels) in task.tests.items()}
    return {"accuracy": accuracies, "train_s": round(timing["train_s"], 2)}


def _init_worker() -> None:
    torch.set_num_threads(1)


class TaskPool:
    """Tasks run ``jobs`` at a time in worker processes, submitted as they become ready, so the caller can prepare
    the next ones (an augment job) while the workers train. With ``jobs`` ≤ 1 a task runs when submitted, here."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "TaskPool":
        if self.jobs > 1:
            context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
            self._executor = ProcessPoolExecutor(self.jobs, context, initializer=_init_worker)
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=kind is not None)

    def submit(self, task: Task) -> Future:
        if self._executor is not None:
            return self._executor.submit(run_task, task)
        future: Future = Future()
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            future.set_result(run_task(task))
        finally:
            torch.set_num_threads(previous)
        return future


def collect(submitted: list[tuple[Task, Future]], done: Callable[[Task, dict], None] | None = None) -> list[dict]:
    """The submitted tasks' results, in order, waiting for each; ``done(task, result)`` as each comes."""
    results = []
    for task, future in submitted:
        results.append(future.result())
        if done:
            done(task, results[-1])
    return results
