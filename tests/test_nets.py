"""The small networks of esmeta_core.nets: shapes, the MWN weighting, the classifier."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import nets


def test_mlp_maps_rows_to_logits_of_the_last_width():
    params = nets.init_mlp(jax.random.key(0), [5, 7, 3])
    assert nets.mlp(params, jnp.ones((4, 5))).shape == (4, 3)


def test_cross_entropy_is_log_of_the_class_count_for_equal_logits():
    ce = nets.cross_entropy(jnp.zeros((3, 10)), jnp.asarray([0, 4, 9]))
    np.testing.assert_allclose(ce, np.log(10.0), rtol=1e-6)


def test_mwn_weights_have_mean_one_and_follow_the_weight_net_monotonically():
    # A weight net whose output rises with the loss (one hidden unit, positive weights).
    net = [
        {"w": jnp.ones((1, 1)), "b": jnp.zeros(1)},
        {"w": jnp.full((1, 1), 2.0), "b": jnp.zeros(1)},
    ]
    losses = jnp.asarray([0.1, 0.5, 1.0, 3.0])
    w = nets.mwn_example_weights(net, losses)
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-6)
    assert bool(jnp.all(jnp.diff(w) > 0))


def test_classifier_gives_one_logit_per_class():
    model = nets.Classifier(width=4, classes=7)
    x = jnp.zeros((2, 28, 28, 1))
    params = model.init(jax.random.key(0), x)
    assert model.apply(params, x).shape == (2, 7)
