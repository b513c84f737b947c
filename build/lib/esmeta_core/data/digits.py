"""scikit-learn's bundled handwritten digits (UCI, 1797 images of 8x8): real data, no download."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Digits(NamedTuple):
    """Train / validation / test parts: images f32[n, 8, 8] in [0, 1], labels i32[n]."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def load_digits(*, seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Digits:
    """Shuffles the 1797 digits with ``seed`` and splits them; pixels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as e:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "The digits experiments need scikit-learn: pip install scikit-learn"
        ) from e
    data = sklearn_digits()
    x = (data.images / 16.0).astype(np.float32)
    y = data.target.astype(np.int32)
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
