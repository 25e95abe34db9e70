"""The experiment's data: the generated cue-conflict set, or the user's own ImageFolders.

Either way the training images sit in an ImageFolder (``<class>/<file>``) that the augment job reads as its
``--input``, and the same images, decoded here, are the originals every arm trains on. Their ids are the
paths relative to that folder, which is what the job writes as ``source_id``.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.augmentation_value.augment_job import ExperimentError
from benchmarks.augmentation_value.cue_conflict import CueConflictData, LabelledImages, write_image_folder
from models.common.errors import ImageRejected
from transforms.images import center_crop, decode_image, pil_to_uint8, resize_short_side
from transforms.sources import IMAGE_EXTENSIONS


@dataclass
class Dataset:
    kind: str  # "cue_conflict" or "image_folders"
    class_names: list[str]
    train: LabelledImages
    tests: dict[str, LabelledImages]
    augment_input: Path
    skipped: list[dict] = field(default_factory=list)  # files that did not decode: {"path", "error"}

    @property
    def sources(self) -> dict[str, str]:
        """Training image id → class name: what the augment job's rows must account for."""
        return {
            image_id: self.class_names[label] for image_id, label in zip(self.train.ids, self.train.labels, strict=True)
        }

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "classes": self.class_names,
            "train_images": len(self.train),
            "test_images": {name: len(test) for name, test in self.tests.items()},
            "augment_input": str(self.augment_input),
            "skipped": self.skipped,
        }


def cue_conflict_dataset(data: CueConflictData, folder: Path, train_size: int) -> Dataset:
    """The generated set, written at its own size for the augment job and scaled to ``train_size`` for training."""
    write_image_folder(data.train, folder / "train")
    tests = {name: scaled(test, train_size) for name, test in data.tests.items()}
    return Dataset("cue_conflict", data.class_names, scaled(data.train, train_size), tests, folder / "train")


def scaled(images: LabelledImages, size: int) -> LabelledImages:
    return replace(images, pixels=scale_pixels(images.pixels, size))


def scale_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """``(N, G, G, 3)`` → ``(N, size, size, 3)`` uint8, antialiased (the project's one resize)."""
    if pixels.shape[1] == size:
        return pixels
    return np.stack([pil_to_uint8(resize_short_side(Image.fromarray(p), size)) for p in pixels])


def image_folder_dataset(train_dir: str, test_dirs: tuple[str, ...], load_size: int, train_size: int) -> Dataset:
    """``--train DIR --test DIR ...``: class sub-folders; test classes must be training classes. Images are centre-
    cropped to squares at ``load_size`` (the size the augment job stylises at), then scaled to ``train_size``."""
    train_root = Path(train_dir)
    if not train_root.is_dir():
        raise ExperimentError(f"--train {train_dir} is not a directory")
    if not test_dirs:
        raise ExperimentError("--train needs at least one --test DIR")
    files = _image_files(train_root)
    loose = [path for path in files if len(path.relative_to(train_root).parts) < 2]
    if loose:
        raise ExperimentError(f"training images must sit in class sub-folders of {train_dir}: {loose[0].name}")
    class_names = sorted({path.relative_to(train_root).parts[0] for path in files})
    if len(class_names) < 2:
        raise ExperimentError(f"--train {train_dir} needs at least 2 class sub-folders, found {class_names}")
    skipped: list[dict] = []
    train = scaled(_load_folder(train_root, class_names, load_size, skipped), train_size)
    tests = {}
    for test_dir in test_dirs:
        name = Path(test_dir).name
        if name in tests:
            name = f"{name}_{len(tests)}"
        tests[name] = scaled(_load_folder(Path(test_dir), class_names, load_size, skipped), train_size)
    return Dataset("image_folders", class_names, train, tests, train_root, skipped)


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))


def _load_folder(root: Path, class_names: list[str], size: int, skipped: list[dict]) -> LabelledImages:
    if not root.is_dir():
        raise ExperimentError(f"{root} is not a directory")
    index = {name: i for i, name in enumerate(class_names)}
    ids, labels, pixels = [], [], []
    for path in _image_files(root):
        relative = path.relative_to(root)
        if len(relative.parts) < 2 or relative.parts[0] not in index:
            raise ExperimentError(f"{path}: not in a folder named after a training class ({', '.join(class_names)})")
        try:
            image = decode_image(path.read_bytes(), min_side=min(32, size))
        except ImageRejected as exc:  # the augment job rejects it too; it is listed, not lost
            skipped.append({"path": str(path), "error": str(exc)})
            continue
        ids.append(relative.as_posix())
        labels.append(index[relative.parts[0]])
        pixels.append(pil_to_uint8(center_crop(resize_short_side(image, size), size)))
    if not ids:
        raise ExperimentError(f"no usable images under {root}")
    labels = np.array(labels, np.int64)
    return LabelledImages(ids, labels, np.full_like(labels, -1), np.stack(pixels))
