"""The study's data families: each gives, per seed, a fresh data draw that every arm shares, and a probe
set for the manipulation check.

- ``markings``: the generated cue-conflict set with the original coarse textures (10–13 periods per image). The
  stylizer keeps them as content: the documented negative control.
- ``fine``: the same shapes with textures of a finer grain (20–26 periods), an in-distribution test set whose
  texture is independent of the class (it scores the shape, not the shortcut), cue-conflict and unseen-texture
  sets, and an oracle training set re-textured independently of the class.
- ``emoji``: the same emoji drawn by several vendors (``emoji.py``); classes are emoji sub-categories, each seed
  splits the emoji into training and test emoji and holds out one vendor (in turn), the oracle also sees the
  held-out vendor's drawings of the training emoji.

A draw's images are made (or scaled) at the stylise size; the experiment scales them to the CNN's input.
"""

from dataclasses import dataclass, replace

import numpy as np

from benchmarks.augmentation_value.cue_conflict import (
    FINE_TEXTURE_CYCLES,
    SHAPES,
    TEXTURE_CYCLES,
    CueConflictSpec,
    LabelledImages,
    make_cue_conflict,
    make_probe,
    make_split,
)
from benchmarks.augmentation_value.emoji import VendorImages, class_members, folder_name


@dataclass
class Draw:
    """One seed's data. ``tests``: name → images; ``clean``: the in-distribution set (the clean-accuracy price is
    measured on it); ``shifted``: the sets of the primary endpoint; ``restyled``: the set whose images are stylised
    with the held-out styles to make the ``held_out_styles`` set; ``oracle``: the oracle arm's training set."""

    class_names: list[str]
    train: LabelledImages
    tests: dict[str, LabelledImages]
    clean: str
    shifted: tuple[str, ...]
    restyled: str
    oracle: LabelledImages | None
    notes: dict


@dataclass
class Probe:
    """The manipulation check's images: ``labels`` the class (shape), ``texture_labels`` the nuisance (texture or
    vendor), independent of each other; ``train`` and ``val`` hold different images."""

    classes: int
    nuisances: int
    train: LabelledImages
    val: LabelledImages


def _take(images: LabelledImages, index: np.ndarray) -> LabelledImages:
    return LabelledImages(
        [images.ids[i] for i in index], images.labels[index], images.texture_labels[index], images.pixels[index]
    )


@dataclass(frozen=True)
class SyntheticFamily:
    name: str
    cycles: tuple[float, float]
    classes: int = 8
    train_per_class: int = 60
    test_per_class: int = 30
    probe_per_class: int = 45
    texture_correlation: float = 0.9
    control: bool = False  # the negative control: reported, and its arms run only if it passes the check

    def spec(self, seed: int, size: int) -> CueConflictSpec:
        return CueConflictSpec(
            classes=self.classes,
            image_size=size,
            train_per_class=self.train_per_class,
            test_per_class=self.test_per_class,
            texture_correlation=self.texture_correlation,
            seed=seed,
            texture_cycles=self.cycles,
            in_distribution_correlation=1 / self.classes,
        )

    def draw(self, seed: int, size: int) -> Draw:
        spec = self.spec(seed, size)
        data = make_cue_conflict(spec)
        oracle = make_split(replace(spec, texture_correlation=1 / self.classes), "train", self.train_per_class)
        return Draw(
            data.class_names,
            data.train,
            data.tests,
            clean="in_distribution",
            shifted=("cue_conflict", "unseen_textures"),
            restyled="in_distribution",
            oracle=oracle,
            notes={"texture_cycles": list(self.cycles), "texture_correlation": self.texture_correlation},
        )

    def probe(self, seed: int, size: int) -> Probe:
        images = make_probe(self.spec(seed, size), self.probe_per_class)
        cut = len(images) * 2 // 3
        return Probe(
            self.classes, self.classes, _take(images, np.arange(cut)), _take(images, np.arange(cut, len(images)))
        )


def markings(classes: int = 8, **sizes) -> SyntheticFamily:
    return SyntheticFamily("markings", TEXTURE_CYCLES, classes, control=True, **sizes)


def fine(classes: int = 8, **sizes) -> SyntheticFamily:
    return SyntheticFamily("fine", FINE_TEXTURE_CYCLES, classes, **sizes)


@dataclass
class EmojiFamily:
    vendors: list[VendorImages]
    class_names: tuple[str, ...]
    name: str = "emoji"
    control: bool = False

    def __post_init__(self):
        self.members = class_members(self.vendors, self.class_names)
        self._pixels: dict[tuple[int, str, int], np.ndarray] = {}

    def _images(self, pairs: list[tuple[int, int, str]], size: int) -> LabelledImages:
        """``(class, vendor, image file)`` → images on white, ``texture_labels`` the vendor."""
        ids, pixels = [], []
        for label, vendor, image in pairs:
            key = (vendor, image, size)
            if key not in self._pixels:
                self._pixels[key] = self.vendors[vendor].pixels(image, size)
            pixels.append(self._pixels[key])
            stem = image.rsplit(".", 1)[0]
            ids.append(f"{folder_name(self.class_names[label])}/{self.vendors[vendor].package.vendor}-{stem}.png")
        labels = np.array([p[0] for p in pairs], np.int64)
        vendors = np.array([p[1] for p in pairs], np.int64)
        return LabelledImages(ids, labels, vendors, np.stack(pixels))

    def _split(self, seed: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """Each class's emoji, a third (at least one) held out as test emoji, drawn from ``seed``."""
        rng = np.random.default_rng([seed, 18])
        train, test = [], []
        for label, name in enumerate(self.class_names):
            members = self.members[name]
            order = rng.permutation(len(members))
            cut = max(1, len(members) // 3)
            test += [(label, members[i]) for i in sorted(order[:cut])]
            train += [(label, members[i]) for i in sorted(order[cut:])]
        return train, test

    def draw(self, seed: int, size: int) -> Draw:
        held_out = seed % len(self.vendors)  # each vendor held out in turn: seeds 0, V, 2V, ... hold out the first
        seen = [v for v in range(len(self.vendors)) if v != held_out]
        train, test = self._split(seed)
        tests = {
            "in_domain": self._images([(c, v, i) for v in seen for c, i in test], size),
            "held_out_vendor": self._images([(c, held_out, i) for c, i in test], size),
        }
        return Draw(
            [folder_name(name) for name in self.class_names],
            self._images([(c, v, i) for v in seen for c, i in train], size),
            tests,
            clean="in_domain",
            shifted=("held_out_vendor",),
            restyled="in_domain",
            oracle=self._images([(c, v, i) for v in range(len(self.vendors)) for c, i in train], size),
            notes={"held_out_vendor": self.vendors[held_out].package.vendor},
        )

    def probe(self, seed: int, size: int) -> Probe:
        train, test = self._split(seed)
        everyone = range(len(self.vendors))
        return Probe(
            len(self.class_names),
            len(self.vendors),
            self._images([(c, v, i) for v in everyone for c, i in train], size),
            self._images([(c, v, i) for v in everyone for c, i in test], size),
        )

    def describe(self) -> dict:
        return {
            "vendors": {
                v.package.vendor: {
                    "package": f"{v.package.name}@{v.package.version}",
                    "integrity": v.package.integrity,
                    "licence": v.package.licence,
                }
                for v in self.vendors
            },
            "classes": {name: len(self.members[name]) for name in self.class_names},
        }


__all__ = ["SHAPES", "Draw", "EmojiFamily", "Probe", "SyntheticFamily", "fine", "markings"]
