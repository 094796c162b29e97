"""Data sources: built datasets against ground truth and against their spec's ``describe()``."""

from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddspec.components.data import load_dataset
from ddspec.components.data.base import Dataset
from ddspec.components.data.builtin import _mnist1d
from ddspec.errors import SpecError
from ddspec.spec.data import DigitsData, IdxData, Mnist1dData, NpzData, TabularData, TorchvisionData
from ddspec.spec.files import read_idx, read_idx_header

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def train_counts(data: Dataset) -> tuple[int, ...]:
    return tuple(torch.bincount(data.y_train, minlength=data.num_classes).tolist())


def assert_agrees_with_describe(data: Dataset, spec: object) -> None:
    info = spec.describe()  # type: ignore[attr-defined]
    assert (data.name, data.input_shape, data.num_classes) == (info.name, info.input_shape, info.num_classes)
    assert train_counts(data) == info.class_counts
    assert len(data.y_test) == len(data.x_test) == info.n_test
    assert (data.x_train.dtype, data.y_train.dtype, data.x_test.dtype, data.y_test.dtype) == (
        torch.float32, torch.int64, torch.float32, torch.int64)


def spec_error(excinfo: pytest.ExceptionInfo[SpecError]) -> tuple[str, str, str]:
    (finding,) = excinfo.value.findings
    return finding.code, finding.path, finding.message


# --- digits, MNIST-1D, tabular ------------------------------------------------------------------

def test_digits_split_values_and_counts() -> None:
    data = load_dataset(DigitsData())
    assert data.x_train.shape == (1347, 1, 8, 8) and data.x_test.shape == (450, 1, 8, 8)
    assert data.value_range() == (0.0, 1.0)
    assert data.x_train[0, 0, 0].tolist() == [0, 0, 5 / 16, 13 / 16, 9 / 16, 1 / 16, 0, 0]
    assert data.y_train[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.y_test[:5].tolist() == [3, 7, 3, 3, 4] and data.y_test[-3:].tolist() == [8, 9, 8]
    assert train_counts(data) == (135, 136, 134, 136, 133, 137, 134, 134, 133, 135)
    assert_agrees_with_describe(data, DigitsData())


def test_mnist1d_values_counts_and_global_rng_untouched() -> None:
    _mnist1d.cache_clear()  # generate here, to see that the generator's reseeding does not leak
    random.seed(7)
    np.random.seed(7)
    data = load_dataset(Mnist1dData())
    after = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    assert after == (random.random(), np.random.rand())
    assert data.x_train.shape == (4000, 1, 40) and data.x_test.shape == (1000, 1, 40)
    assert data.y_train[:10].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]
    assert data.y_test[:10].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2]
    expected = torch.tensor([-0.33200567, -0.47191037, -0.77869708, -1.00974083])
    torch.testing.assert_close(data.x_train[0, 0, :4], expected)
    assert train_counts(data) == (398, 396, 411, 394, 394, 402, 401, 404, 402, 398)
    assert_agrees_with_describe(data, Mnist1dData())


def test_mnist1d_cached_but_datasets_do_not_share_memory() -> None:
    first, second = load_dataset(Mnist1dData()), load_dataset(Mnist1dData())
    first.x_train.zero_()
    assert second.x_train.abs().sum() > 0 and _mnist1d.cache_info().currsize == 1


@pytest.mark.parametrize(("name", "fraction", "train", "n_test"), [
    ("breast_cancer", 0.25, (159, 268), 142),  # 212*.25 = 53, 357*.25 = 89.25 -> 89
    ("wine", 0.25, (44, 53, 36), 45),  # 59*.25 = 14.75 -> 15, 71*.25 = 17.75 -> 18, 48*.25 = 12
    ("wine", 0.5, (29, 35, 24), 90),  # round half to even: 29.5 -> 30, 35.5 -> 36
])
def test_tabular_split_counts_match_describe(name: str, fraction: float, train: tuple[int, ...], n_test: int) -> None:
    spec = TabularData(name=name, test_fraction=fraction, split_seed=3)
    data = load_dataset(spec)
    assert train_counts(data) == train and len(data.y_test) == n_test
    assert_agrees_with_describe(data, spec)


def documented_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split TabularData documents: one rng, classes in order, first round(n_c * fraction) to test."""
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    test = np.sort(np.concatenate([p[: round(len(p) * fraction)] for p in perms]))
    return np.setdiff1d(np.arange(len(y)), test), test


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_tabular_split_and_standardization(name: str) -> None:
    from sklearn.datasets import load_breast_cancer, load_wine

    raw, labels = {"breast_cancer": load_breast_cancer, "wine": load_wine}[name](return_X_y=True)
    data = load_dataset(TabularData(name=name, test_fraction=0.3, split_seed=11))
    train, test = documented_split(labels, 0.3, 11)
    mean, std = raw[train].mean(0), raw[train].std(0)
    torch.testing.assert_close(data.x_train, torch.from_numpy((raw[train] - mean) / std).float())
    torch.testing.assert_close(data.x_test, torch.from_numpy((raw[test] - mean) / std).float())
    assert data.y_train.tolist() == labels[train].tolist() and data.y_test.tolist() == labels[test].tolist()
    x = data.x_train.double()
    torch.testing.assert_close(x.mean(0), torch.zeros(raw.shape[1], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(raw.shape[1], dtype=torch.float64))


def test_tabular_split_is_seeded() -> None:
    a, b, c = (load_dataset(TabularData(name="wine", split_seed=s)) for s in (4, 4, 5))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert train_counts(a) == train_counts(c)


# --- npz ----------------------------------------------------------------------------------------

def npz_arrays() -> dict[str, np.ndarray]:
    """12 train / 4 test samples of shape 3 x 2 (uint8 0..95), labels 0..2."""
    x = np.arange(16 * 6, dtype=np.uint8).reshape(16, 3, 2)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 1, 0, 2])
    return {"x_train": x[:12], "y_train": y[:12], "x_test": x[12:], "y_test": y[12:]}


def test_npz_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "toy.npz"
    np.savez(path, **npz_arrays())
    spec = NpzData(path=str(path), scale=0.5)
    data = load_dataset(spec)
    assert data.x_train.shape == (12, 3, 2) and data.num_classes == 3
    assert data.x_train[1].tolist() == [[3.0, 3.5], [4.0, 4.5], [5.0, 5.5]]
    assert data.x_test[-1, -1].tolist() == [47.0, 47.5]
    assert data.y_train.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1] and data.y_test.tolist() == [2, 1, 0, 2]
    assert_agrees_with_describe(data, spec)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_dataset(NpzData(path=str(tmp_path / "nope.npz")))
    assert spec_error(e)[:2] == ("DATA_FILE_NOT_FOUND", "data.path")


@pytest.mark.parametrize(("change", "says"), [
    ({"y_test": None}, "lacks arrays ['y_test']"),
    ({"y_train": np.zeros(12)}, "y_train holds floats (float64), but targets are classes"),
    ({"y_train": np.zeros((12, 2), dtype=int)}, "y_train must be 1-D non-negative integer labels, got int64(12, 2)"),
    ({"y_test": np.array([0, -1, 1, 2])}, "y_test must be 1-D non-negative integer labels"),
    ({"y_train": np.zeros(11, dtype=int)}, "x_train has 12 samples but y_train has 11"),
    ({"x_test": np.zeros((4, 2, 3))}, "x_test samples have shape (2, 3), x_train's (3, 2)"),
    ({"y_test": np.array([0, 1, 2, 3])}, "y_test has label 3, y_train only 0..2"),
    ({"x_train": np.zeros(12)}, "x_train must be numeric N x (sample shape)"),
])
def test_npz_invalid_contents(tmp_path: Path, change: dict, says: str) -> None:
    arrays = {k: v for k, v in {**npz_arrays(), **change}.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(SpecError) as e:
        load_dataset(NpzData(path=str(path)))
    code, where, message = spec_error(e)
    assert (code, where) == ("DATA_FILE_INVALID", "data.path")
    assert message.startswith(str(path)) and says in message and e.value.findings[0].fix


def test_npz_float_labels_say_to_set_targets_real(tmp_path: Path) -> None:
    path = tmp_path / "reg.npz"
    np.savez(path, **{**npz_arrays(), "y_train": np.linspace(-1, 1, 12), "y_test": np.arange(4) / 3})
    with pytest.raises(SpecError) as e:
        NpzData(path=str(path)).describe()
    assert "data.targets: real" in e.value.findings[0].fix
    spec = NpzData(path=str(path), targets="real")
    data = load_dataset(spec)
    assert data.num_classes == 0 and data.y_train.dtype == torch.float32 and data.y_train.shape == (12,)
    torch.testing.assert_close(data.y_train, torch.linspace(-1, 1, 12))
    assert data.targets.num_outputs == 1 and [len(s) for s in data.strata()] == [12]
    info = spec.describe()
    assert (info.targets, info.target_dim, info.num_classes, info.class_counts, info.n_test) == ("real", 1, 0, (12,), 4)


def test_npz_real_targets_with_several_outputs(tmp_path: Path) -> None:
    path = tmp_path / "reg2.npz"
    y = np.arange(16 * 3, dtype=np.float64).reshape(16, 3)
    np.savez(path, **{**npz_arrays(), "y_train": y[:12], "y_test": y[12:]})
    spec = NpzData(path=str(path), targets="real")
    data = load_dataset(spec)
    assert data.y_train.shape == (12, 3) and data.targets.num_outputs == 3 and spec.describe().target_dim == 3
    np.savez(path, **{**npz_arrays(), "y_train": y[:12], "y_test": y[12:, :2]})
    with pytest.raises(SpecError) as e:
        load_dataset(spec)
    assert "y_test rows have shape (2,), y_train's (3,)" in spec_error(e)[2]


# --- diabetes (regression) ----------------------------------------------------------------------

def test_diabetes_split_standardization_and_describe() -> None:
    from sklearn.datasets import load_diabetes

    raw_x, raw_y = load_diabetes(return_X_y=True)
    spec = TabularData(name="diabetes", test_fraction=0.2, split_seed=5)
    data = load_dataset(spec)
    # the documented split: one default_rng(seed) permutation of all rows, the first round(442 * 0.2) = 88 to test
    perm = np.random.default_rng(5).permutation(442)
    test, train = np.sort(perm[:88]), np.sort(perm[88:])
    assert data.x_train.shape == (354, 10) and data.x_test.shape == (88, 10)
    assert data.y_train.shape == (354,) and data.y_train.dtype == torch.float32 and data.num_classes == 0
    mx, sx, my, sy = raw_x[train].mean(0), raw_x[train].std(0), raw_y[train].mean(), raw_y[train].std()
    torch.testing.assert_close(data.x_test, torch.from_numpy((raw_x[test] - mx) / sx).float())
    torch.testing.assert_close(data.y_train, torch.from_numpy((raw_y[train] - my) / sy).float())
    torch.testing.assert_close(data.y_test, torch.from_numpy((raw_y[test] - my) / sy).float())
    y, x = data.y_train.double(), data.x_train.double()
    assert abs(float(y.mean())) < 1e-6 and abs(float(y.std(unbiased=False)) - 1) < 1e-6
    torch.testing.assert_close(x.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(10, dtype=torch.float64))
    info = spec.describe()
    assert (info.name, info.input_shape, info.num_classes) == ("diabetes", (10,), 0)
    assert (info.targets, info.target_dim) == ("real", 1)
    assert info.class_counts == (354,) and info.n_test == 88 and info.num_outputs == 1
    default = TabularData(name="diabetes").describe()  # 442 * 0.25 = 110.5 rounds half to even: 110 test rows
    assert (default.class_counts, default.n_test) == ((332,), 110)


def test_diabetes_split_is_deterministic() -> None:
    a, b, c = (load_dataset(TabularData(name="diabetes", split_seed=s)) for s in (1, 1, 2))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train) and len(a.y_train) == len(c.y_train) == 332


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(SpecError) as e:
        load_dataset(NpzData(path=str(path)))
    assert spec_error(e)[:2] == ("DATA_FILE_INVALID", "data.path")


# --- IDX ----------------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as IDX by hand: 0x00 0x00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    header += b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def pattern(n: int, offset: int) -> np.ndarray:
    """uint8 images n x 4 x 5 with pixel (i, r, c) = (offset + 20 i + 5 r + c) mod 256."""
    i, r, c = np.ogrid[:n, :4, :5]
    return ((offset + 20 * i + 5 * r + c) % 256).astype(np.uint8)


def idx_spec(tmp_path: Path, suffix: str, scale: float = 1 / 255) -> IdxData:
    files = {
        "train_images": pattern(6, 0), "train_labels": np.array([0, 1, 2, 1, 0, 1], dtype=np.uint8),
        "test_images": pattern(3, 7), "test_labels": np.array([2, 0, 1], dtype=np.uint8),
    }
    for name, array in files.items():
        write_idx(tmp_path / f"{name}{suffix}", array)
    return IdxData(**{name: str(tmp_path / f"{name}{suffix}") for name in files}, scale=scale)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    spec = idx_spec(tmp_path, suffix, scale=0.5)
    data = load_dataset(spec)
    assert data.x_train.shape == (6, 1, 4, 5) and data.x_test.shape == (3, 1, 4, 5)
    assert data.x_train[5, 0, 3, 4] == (20 * 5 + 5 * 3 + 4) * 0.5
    assert data.x_test[2, 0, 0].tolist() == [23.5, 24.0, 24.5, 25.0, 25.5]  # (7 + 40 + c) / 2
    torch.testing.assert_close(data.x_train, torch.from_numpy(pattern(6, 0)[:, None] * 0.5).float())
    assert data.y_train.tolist() == [0, 1, 2, 1, 0, 1] and data.y_test.tolist() == [2, 0, 1]
    assert_agrees_with_describe(data, spec)


def test_idx_default_scale_maps_bytes_to_unit_interval(tmp_path: Path) -> None:
    data = load_dataset(idx_spec(tmp_path, ""))
    torch.testing.assert_close(data.x_train, torch.from_numpy(pattern(6, 0)[:, None] / 255).float())


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_element_types(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype) * 3
    write_idx(tmp_path / "a.idx", array)
    back = read_idx(str(tmp_path / "a.idx"))
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4) and np.array_equal(back, array)
    assert read_idx_header(str(tmp_path / "a.idx")) == (np.dtype(dtype).newbyteorder(">"), (2, 3, 4))


@pytest.mark.parametrize(("damage", "says"), [
    (lambda b: b"\x08\x03" + b[2:], "bad magic number"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown type code 0x07"),
    (lambda b: b[:-1], "need 120 data bytes, found 119"),
    (lambda b: b[:9], "truncated header"),
])
def test_idx_damaged_file(tmp_path: Path, damage: object, says: str) -> None:
    spec = idx_spec(tmp_path, "")
    path = Path(spec.train_images)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    with pytest.raises(SpecError) as e:
        load_dataset(spec)
    code, where, message = spec_error(e)
    assert (code, where) == ("DATA_FILE_INVALID", "data.train_images") and str(path) in message and says in message


def test_idx_broken_gzip_and_missing_file(tmp_path: Path) -> None:
    spec = idx_spec(tmp_path, ".gz")
    Path(spec.test_labels).write_bytes(b"not gzip at all")
    with pytest.raises(SpecError) as e:
        load_dataset(spec)
    assert spec_error(e)[:2] == ("DATA_FILE_INVALID", "data.test_labels")
    Path(spec.test_images).unlink()
    with pytest.raises(SpecError) as e:
        load_dataset(spec)
    assert spec_error(e)[:2] == ("DATA_FILE_NOT_FOUND", "data.test_images")


# --- torchvision --------------------------------------------------------------------------------

def torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a mismatched build fails with any error type
        return False
    return True


@pytest.mark.skipif(torchvision_importable(), reason="torchvision is importable here")
def test_torchvision_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_dataset(TorchvisionData(root=str(tmp_path)))
    code, where, message = spec_error(e)
    assert (code, where) == ("DATA_UNAVAILABLE", "data.kind") and "torchvision is not importable" in message
    assert "kind: npz" in e.value.findings[0].fix


class FakeVisionSet:
    """Stands in for a torchvision dataset class: MNIST keeps N x H x W tensors, CIFAR N x H x W x C arrays."""

    def __init__(self, root: str, train: bool, download: bool) -> None:
        if download or not (Path(root) / "present").exists():
            raise RuntimeError("Dataset not found. You can use download=True to download it")
        n = 4 if train else 2
        self.data = torch.arange(n * 4, dtype=torch.uint8).reshape(n, 2, 2) * 17
        self.targets = torch.tensor([0, 1, 1, 0][:n])


class FakeCifar(FakeVisionSet):
    def __init__(self, root: str, train: bool, download: bool) -> None:
        super().__init__(root, train, download)
        self.data = np.stack([self.data.numpy()] * 3, axis=-1) + np.array([0, 1, 2], dtype=np.uint8)
        self.targets = self.targets.tolist()


def test_torchvision_loading_with_a_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = SimpleNamespace(MNIST=FakeVisionSet, CIFAR10=FakeCifar)
    monkeypatch.setitem(sys.modules, "torchvision", SimpleNamespace(datasets=datasets))
    with pytest.raises(SpecError) as e:
        load_dataset(TorchvisionData(root=str(tmp_path)))
    assert spec_error(e)[:2] == ("DATA_FILE_NOT_FOUND", "data.root")
    (tmp_path / "present").touch()
    mnist = load_dataset(TorchvisionData(root=str(tmp_path)))
    assert mnist.x_train.shape == (4, 1, 2, 2) and mnist.x_test.shape == (2, 1, 2, 2)
    assert mnist.x_train[3, 0].flatten().tolist() == pytest.approx([12 / 15, 13 / 15, 14 / 15, 1.0])  # 17k/255
    assert mnist.y_train.tolist() == [0, 1, 1, 0] and mnist.y_train.dtype == torch.int64
    cifar = load_dataset(TorchvisionData(name="CIFAR10", root=str(tmp_path)))
    assert cifar.x_train.shape == (4, 3, 2, 2) and cifar.x_train.is_contiguous()
    assert cifar.x_train[1, :, 0, 1].tolist() == pytest.approx([85 / 255, 86 / 255, 87 / 255])
    assert cifar.y_test.tolist() == [0, 1]
