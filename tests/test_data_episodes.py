"""The episode sampler on real Omniglot: shapes, labels, disjointness, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from esmeta_core.data import episodes, omniglot


@pytest.fixture(scope="module")
def images(omniglot_dir):
    return omniglot.load_split("val", data_dir=omniglot_dir).images


@pytest.mark.parametrize(
    "way,shot,query",
    [(5, 1, 15), (5, 5, 15), (20, 1, 5), (20, 5, 15)],
    ids=["5w1s", "5w5s", "20w1s", "20w5s"],
)
def test_episode_has_requested_shapes_and_labels(images, way, shot, query):
    ep = episodes.sample_episode(
        images, episodes.episode_rng(0, 0), way=way, shot=shot, query=query
    )
    assert ep.support.shape == (way * shot, 28, 28, 1)
    assert ep.query.shape == (way * query, 28, 28, 1)
    np.testing.assert_array_equal(ep.support_labels, np.repeat(np.arange(way), shot))
    np.testing.assert_array_equal(ep.query_labels, np.repeat(np.arange(way), query))


def _find_rows(images, picked):
    """(class, image) index of every picked image, by exact match."""
    flat = images.reshape(-1, 28 * 28)
    out = []
    for img in picked.reshape(len(picked), -1):
        hits = np.flatnonzero((flat == img).all(axis=1))
        out.append(set(hits.tolist()))
    return out


def test_support_and_query_are_disjoint_and_labels_match_classes(images):
    ep = episodes.sample_episode(images, episodes.episode_rng(1, 2), way=5, shot=5, query=15)
    support_rows = set.union(*_find_rows(images, ep.support))
    query_rows = set.union(*_find_rows(images, ep.query))
    assert support_rows.isdisjoint(query_rows)
    # Every image of label c comes from one and the same class.
    for label in range(5):
        rows = _find_rows(images, ep.support[ep.support_labels == label])
        rows += _find_rows(images, ep.query[ep.query_labels == label])
        classes = {r // 20 for hits in rows for r in hits}
        assert len(classes) == 1


def test_same_seed_and_step_give_identical_episodes(images):
    a = episodes.sample_episodes(images, seed=3, step=7, batch=4, way=5, shot=1, query=5)
    b = episodes.sample_episodes(images, seed=3, step=7, batch=4, way=5, shot=1, query=5)
    c = episodes.sample_episodes(images, seed=3, step=8, batch=4, way=5, shot=1, query=5)
    for x, y in zip(a, b, strict=False):
        np.testing.assert_array_equal(x, y)
    assert a.support.shape == (4, 5, 28, 28, 1)
    assert not np.array_equal(a.support, c.support)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(way=1000, shot=1, query=1), "way=1000 is larger than the 688 classes"),
        (dict(way=5, shot=10, query=11), "shot \\+ query <= 20"),
        (dict(way=0, shot=1, query=1), "way must be a positive integer"),
        (dict(way=5, shot=-1, query=1), "shot must be a positive integer"),
        (dict(way=5, shot=1, query=0), "query must be a positive integer"),
    ],
    ids=["way-too-large", "shot-plus-query-over-20", "zero-way", "negative-shot", "zero-query"],
)
def test_impossible_episode_names_the_limit(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        episodes.sample_episode(images, episodes.episode_rng(0, 0), **kwargs)
