"""Light readers of data files, NumPy only (never torch), so that a data spec's ``describe()`` can read
shapes and labels cheaply: the arrays of an ``.npz`` and MNIST-style IDX files (optionally gzipped).
The data builders of :mod:`ddspec.components.data.files` load through the same readers.

Every error is a SpecError naming the file, the spec path and a fix."""

from __future__ import annotations

import gzip
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np

from ddspec.errors import SpecError
from ddspec.spec.data import missing_file

#: The arrays of every source, in the order train inputs, train labels, test inputs, test labels.
ARRAYS = ("x_train", "y_train", "x_test", "y_test")

_NPZ_FIX = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def invalid_file(file: str, spec_path: str, message: str, fix: str) -> SpecError:
    """SpecError ``DATA_FILE_INVALID`` at ``spec_path``, the message prefixed by the file name."""
    return SpecError.one("DATA_FILE_INVALID", spec_path, f"{file}: {message}", fix)


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The four :data:`ARRAYS` of a ``.npz`` (pickles refused); SpecError (at ``data.path``) if the
    file is missing, unreadable or lacks one of them."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise TypeError("it holds a single array, not an .npz archive")
        with loaded:
            present = loaded.files
            arrays = {k: loaded[k] for k in ARRAYS if k in present}
    except FileNotFoundError:
        raise missing_file(path, "data.path") from None
    except (OSError, TypeError, ValueError, zipfile.BadZipFile) as e:
        raise invalid_file(path, "data.path", f"cannot be read as an .npz archive ({e})", _NPZ_FIX) from None
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise invalid_file(path, "data.path", f"lacks arrays {missing} (has {present})", _NPZ_FIX)
    return arrays


# -- IDX ------------------------------------------------------------------------------------------

#: IDX type code (third magic byte) -> big-endian NumPy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_IDX_FIX = "give MNIST-style IDX files (e.g. train-images-idx3-ubyte[.gz]), complete and uncorrupted"


def _invalid_idx(path: str, spec_path: str, why: str) -> SpecError:
    return SpecError.one("DATA_FILE_INVALID", spec_path, f"{path} is not a valid IDX file: {why}", _IDX_FIX)


@contextmanager
def _open(path: str, spec_path: str) -> Iterator[BinaryIO]:
    """Open ``path`` (gunzipping ``*.gz``); a missing file or a broken gzip stream becomes a SpecError."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
            yield f
    except FileNotFoundError:
        raise missing_file(path, spec_path) from None
    except (gzip.BadGzipFile, EOFError) as e:
        raise _invalid_idx(path, spec_path, f"broken gzip stream ({e})") from None


def _header(f: BinaryIO, path: str, spec_path: str) -> tuple[np.dtype, tuple[int, ...]]:
    head = f.read(4)
    if len(head) != 4 or head[:2] != b"\x00\x00":
        raise _invalid_idx(path, spec_path, "bad magic number (expected 0x00 0x00 <type> <ndim>)")
    if head[2] not in IDX_DTYPES:
        raise _invalid_idx(path, spec_path, f"unknown type code 0x{head[2]:02X}")
    raw = f.read(4 * head[3])
    if len(raw) != 4 * head[3]:
        raise _invalid_idx(path, spec_path, "truncated header")
    return np.dtype(IDX_DTYPES[head[2]]), struct.unpack(f">{head[3]}I", raw)


def read_idx_header(path: str, spec_path: str = "data") -> tuple[np.dtype, tuple[int, ...]]:
    """(element dtype, dims) of an IDX file, reading only its header; errors name ``spec_path``."""
    with _open(path, spec_path) as f:
        return _header(f, path, spec_path)


def read_idx(path: str, spec_path: str = "data") -> np.ndarray:
    """The whole array of an IDX file, in native byte order with the stored dims and element type.

    Raises SpecError ``DATA_FILE_NOT_FOUND`` / ``DATA_FILE_INVALID`` (bad magic, unknown type,
    truncated or oversized data) at ``spec_path``."""
    with _open(path, spec_path) as f:
        dtype, dims = _header(f, path, spec_path)
        body = f.read()
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(body) != expected:
        raise _invalid_idx(path, spec_path, f"dims {dims} need {expected} data bytes, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
