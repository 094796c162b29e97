"""Subgroup-shift data: scikit-learn digits with a spurious corner cue (kind ``digits_shift``).

See :class:`~ddspec.spec.data.DigitsShiftData` and ``docs/data-subgroup-shift.md``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ddspec.components.data.builtin import DIGITS_TRAIN, _take
from ddspec.components.data.files import to_dataset

if TYPE_CHECKING:
    from ddspec.components.data.base import Dataset
    from ddspec.spec.data import DigitsShiftData

#: Side of the square cue patch, in pixels, and its value.
PATCH, PATCH_VALUE = 2, 1.0
#: Labels whose "agreeing" cue is 1 (the others agree with cue 0).
CUE_ONE_LABELS = range(5)


def draw_cues(y_train: np.ndarray, n_test: int, correlation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train cues, test cues) as int64 0/1 vectors, from one ``default_rng(seed)``: first one uniform per
    training image, which agrees (cue = 1 for labels 0-4, 0 for 5-9) when below ``correlation``; then one
    per test image, cue = 1 when below 0.5."""
    rng = np.random.default_rng(seed)
    agreeing = np.isin(y_train, CUE_ONE_LABELS).astype(np.int64)
    agree = rng.random(len(y_train)) < correlation
    train = np.where(agree, agreeing, 1 - agreeing)
    test = (rng.random(n_test) < 0.5).astype(np.int64)
    return train, test


def add_cue(x: np.ndarray, cue: np.ndarray) -> np.ndarray:
    """A copy of images ``x`` (N x C x H x W) with a PATCH x PATCH square of PATCH_VALUE in every channel:
    top-left where cue = 1, bottom-right where cue = 0."""
    x = x.copy()
    one = cue == 1
    x[one, :, :PATCH, :PATCH] = PATCH_VALUE
    x[~one, :, -PATCH:, -PATCH:] = PATCH_VALUE
    return x


def build_digits_shift(spec: DigitsShiftData) -> Dataset:
    """digits (x = pixels/16, N x 1 x 8 x 8; train = first 1347, test = last 450) with the cue of
    :func:`draw_cues` painted by :func:`add_cue`; groups = 2 * label + cue."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    y = y.astype(np.int64)
    x = x.reshape(-1, 1, 8, 8) / 16
    cue_train, cue_test = draw_cues(y[:DIGITS_TRAIN], len(y) - DIGITS_TRAIN, spec.correlation, spec.seed)
    cue = np.concatenate([cue_train, cue_test])
    data = to_dataset("digits_shift", _take(add_cue(x, cue), y, slice(DIGITS_TRAIN), slice(DIGITS_TRAIN, None)))
    groups = torch.from_numpy(2 * y + cue)
    return replace(data, groups_train=groups[:DIGITS_TRAIN].clone(), groups_test=groups[DIGITS_TRAIN:].clone())
