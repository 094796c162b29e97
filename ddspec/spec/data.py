"""``data``: the real dataset D. Each kind can describe itself (shape, classes, class counts)
without loading tensors, so that the well-posedness checks and ``explain`` stay fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from ddspec.errors import SpecError
from ddspec.registry import DATA
from ddspec.spec.base import FileSpec, Fraction, NonNegativeInt, PositiveFloat, SpecModel

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class DataInfo:
    """Structural facts about a dataset: per-sample input shape, classes, training samples per stratum.

    ``targets`` is "classes" (``num_classes`` K > 0, ``class_counts`` per class), "real" (real-valued
    targets of ``target_dim`` values per row; ``num_classes`` 0 and ``class_counts`` = (n_train,): one stratum) or
    "field" (a PDE's solution values at the records; D̂'s points carry no targets; one stratum)."""

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

    def describe_targets(self) -> str:
        """The targets in words, for ``explain``: "10 classes (smallest: 133)" or "real targets (1 per row)"."""
        if self.targets == "classes":
            return f"{self.num_classes} classes (smallest: {min(self.class_counts)})"
        if self.targets == "field":
            return "a solution field (D̂'s points carry no targets)"
        if self.targets == "survival":
            return "right-censored (time, event) per row"
        return f"real targets ({self.target_dim} per row)"

    @property
    def n_train(self) -> int:
        return sum(self.class_counts)


def _split_counts(counts: tuple[int, ...], test_fraction: float) -> tuple[tuple[int, ...], int]:
    """Per-stratum train counts and the test size of the split used by tabular data: round(n_c * test_fraction)
    of each stratum's n_c rows go to test."""
    test = tuple(round(c * test_fraction) for c in counts)
    return tuple(c - t for c, t in zip(counts, test)), sum(test)


#: Per-class train counts of scikit-learn digits' first 1347 samples (kinds ``digits`` and ``digits_shift``).
DIGITS_COUNTS = (135, 136, 134, 136, 133, 137, 134, 134, 133, 135)


class DataBase(SpecModel):
    """What every data kind supplies: :meth:`describe` (the structure, without loading tensors) and, for a kind that
    reads files, which spec field each array comes from (``ARRAY_FIELDS``, so load errors name e.g. ``data.path``)."""

    ARRAY_FIELDS: ClassVar[dict[str, str]] = {}

    def describe(self) -> DataInfo:
        raise NotImplementedError

    def array_path(self, array: str) -> str:
        """The spec path an error about ``array`` (``x_train``, ``y_test``, ...) names."""
        return f"data.{self.ARRAY_FIELDS[array]}" if array in self.ARRAY_FIELDS else "data"


DATA.base = DataBase


@DATA.register(builder="ddspec.components.data.builtin:build_digits")
class DigitsData(DataBase):
    """scikit-learn digits: 8x8 images, x = pixels/16 in [0,1]; train = first 1347, test = last 450."""

    kind: Literal["digits"] = "digits"

    def describe(self) -> DataInfo:
        return DataInfo("digits", (1, 8, 8), 10, DIGITS_COUNTS, 450)


@DATA.register(builder="ddspec.components.data.subgroup:build_digits_shift", capabilities=("groups",))
class DigitsShiftData(DataBase):
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
class Mnist1dData(DataBase):
    """MNIST-1D (package ``mnist1d``, default generator arguments): 4000 train / 1000 test, 1x40."""

    kind: Literal["mnist1d"] = "mnist1d"

    def describe(self) -> DataInfo:
        return DataInfo("mnist1d", (1, 40), 10, (398, 396, 411, 394, 394, 402, 401, 404, 402, 398), 1000)


#: name: (input dim, rows per stratum): per class, or all rows as one stratum for a regression set.
TABULAR_COUNTS = {"breast_cancer": (30, (212, 357)), "wine": (13, (59, 71, 48)), "diabetes": (10, (442,))}
#: The tabular sets whose targets are real values (one per row), not classes.
TABULAR_REAL = ("diabetes",)


@DATA.register(builder="ddspec.components.data.builtin:build_tabular")
class TabularData(DataBase):
    """scikit-learn tabular set, split (seeded) and standardized with train statistics.

    Classification (breast_cancer, wine): the split is stratified by class. Regression (diabetes, 442 rows x
    10 features, one real target): the split treats all rows as one stratum, and the targets are standardized
    too, so that an RMSE is in units of the target's training std (R² is unaffected)."""

    kind: Literal["tabular"] = "tabular"
    name: Literal["breast_cancer", "wine", "diabetes"] = "breast_cancer"
    test_fraction: Fraction = Field(0.25, lt=1)
    split_seed: NonNegativeInt = 0

    def describe(self) -> DataInfo:
        dim, counts = TABULAR_COUNTS[self.name]
        train, n_test = _split_counts(counts, self.test_fraction)
        if self.name in TABULAR_REAL:
            return DataInfo(self.name, (dim,), 0, train, n_test, targets="real", target_dim=1)
        return DataInfo(self.name, (dim,), len(counts), train, n_test)


def missing_file(path: str, spec_path: str) -> SpecError:
    """The error for a data file that does not exist (``spec_path`` e.g. ``data.path``)."""
    return SpecError.one(
        "DATA_FILE_NOT_FOUND", spec_path, f"file not found: {path}",
        "check the path; relative paths are resolved against the spec file's folder",
    )


Targets = Literal["classes", "real"]


@DATA.register(builder="ddspec.components.data.files:build_npz")
class NpzData(FileSpec, DataBase):
    """A NumPy ``.npz`` with ``x_train, y_train, x_test, y_test`` (x: N x ...; y: integer class labels, or
    with ``targets: real`` real-valued targets, N or N x T)."""

    PATHS: ClassVar[tuple[str, ...]] = ("path",)
    ARRAY_FIELDS: ClassVar[dict[str, str]] = dict.fromkeys(("x_train", "y_train", "x_test", "y_test"), "path")

    kind: Literal["npz"] = "npz"
    path: str = Field(description="The .npz file; a relative path is taken from the spec file's folder.")
    scale: PositiveFloat = Field(1.0, description="x is multiplied by this on load (e.g. 1/255).")
    targets: Targets = Field("classes", description="classes: y holds class indices; real: y holds real values.")

    def describe(self) -> DataInfo:
        from ddspec.spec.files import read_npz

        path = self.resolved(self.path)
        arrays = read_npz(path)
        shape, n_test = arrays["x_train"].shape[1:], len(arrays["y_test"])
        y = check_targets(arrays["y_train"], "y_train", self.targets, (path, "data.path"))
        return _info_from_targets(Path(path).stem, shape, y, n_test, self.targets)


def check_targets(y: np.ndarray, key: str, targets: str, where: tuple[str, str]) -> np.ndarray:
    """``y`` (array ``key``) if it can hold ``targets``: class indices are 1-D non-negative integers, real
    values a numeric N or N x T array; else SpecError ``DATA_FILE_INVALID`` naming ``where`` = (file, spec
    path) and the fix (float labels of a class problem: set ``targets: real`` if they are real values)."""
    import numpy as np

    y = np.asarray(y)
    file, path = where
    if targets == "real":
        if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
            raise SpecError.one("DATA_FILE_INVALID", path, f"{file}: {key} must be real-valued targets, N or N x T "
                                f"numbers, got {y.dtype}{y.shape}", "store one row of target values per sample")
        return y
    if np.issubdtype(y.dtype, np.floating) and y.ndim == 1:
        raise SpecError.one(
            "DATA_FILE_INVALID", path, f"{file}: {key} holds floats ({y.dtype}), but targets are classes",
            "set data.targets: real if they are real values (regression); else store class indices 0..K-1 as integers",
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise SpecError.one("DATA_FILE_INVALID", path, f"{file}: {key} must be 1-D non-negative integer labels, "
                            f"got {y.dtype}{y.shape}", "store class indices 0..K-1 as an integer array")
    return y


def _info_from_targets(name: str, shape: tuple[int, ...], y: np.ndarray, n_test: int, targets: str) -> DataInfo:
    """The DataInfo of training targets ``y`` (checked by :func:`check_targets`): class counts, or one stratum."""
    import numpy as np

    if targets == "real":
        return DataInfo(name, shape, 0, (len(y),), n_test, targets="real", target_dim=1 if y.ndim == 1 else y.shape[1])
    counts = np.bincount(y)
    return DataInfo(name, shape, len(counts), tuple(int(c) for c in counts), n_test)


@DATA.register(builder="ddspec.components.data.files:build_idx")
class IdxData(FileSpec, DataBase):
    """MNIST-style IDX files (images N x H x W, labels N), gzipped or not; x = pixels * scale. Relative paths
    are taken from the spec file's folder."""

    PATHS: ClassVar[tuple[str, ...]] = ("train_images", "train_labels", "test_images", "test_labels")
    ARRAY_FIELDS: ClassVar[dict[str, str]] = dict(zip(("x_train", "y_train", "x_test", "y_test"), PATHS))

    kind: Literal["idx"] = "idx"
    train_images: str
    train_labels: str
    test_images: str
    test_labels: str
    scale: PositiveFloat = Field(1 / 255, description="x is multiplied by this on load.")

    def describe(self) -> DataInfo:
        from ddspec.spec.files import read_idx, read_idx_header

        files = {field: self.resolved(getattr(self, field)) for field in self.PATHS}
        for field, file in files.items():
            if not Path(file).is_file():
                raise missing_file(file, f"data.{field}")
        _, dims = read_idx_header(files["train_images"], "data.train_images")
        _, test_dims = read_idx_header(files["test_labels"], "data.test_labels")
        shape = (1, *dims[1:]) if len(dims) == 3 else tuple(dims[1:])
        where = (files["train_labels"], "data.train_labels")
        y = check_targets(read_idx(*where), "y_train", "classes", where)
        return _info_from_targets(Path(files["train_images"]).name, shape, y, test_dims[0], "classes")


TORCHVISION_SETS = {
    # name: (input shape, published train counts per class, test size)
    "MNIST": ((1, 28, 28), (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949), 10000),
    "FashionMNIST": ((1, 28, 28), (6000,) * 10, 10000),
    "KMNIST": ((1, 28, 28), (6000,) * 10, 10000),
    "CIFAR10": ((3, 32, 32), (5000,) * 10, 10000),
    "CIFAR100": ((3, 32, 32), (500,) * 100, 10000),
}


@DATA.register(builder="ddspec.components.data.files:build_torchvision")
class TorchvisionData(FileSpec, DataBase):
    """A torchvision dataset already on disk under ``root`` (never downloaded; a relative root is taken from
    the spec file's folder); x in [0,1]."""

    PATHS: ClassVar[tuple[str, ...]] = ("root",)
    ARRAY_FIELDS: ClassVar[dict[str, str]] = dict.fromkeys(("x_train", "y_train", "x_test", "y_test"), "root")

    kind: Literal["torchvision"] = "torchvision"
    name: Literal["MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100"] = "MNIST"
    root: str

    def describe(self) -> DataInfo:
        shape, counts, n_test = TORCHVISION_SETS[self.name]
        return DataInfo(self.name, shape, len(counts), counts, n_test)
