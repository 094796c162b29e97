"""``data``: the real dataset D. Each kind can describe itself (shape, classes, class counts)
without loading tensors, so that the well-posedness checks and ``explain`` stay fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.base import Fraction, NonNegativeInt, PositiveFloat, SpecModel, resolve_path


@dataclass(frozen=True)
class DataInfo:
    """Structural facts about a dataset: per-sample input shape, classes, training samples per stratum.

    ``targets`` is "classes" (``num_classes`` K > 0, ``class_counts`` per class) or "real" (real-valued
    targets of ``target_dim`` values per row; ``num_classes`` 0 and ``class_counts`` = (n_train,): one stratum)."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    class_counts: tuple[int, ...]
    n_test: int
    targets: str = "classes"
    target_dim: int = 0

    @property
    def num_outputs(self) -> int:
        """Outputs of a model fitted to this data: K classes, or the target dimension."""
        return self.num_classes if self.targets == "classes" else self.target_dim

    @property
    def n_train(self) -> int:
        return sum(self.class_counts)


def _split_counts(counts: tuple[int, ...], test_fraction: float) -> tuple[tuple[int, ...], int]:
    """Per-class train counts and the test size of the stratified split used by tabular data."""
    test = tuple(round(c * test_fraction) for c in counts)
    return tuple(c - t for c, t in zip(counts, test)), sum(test)


#: Per-class train counts of scikit-learn digits' first 1347 samples (kinds ``digits`` and ``digits_shift``).
DIGITS_COUNTS = (135, 136, 134, 136, 133, 137, 134, 134, 133, 135)


@DATA.register(builder="ddspec.components.data.builtin:build_digits")
class DigitsData(SpecModel):
    """scikit-learn digits: 8x8 images, x = pixels/16 in [0,1]; train = first 1347, test = last 450."""

    kind: Literal["digits"] = "digits"

    def describe(self) -> DataInfo:
        return DataInfo("digits", (1, 8, 8), 10, DIGITS_COUNTS, 450)


@DATA.register(builder="ddspec.components.data.subgroup:build_digits_shift", capabilities=("groups",))
class DigitsShiftData(SpecModel):
    """scikit-learn digits (split and scaling of ``digits``) with a spurious corner patch; 20 label x cue groups.

    Every image gets a bright 2x2 patch (value 1.0): in the top-left corner (cue = 1) or the bottom-right
    corner (cue = 0); the rest of the image is the digits image. In the training split the cue agrees
    with the label's half (cue = 1 for labels 0-4, 0 for labels 5-9) with probability ``correlation``,
    independently per image, and is the opposite otherwise; in the test split the cue is 0 or 1 with
    probability 0.5, independently of the label. The patch is easier to detect than a digit's shape, so a
    model trained on this data can lean on it: a shortcut that fails on the test groups whose cue
    disagrees with the label's half. Group of a sample:
    2 * label + cue (the Dataset's ``groups_train`` / ``groups_test``), measured by metric
    ``worst_group``. Draws: ``numpy.random.default_rng(seed)``, train cues then test cues."""

    kind: Literal["digits_shift"] = "digits_shift"
    correlation: float = Field(
        0.9, ge=0.5, le=1, description="Probability that a training image's cue agrees with its label's half."
    )
    seed: NonNegativeInt = Field(0, description="Seed of the cue draws (numpy default_rng).")

    def describe(self) -> DataInfo:
        return DataInfo("digits_shift", (1, 8, 8), 10, DIGITS_COUNTS, 450)


@DATA.register(builder="ddspec.components.data.builtin:build_mnist1d")
class Mnist1dData(SpecModel):
    """MNIST-1D (package ``mnist1d``, default generator arguments): 4000 train / 1000 test, 1x40."""

    kind: Literal["mnist1d"] = "mnist1d"

    def describe(self) -> DataInfo:
        return DataInfo("mnist1d", (1, 40), 10, (398, 396, 411, 394, 394, 402, 401, 404, 402, 398), 1000)


TABULAR_COUNTS = {"breast_cancer": (30, (212, 357)), "wine": (13, (59, 71, 48))}


@DATA.register(builder="ddspec.components.data.builtin:build_tabular")
class TabularData(SpecModel):
    """scikit-learn tabular set, stratified split (seeded), standardized with train statistics."""

    kind: Literal["tabular"] = "tabular"
    name: Literal["breast_cancer", "wine"] = "breast_cancer"
    test_fraction: Fraction = Field(0.25, lt=1)
    split_seed: NonNegativeInt = 0

    def describe(self) -> DataInfo:
        dim, counts = TABULAR_COUNTS[self.name]
        train, n_test = _split_counts(counts, self.test_fraction)
        return DataInfo(self.name, (dim,), len(counts), train, n_test)


def missing_file(path: str, spec_path: str) -> SpecError:
    """The error for a data file that does not exist (``spec_path`` e.g. ``data.path``)."""
    return SpecError.one(
        "DATA_FILE_NOT_FOUND", spec_path, f"file not found: {path}",
        "check the path; relative paths are resolved against the spec file's folder",
    )


@DATA.register(builder="ddspec.components.data.files:build_npz")
class NpzData(SpecModel):
    """A NumPy ``.npz`` with ``x_train, y_train, x_test, y_test`` (x: N x ..., y: integer labels)."""

    kind: Literal["npz"] = "npz"
    path: str
    scale: PositiveFloat = Field(1.0, description="x is multiplied by this on load (e.g. 1/255).")

    _resolve = field_validator("path")(resolve_path)

    def describe(self) -> DataInfo:
        from ddspec.components.data.files import read_npz

        arrays = read_npz(self.path)
        shape, n_test = arrays["x_train"].shape[1:], len(arrays["y_test"])
        return _info_from_labels(Path(self.path).stem, shape, arrays["y_train"], n_test, "data.path")


def _info_from_labels(name: str, shape: tuple[int, ...], y, n_test: int, path: str) -> DataInfo:
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise SpecError.one(
            "DATA_FILE_INVALID", path, f"labels must be a 1-D array of non-negative integers, got {y.dtype}{y.shape}",
            "store class indices 0..K-1 as integers",
        )
    counts = np.bincount(y)
    return DataInfo(name, shape, len(counts), tuple(int(c) for c in counts), n_test)


@DATA.register(builder="ddspec.components.data.files:build_idx")
class IdxData(SpecModel):
    """MNIST-style IDX files (images N x H x W, labels N), gzipped or not; x = pixels * scale."""

    kind: Literal["idx"] = "idx"
    train_images: str
    train_labels: str
    test_images: str
    test_labels: str
    scale: PositiveFloat = Field(1 / 255, description="x is multiplied by this on load.")

    _resolve = field_validator("train_images", "train_labels", "test_images", "test_labels")(resolve_path)

    def describe(self) -> DataInfo:
        from ddspec.components.data.idx import read_idx, read_idx_header

        for field in ("train_images", "train_labels", "test_images", "test_labels"):
            if not Path(getattr(self, field)).is_file():
                raise missing_file(getattr(self, field), f"data.{field}")
        _, dims = read_idx_header(self.train_images, "data.train_images")
        _, test_dims = read_idx_header(self.test_labels, "data.test_labels")
        shape = (1, *dims[1:]) if len(dims) == 3 else tuple(dims[1:])
        return _info_from_labels(
            Path(self.train_images).name, shape, read_idx(self.train_labels, "data.train_labels"), test_dims[0], "data.train_labels"
        )


TORCHVISION_SETS = {
    # name: (input shape, published train counts per class, test size)
    "MNIST": ((1, 28, 28), (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949), 10000),
    "FashionMNIST": ((1, 28, 28), (6000,) * 10, 10000),
    "KMNIST": ((1, 28, 28), (6000,) * 10, 10000),
    "CIFAR10": ((3, 32, 32), (5000,) * 10, 10000),
    "CIFAR100": ((3, 32, 32), (500,) * 100, 10000),
}


@DATA.register(builder="ddspec.components.data.files:build_torchvision")
class TorchvisionData(SpecModel):
    """A torchvision dataset already on disk under ``root`` (never downloaded); x in [0,1]."""

    kind: Literal["torchvision"] = "torchvision"
    name: Literal["MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100"] = "MNIST"
    root: str

    _resolve = field_validator("root")(resolve_path)

    def describe(self) -> DataInfo:
        shape, counts, n_test = TORCHVISION_SETS[self.name]
        return DataInfo(self.name, shape, len(counts), counts, n_test)
