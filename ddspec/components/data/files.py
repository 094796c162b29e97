"""File-backed data sources: ``.npz``, IDX, and torchvision datasets already on disk.

Loaded arrays are checked (sample counts, per-sample shapes, labels) and every error names the
file, the spec path and a fix. The NumPy readers are in :mod:`ddspec.spec.files`; torch is imported
only when a Dataset is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ddspec.errors import SpecError
from ddspec.spec.data import check_targets
from ddspec.spec.files import ARRAYS, invalid_file, read_idx, read_npz

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset
    from ddspec.spec.data import IdxData, NpzData, TorchvisionData


def check_arrays(
    arrays: Mapping[str, np.ndarray], where: Mapping[str, tuple[str, str]], targets: str = "classes"
) -> None:
    """Raise SpecError ``DATA_FILE_INVALID`` unless: x arrays are numeric with a sample axis, y arrays hold
    ``targets`` (:func:`~ddspec.spec.data.check_targets`: class indices, or real values of the same width in
    train and test), each x has as many samples as its y (at least one for training), x_test's per-sample
    shape is x_train's, and every test class occurs in training.
    ``where[key]`` is the (file, spec path) that errors about array ``key`` name."""
    for key in ("y_train", "y_test"):
        check_targets(arrays[key], key, targets, where[key])
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        x, n = arrays[x_key], len(arrays[y_key])
        if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise invalid_file(*where[x_key], f"{x_key} must be numeric N x (sample shape), got {x.dtype}{x.shape}",
                               "store inputs as a numeric array with the samples along the first axis")
        if len(x) != n:
            raise invalid_file(*where[x_key], f"{x_key} has {len(x)} samples but {y_key} has {n}",
                               f"give {x_key} and {y_key} the same number of samples, in the same order")
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if test_shape != train_shape:
        raise invalid_file(*where["x_test"], f"x_test samples have shape {test_shape}, x_train's {train_shape}",
                           "store train and test inputs with the same per-sample shape")
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if not y_train.size:
        raise invalid_file(*where["y_train"], "there are no training samples", "give at least one training sample")
    if targets == "real":
        if y_test.shape[1:] != y_train.shape[1:]:
            raise invalid_file(*where["y_test"], f"y_test rows have shape {y_test.shape[1:]}, y_train's "
                               f"{y_train.shape[1:]}", "store train and test targets with the same number of values")
    elif y_test.size and y_test.max() > y_train.max():
        raise invalid_file(*where["y_test"], f"y_test has label {y_test.max()}, y_train only 0..{y_train.max()}",
                           "every test class must occur in the training labels")


def to_dataset(name: str, arrays: Mapping[str, np.ndarray], scale: float = 1.0, targets: str = "classes") -> Dataset:
    """A Dataset that owns fresh copies: x float32 C-contiguous times ``scale``; class targets: y int64 and
    ``num_classes`` = largest train label + 1; real targets: y float32 and ``num_classes`` = 0.
    Expects arrays that pass :func:`check_arrays`."""
    import torch

    from ddspec.components.data.base import Dataset

    x = {k: torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32) * np.float32(scale))
         for k in ("x_train", "x_test")}
    if targets == "real":
        y = {k: torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32)) for k in ("y_train", "y_test")}
        return Dataset(name, num_classes=0, **x, **y)
    y = {k: torch.from_numpy(arrays[k].astype(np.int64)) for k in ("y_train", "y_test")}
    return Dataset(name, num_classes=int(arrays["y_train"].max()) + 1, **x, **y)


def build_npz(spec: NpzData) -> Dataset:
    """The arrays of ``spec.path`` with their stored per-sample shape; x multiplied by ``spec.scale``; y class
    indices or, with ``targets: real``, real values."""
    path = spec.resolved(spec.path)
    arrays = read_npz(path)
    check_arrays(arrays, dict.fromkeys(ARRAYS, (path, "data.path")), spec.targets)
    return to_dataset(Path(path).stem, arrays, spec.scale, spec.targets)


def build_idx(spec: IdxData) -> Dataset:
    """IDX images (N x H x W become N x 1 x H x W; other ranks are kept) times ``spec.scale``, labels."""
    where = {key: (spec.resolved(getattr(spec, field)), f"data.{field}") for key, field in spec.ARRAY_FIELDS.items()}
    arrays = {key: read_idx(*where[key]) for key in ARRAYS}
    for key in ("x_train", "x_test"):
        if arrays[key].ndim == 3:
            arrays[key] = arrays[key][:, None]
    check_arrays(arrays, where)
    return to_dataset(Path(spec.train_images).name, arrays, spec.scale)


def _torchvision_datasets() -> ModuleType:
    """``torchvision.datasets``, or SpecError ``DATA_UNAVAILABLE`` quoting why it cannot be imported."""
    try:
        from torchvision import datasets
    except Exception as e:  # noqa: BLE001 - a build that does not match torch fails with any error type
        raise SpecError.one(
            "DATA_UNAVAILABLE", "data.kind", f"torchvision is not importable ({type(e).__name__}: {e})",
            "install a torchvision build matching your torch (pip install torchvision==<matching>), "
            "or export the data to .npz and use kind: npz",
        ) from None
    return datasets


def _channels_first(images: object) -> np.ndarray:
    """torchvision's ``data`` (N x H x W, or N x H x W x C as in CIFAR) as N x C x H x W."""
    images = np.asarray(images)
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


def build_torchvision(spec: TorchvisionData) -> Dataset:
    """Train and test splits of ``spec.name`` from ``spec.root`` (never downloaded): x = pixels/255,
    N x C x H x W."""
    dataset_cls = getattr(_torchvision_datasets(), spec.name)
    root = spec.resolved(spec.root)
    try:
        train = dataset_cls(root, train=True, download=False)
        test = dataset_cls(root, train=False, download=False)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise SpecError.one(
            "DATA_FILE_NOT_FOUND", "data.root", f"{spec.name} is not under {root} ({e})",
            f"put the {spec.name} files under root as torchvision's download=True leaves them, "
            "or export the data to .npz and use kind: npz",
        ) from None
    arrays = {"x_train": _channels_first(train.data), "y_train": np.asarray(train.targets),
              "x_test": _channels_first(test.data), "y_test": np.asarray(test.targets)}
    return to_dataset(spec.name, arrays, 1 / 255)
