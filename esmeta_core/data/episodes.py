"""N-way K-shot episodes from an in-memory split, seeded and reproducible.

Episode ``step`` of a run with seed ``seed`` depends on ``(seed, step)`` only,
never on how many episodes were drawn before, so a resumed run sees exactly
the episodes an uninterrupted one would.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from esmeta_core.data.omniglot import IMAGES_PER_CHARACTER


class Episode(NamedTuple):
    """One few-shot task (a leading batch axis is added by :func:`sample_episodes`).

    Attributes:
      support: f32[way * shot, h, w, 1], class-major (class 0's shots first).
      support_labels: i32[way * shot], values in ``0 .. way - 1``.
      query: f32[way * query, h, w, 1], class-major.
      query_labels: i32[way * query].
    """

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def validate_episode_size(
    *,
    way: int,
    shot: int,
    query: int,
    num_classes: int,
    images_per_class: int = IMAGES_PER_CHARACTER,
    way_name: str = "way",
    split_name: str = "this split",
) -> None:
    """Raises ``ValueError`` naming the limit when an episode cannot be drawn.

    The one home of the episode-size rules: ``1 <= way <= num_classes`` and
    ``shot + query <= images_per_class`` (20 drawings per Omniglot character, so
    at most 19 shots leave one query). ``way_name`` and ``split_name`` name the
    caller's fields in the message (``train_way``, ``split='train'``).

    >>> validate_episode_size(way=5, shot=5, query=15, num_classes=1692)
    >>> validate_episode_size(way=5, shot=10, query=11, num_classes=1692)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: shot + query = 10 + 11 = 21, but each class has only 20 images: ...
    """
    for name, value in ((way_name, way), ("shot", shot), ("query", query)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if way > num_classes:
        raise ValueError(
            f"{way_name}={way} is larger than the {num_classes} classes of {split_name}: "
            f"choose {way_name} <= {num_classes}."
        )
    if shot + query > images_per_class:
        raise ValueError(
            f"shot + query = {shot} + {query} = {shot + query}, but each class has only "
            f"{images_per_class} images: choose shot + query <= {images_per_class}."
        )


def episode_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of episode ``step`` of a run seeded ``seed``."""
    return np.random.default_rng([seed, step])


def sample_episode(
    images: np.ndarray, rng: np.random.Generator, *, way: int, shot: int, query: int
) -> Episode:
    """Draws one episode.

    Args:
      images: f32[num_classes, per_class, h, w], one row per class.
      rng: a NumPy generator (see :func:`episode_rng`).
      way, shot, query: classes per episode, support and query images per class.

    Returns:
      An :class:`Episode`; support and query images of a class never overlap.
    """
    num_classes, per_class = images.shape[:2]
    validate_episode_size(
        way=way, shot=shot, query=query, num_classes=num_classes, images_per_class=per_class
    )
    classes = rng.choice(num_classes, size=way, replace=False)  # i[way]
    picks = np.argsort(rng.random((way, per_class)), axis=1)[:, : shot + query]  # i[way, s+q]
    chosen = images[classes[:, None], picks][..., None]  # f32[way, s+q, h, w, 1]
    labels = np.arange(way, dtype=np.int32)
    return Episode(
        support=chosen[:, :shot].reshape(way * shot, *chosen.shape[2:]),
        support_labels=np.repeat(labels, shot),
        query=chosen[:, shot:].reshape(way * query, *chosen.shape[2:]),
        query_labels=np.repeat(labels, query),
    )


def sample_episodes(
    images: np.ndarray, *, seed: int, step: int, batch: int, way: int, shot: int, query: int
) -> Episode:
    """Draws ``batch`` episodes for one step; each field gains a leading ``[batch]`` axis."""
    if batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    rng = episode_rng(seed, step)
    episodes = [sample_episode(images, rng, way=way, shot=shot, query=query) for _ in range(batch)]
    return Episode(*(np.stack(field) for field in zip(*episodes, strict=False)))
