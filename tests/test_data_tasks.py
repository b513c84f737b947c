"""Online tasks for the learned learners: relabelling, projection, standardisation, errors."""

from __future__ import annotations

import numpy as np
import pytest

from esmeta_core.data import tasks


def _digits():
    return tasks.digits_pool()


def test_task_has_its_classes_relabelled_and_standardised_projected_inputs():
    features, labels = _digits()
    x, y = tasks.sample_task(
        np.random.default_rng(0), features, labels, num_classes=4, length=40, n_in=16
    )
    assert x.shape == (40, 16) and x.dtype == np.float32 and y.dtype == np.int32
    assert set(y.tolist()) <= {0, 1, 2, 3} and len(set(y.tolist())) > 1
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-3)


def test_task_without_projection_keeps_the_pixels():
    features, labels = _digits()
    x, _ = tasks.sample_task(
        np.random.default_rng(0), features, labels, num_classes=10, length=500, n_in=None
    )
    assert x.shape == (500, 64)


def test_same_seed_gives_the_same_tasks_and_another_seed_others():
    pool = _digits()
    a = tasks.task_batch(np.random.default_rng(5), pool, 3)
    b = tasks.task_batch(np.random.default_rng(5), pool, 3)
    c = tasks.task_batch(np.random.default_rng(6), pool, 3)
    assert a[0].shape == (3, tasks.LENGTH, tasks.N_IN) and a[1].shape == (3, tasks.LENGTH)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


def test_episode_longer_than_the_data_is_rejected():
    features, labels = _digits()
    with pytest.raises(ValueError, match="episode length 10000 is not possible"):
        tasks.sample_task(
            np.random.default_rng(0), features, labels, num_classes=2, length=10_000, n_in=8
        )


def test_omniglot_pool_has_20_images_per_character(omniglot_dir):
    features, labels = tasks.omniglot_pool()
    assert features.shape[1] == 28 * 28
    assert np.bincount(labels).min() == np.bincount(labels).max() == 20
