"""Property-based tests (hypothesis, bounded examples): shaping, episodes, eval settings.

Each property is checked on at most a few dozen generated cases, deterministically
(``derandomize``), so the file runs in well under a minute and the same cases run
in CI and locally.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmeta_core import cli, es
from esmeta_core.data import episodes

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True)

# Losses as a population can produce them: finite values of any size, NaN, +-inf.
loss_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False, width=32),
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)


@BOUNDED
@given(losses=st.lists(loss_values, min_size=2, max_size=16))
def test_rank_shaping_is_finite_sums_to_zero_and_within_half_under_nan_and_inf(losses):
    shaped = np.asarray(es.shape_losses(np.asarray(losses, np.float32), "centered_rank"))
    assert shaped.shape == (len(losses),)
    assert np.all(np.isfinite(shaped))
    assert abs(float(shaped.sum())) <= 1e-4 * len(losses)
    assert np.all(np.abs(shaped) <= 0.5)


@BOUNDED
@given(
    losses=st.lists(st.floats(-1e6, 1e6, allow_subnormal=False, width=32), min_size=2, max_size=16)
)
def test_rank_shaping_keeps_the_order_of_finite_losses(losses):
    # (Subnormal floats are left out: XLA on CPU flushes them to zero, so 1e-45 ties with 0.)
    x = np.asarray(losses, np.float32)
    shaped = np.asarray(es.shape_losses(x, "centered_rank"))
    i, j = np.triu_indices(len(x), 1)
    assert np.all(np.sign(shaped[i] - shaped[j]) == np.sign(x[i] - x[j]))


@st.composite
def episode_problems(draw):
    num_classes = draw(st.integers(2, 12))
    per_class = draw(st.integers(2, 20))
    way = draw(st.integers(1, num_classes))
    shot = draw(st.integers(1, per_class - 1))
    query = draw(st.integers(1, per_class - shot))
    seed = draw(st.integers(0, 2**31 - 1))
    step = draw(st.integers(0, 10**6))
    return num_classes, per_class, way, shot, query, seed, step


@BOUNDED
@given(problem=episode_problems())
def test_episode_support_and_query_are_disjoint_with_correct_counts(problem):
    num_classes, per_class, way, shot, query, seed, step = problem
    # Every image is filled with its own id: class * per_class + index.
    ids = np.arange(num_classes * per_class, dtype=np.float32).reshape(num_classes, per_class)
    images = np.broadcast_to(ids[:, :, None, None], (num_classes, per_class, 3, 3)).copy()
    ep = episodes.sample_episode(
        images, episodes.episode_rng(seed, step), way=way, shot=shot, query=query
    )
    support_ids = ep.support[:, 0, 0, 0].astype(int)
    query_ids = ep.query[:, 0, 0, 0].astype(int)
    assert ep.support.shape == (way * shot, 3, 3, 1) and ep.query.shape == (way * query, 3, 3, 1)
    assert np.all(ep.support == ep.support[:, :1, :1]) and np.all(ep.query == ep.query[:, :1, :1])
    assert not set(support_ids) & set(query_ids)  # no image is both support and query
    assert len(set(support_ids)) == way * shot and len(set(query_ids)) == way * query
    for label in range(way):
        classes = set(support_ids[ep.support_labels == label] // per_class)
        classes |= set(query_ids[ep.query_labels == label] // per_class)
        assert len(classes) == 1  # one label, one class
        assert np.sum(ep.support_labels == label) == shot
        assert np.sum(ep.query_labels == label) == query
    assert len(set(support_ids // per_class)) == way  # way distinct classes
    # The same (seed, step) draws the same episode.
    again = episodes.sample_episode(
        images, episodes.episode_rng(seed, step), way=way, shot=shot, query=query
    )
    np.testing.assert_array_equal(again.query, ep.query)


valid_settings = st.lists(
    st.tuples(st.integers(2, 2000), st.integers(1, cli.MAX_SHOT)),
    min_size=1,
    max_size=6,
    unique=True,
)


@BOUNDED
@given(items=valid_settings, suffix=st.booleans(), spaces=st.booleans())
def test_eval_settings_parser_round_trips_valid_settings(items, suffix, spaces):
    sep = ", " if spaces else ","
    text = sep.join(f"{w}w{s}{'s' if suffix else ''}" for w, s in items)
    assert cli._parse_settings(text) == tuple(items)


@BOUNDED
@given(text=st.text(alphabet="0123456789ws, -x.", max_size=20))
def test_eval_settings_parser_accepts_or_raises_only_argparse_errors(text):
    try:
        parsed = cli._parse_settings(text)
    except argparse.ArgumentTypeError as e:
        assert "setting" in str(e)
        return
    assert len(parsed) >= 1 and len(set(parsed)) == len(parsed)
    for way, shot in parsed:
        assert way >= 2 and 1 <= shot <= cli.MAX_SHOT


@pytest.mark.parametrize("text", ["5w0s", "1w1s", "5w20s", "5w", "w5", "5w1s,", "-5w1s", "5w1.5s"])
def test_eval_settings_parser_names_the_bad_item(text):
    with pytest.raises(argparse.ArgumentTypeError, match="setting"):
        cli._parse_settings(text)
