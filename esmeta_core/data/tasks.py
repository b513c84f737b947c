"""Online-learning tasks for the learned-learner experiments (VS-ML, chapter 9).

A task is a stream of ``length`` labelled examples from ``num_classes`` random
classes of a data set, relabelled ``0..num_classes-1`` in random order, with the
features randomly projected to ``n_in`` inputs (then standardised), so that a
learned learner cannot memorise one data set (Kirsch & Schmidhuber 2021,
arXiv:2012.14905, section 4). NumPy in, NumPy-backed arrays out; no model code.
"""

from __future__ import annotations

import numpy as np

from esmeta_core.data.digits import load_digits
from esmeta_core.data.omniglot import load_split

Pool = tuple[np.ndarray, np.ndarray]  # features f32[n, d], class labels int[n]
WAY, LENGTH, N_IN = 5, 50, 16  # the meta-training tasks: 5-way, 50 examples, 16 inputs


def validate_episode_length(length: int, available: int) -> None:
    """Raises ``ValueError`` when an episode asks for more examples than the data has."""
    if length < 1 or length > available:
        raise ValueError(
            f"episode length {length} is not possible: the data has {available} examples; "
            f"choose 1 <= length <= {available}."
        )


def sample_task(
    rng: np.random.Generator,
    features: np.ndarray,
    labels: np.ndarray,
    *,
    num_classes: int,
    length: int,
    n_in: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """One online-learning task from a labelled data set.

    Picks ``num_classes`` classes at random and relabels them ``0..num_classes-1``
    in random order, draws ``length`` of their examples without replacement, and
    projects the features to ``n_in`` dimensions with a random Gaussian matrix
    ``N(0, 1/d)`` (``n_in=None``: no projection), then standardises each input.

    Args:
      rng: a ``numpy.random.Generator``.
      features: f32[n, d]; labels: int[n].

    Returns:
      ``(inputs f32[length, n_in], labels i32[length])``.

    >>> x, y = sample_task(np.random.default_rng(0), np.eye(6, dtype=np.float32),
    ...                    np.arange(6) % 3, num_classes=2, length=4, n_in=3)
    >>> x.shape, sorted(set(y.tolist()))
    ((4, 3), [0, 1])
    """
    classes = rng.choice(np.unique(labels), size=num_classes, replace=False)
    pool = np.flatnonzero(np.isin(labels, classes))
    validate_episode_length(length, len(pool))
    picks = rng.choice(pool, size=length, replace=False)
    relabel = {c: k for k, c in enumerate(classes)}
    y = np.array([relabel[c] for c in labels[picks]], np.int32)
    x = features[picks].astype(np.float64)
    if n_in is not None:
        projection = rng.normal(size=(features.shape[1], n_in)) / np.sqrt(features.shape[1])
        x = x @ projection
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return x.astype(np.float32), y


def task_batch(
    rng: np.random.Generator,
    pool: Pool,
    count: int,
    *,
    way: int = WAY,
    length: int = LENGTH,
    n_in: int | None = N_IN,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tasks of ``sample_task``: ``(f32[count, length, n_in], i32[count, length])``."""
    tasks = [
        sample_task(rng, *pool, num_classes=way, length=length, n_in=n_in) for _ in range(count)
    ]
    return np.stack([t[0] for t in tasks]), np.stack([t[1] for t in tasks])


def omniglot_pool(split: str = "train") -> Pool:
    """Omniglot characters of a Vinyals split (rotation 0): f32[n, 784] images, class labels."""
    data = load_split(split)
    keep = np.flatnonzero(data.rotations == 0)
    images = data.images[keep]  # f32[classes, 20, 28, 28]
    features = images.reshape(-1, 28 * 28)
    labels = np.repeat(np.arange(len(keep)), images.shape[1])
    return features, labels


def digits_pool() -> Pool:
    """scikit-learn's 1797 digits: f32[1797, 64] pixels in [0, 1], labels 0..9."""
    data = load_digits(seed=0, val_fraction=0.0, test_fraction=0.0)
    return data.train_x.reshape(len(data.train_x), -1), data.train_y
