"""esmeta_core.nets: MLP shapes, the MWN weighting, the classifier, and the learned
learners beside VS-ML (Oja's rule, the Hebbian learner, the meta-RNN, linear SGD)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def test_oja_update_matches_a_hand_computed_case():
    fast = jnp.array([[0.5, -1.0], [2.0, 0.0]])
    u, p, rate = jnp.array([1.0, -2.0]), jnp.array([0.25, 0.75]), 0.1
    # F_ij + rate * p_j * (u_i - p_j * F_ij), worked out by hand:
    #   0.5 + 0.1 * 0.25 * (1 - 0.25 * 0.5) = 0.521875
    #  -1.0 + 0.1 * 0.75 * (1 + 0.75)      = -0.86875
    #   2.0 + 0.1 * 0.25 * (-2 - 0.25 * 2) = 1.9375
    #   0.0 + 0.1 * 0.75 * (-2 - 0)        = -0.15
    expected = np.array([[0.521875, -0.86875], [1.9375, -0.15]])
    np.testing.assert_allclose(nets.oja_update(fast, u, p, rate), expected, rtol=1e-6)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_hebbian_learner_predicts_with_the_fast_weights_of_the_previous_examples():
    n_in, c = 3, 2
    params = nets.init_hebbian(jax.random.key(0), n_in=n_in, num_classes=c)
    params = {**params, "coeff": jnp.full_like(params["coeff"], 0.7), "fw_lr": jnp.float32(0.3)}
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, n_in)), np.float64)
    y = np.array([1, 0, 1])
    losses, correct = nets.hebbian_learner(num_classes=c)(params, None, jnp.asarray(x), y)
    w, coeff, b = (np.asarray(params[k], np.float64) for k in ("w", "coeff", "b"))
    rate = 1 / (1 + np.exp(-0.3))
    fast, expected = np.zeros_like(w), []
    for xt, yt in zip(x, y, strict=True):
        z = np.concatenate([xt, np.zeros(2 * c)]) @ (w + coeff * fast) + b
        expected.append(-np.log(_softmax(z)[yt]))
        label = np.eye(c)[yt]
        u = np.concatenate([xt, _softmax(z) - label, label])
        p = _softmax(u @ (w + coeff * fast) + b)
        fast = fast + rate * p[None, :] * (u[:, None] - p[None, :] * fast)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert correct.shape == (3,)
    assert abs(expected[2] - expected[0]) > 1e-3  # the fast weights changed the prediction


def test_meta_rnn_prediction_depends_on_the_previous_label():
    params = nets.init_meta_rnn(jax.random.key(0), n_in=4, num_classes=3, hidden=8)
    assert params["lstm_w"].shape == (4 + 2 * 3 + 8, 32)
    learner = nets.meta_rnn_learner(num_classes=3)
    x = jax.random.normal(jax.random.key(1), (5, 4))
    a, _ = learner(params, None, x, jnp.array([0, 1, 2, 0, 1]))
    b, _ = learner(params, None, x, jnp.array([0, 2, 2, 0, 1]))
    assert float(a[0]) == float(b[0])  # the first prediction sees no label yet
    assert abs(float(a[2]) - float(b[2])) > 1e-6  # the third saw y_1


def test_linear_sgd_learner_takes_one_gradient_step_per_example():
    x = jnp.array([[1.0, 2.0], [0.5, -1.0]])
    y = jnp.array([1, 0])
    losses, _ = nets.linear_learner(optax.sgd(0.5), num_classes=2)(None, None, x, y)
    # from zero: p = (1/2, 1/2), dL/dW = x (p - onehot) => W = -0.5 x0 (p - e1), b likewise
    err = np.array([0.5, -0.5])
    w = -0.5 * np.outer([1.0, 2.0], err)
    b = -0.5 * err
    z = np.array([0.5, -1.0]) @ w + b
    np.testing.assert_allclose(losses, [np.log(2), -np.log(_softmax(z)[0])], rtol=1e-6)
