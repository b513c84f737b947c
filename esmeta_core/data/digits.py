"""The UCI handwritten digits, 1797 images of 8x8 as scikit-learn bundles them: no download.

Shipped as ``digits.npz`` next to this module (45 KB, CC BY 4.0; ``README.md`` there
names the source), read with NumPy alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

DIGITS_FILE = Path(__file__).with_name("digits.npz")


class Digits(NamedTuple):
    """Train / validation / test parts: images f32[n, 8, 8] in [0, 1], labels i32[n]."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits in scikit-learn's order: images uint8[1797, 8, 8] in 0..16, labels uint8[1797].

    Example:
      >>> images, labels = raw_digits()
      >>> images.shape, int(images.max()), sorted(set(labels.tolist())) == list(range(10))
      ((1797, 8, 8), 16, True)
    """
    with np.load(DIGITS_FILE) as data:
        return data["images"], data["labels"]


def load_digits(*, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Digits:
    """Shuffles the 1797 digits with ``seed`` and splits them; pixels scaled to [0, 1]."""
    images, labels = raw_digits()
    x = (images / 16.0).astype(np.float32)
    y = labels.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_test, n_val = int(test_fraction * len(y)), int(val_fraction * len(y))
    return Digits(
        x[n_test + n_val :],
        y[n_test + n_val :],
        x[n_test : n_test + n_val],
        y[n_test : n_test + n_val],
        x[:n_test],
        y[:n_test],
    )
