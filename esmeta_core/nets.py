"""Small networks that are neither ProtoNet nor VS-ML, as pure functions over pytrees.

- :func:`init_mlp` / :func:`mlp`: a ReLU MLP as a list of ``{"w", "b"}`` dicts (the
  digits classifiers of the EvoGrad experiments, and Meta-Weight-Net's weight net).
- :class:`Classifier`: Conv4 (from :mod:`esmeta_core.protonet`) plus a linear head,
  the model of the EvoGrad scaling benchmark.
- :func:`mwn_example_weights`: Meta-Weight-Net's per-example weights (Shu et al. 2019,
  arXiv:1902.07379), the one place the weighting lives.

The learned learners beside VS-ML (meta-RNN, Hebbian fast weights, online
linear learners) sit in the last section of this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from esmeta_core import protonet, vsml


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
    """Layers ``sizes[0] -> ... -> sizes[-1]`` with LeCun-normal weights and zero biases.

    Example:
      >>> p = init_mlp(jax.random.key(0), [4, 8, 2])
      >>> [layer["w"].shape for layer in p]
      [(4, 8), (8, 2)]
    """
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params: Any, x: ArrayLike) -> jax.Array:
    """ReLU MLP: f32[n, d_in] -> f32[n, d_out] logits (no activation on the last layer)."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
    """Per-example cross-entropy: f32[n, c], i32[n] -> f32[n]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def accuracy(params: Any, x: ArrayLike, y: ArrayLike) -> float:
    """Fraction of rows of ``x`` f32[n, d] whose arg-max logit is the label ``y`` i32[n]."""
    return float(jnp.mean(jnp.argmax(mlp(params, x), axis=1) == y))


def mwn_example_weights(weight_net: Any, losses: ArrayLike) -> jax.Array:
    """Meta-Weight-Net: per-example weights from per-example losses, normalised to mean 1.

    .. math:: v_i = \\sigma(\\mathcal{V}(\\ell_i; \\lambda)), \\qquad
              w_i = v_i / (\\tfrac{1}{n} \\textstyle\\sum_j v_j)

    (Shu et al. 2019, arXiv:1902.07379; the public code divides by the sum and sums the
    weighted losses, which is the same weighted mean).

    Args:
      weight_net: an :func:`mlp` with input width 1 and output width 1.
      losses: f32[n], the losses the weight net reads.

    Returns:
      f32[n] weights with mean 1.

    Example:
      >>> w = mwn_example_weights(init_mlp(jax.random.key(0), [1, 8, 1]), jnp.ones(5))
      >>> w.shape, bool(jnp.allclose(w.mean(), 1.0))
      ((5,), True)
    """
    v = jax.nn.sigmoid(mlp(weight_net, jnp.asarray(losses)[:, None])[:, 0])  # f32[n]
    return v / (v.mean() + 1e-8)


class Classifier(nn.Module):
    """Conv4 embedding plus a linear head: f32[n, 28, 28, 1] -> f32[n, classes] logits."""

    width: int
    classes: int = 20

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.classes)(protonet.Conv4(self.width)(x))


# ============================================================================
# Learned learners: the baselines beside VS-ML (Kirsch & Schmidhuber 2021,
# arXiv:2012.14905). Every learner maps
#   (params, key, x f32[T, n_in], y i32[T]) -> (losses f32[T], correct f32[T]),
# the online cross-entropy of each prediction made *before* its label is shown,
# and whether it was right. The fitness to minimise is ``losses.mean()``.
# ============================================================================

Learner = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
RNN_HIDDEN = 128  # the meta-RNN's state size in the paper's public configuration


def _scored(logits: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and correctness of one prediction f32[C] for label ``y``."""
    log_probs = jax.nn.log_softmax(logits)
    return -log_probs[y], (jnp.argmax(logits) == y).astype(logits.dtype)


def vsml_learner(*, num_classes: int, config: vsml.VSMLConfig) -> Learner:
    """The VS-ML network as a learner: ``vsml.online_episode`` with fixed sizes."""

    def learner(meta, key, x, y):
        return vsml.online_episode(meta, key, x, y, num_classes=num_classes, config=config)

    return learner


def init_meta_rnn(
    key: jax.Array, *, n_in: int, num_classes: int, hidden: int = RNN_HIDDEN
) -> dict[str, jax.Array]:
    """Meta-RNN parameters: one LSTM (``vsml.lstm_cell``'s layout) and a linear read-out.

    The LSTM reads ``[x_t, e_{t-1}, onehot(y_{t-1})]`` (``n_in + 2 C`` numbers) and
    its hidden state; forget bias +1 (Haiku's ``hk.LSTM``, the reference's MetaRNN).

    Returns:
      ``{"lstm_w": f32[n_in + 2C + H, 4H], "lstm_b": f32[4H], "out": f32[H, C]}``.
    """
    k1, k2 = jax.random.split(key)
    n = n_in + 2 * num_classes + hidden
    return {
        "lstm_w": jax.random.normal(k1, (n, 4 * hidden)) / jnp.sqrt(n),
        "lstm_b": jnp.zeros(4 * hidden).at[hidden : 2 * hidden].set(1.0),
        "out": jax.random.normal(k2, (hidden, num_classes)) / jnp.sqrt(hidden),
    }


def meta_rnn_learner(*, num_classes: int) -> Learner:
    """An LSTM learner (Hochreiter et al. 2001; the paper's MetaRNN baseline).

    At step t it reads ``x_t``, the previous error ``e_{t-1} = softmax(z_{t-1}) -
    onehot(y_{t-1})`` and the previous label, and predicts ``z_t = h_t W_out``.
    Its LSTM step is ``vsml.lstm_cell`` (one cell, ``H`` units).
    """

    def learner(params, key, x, y):
        del key
        hidden = params["out"].shape[0]
        zeros = jnp.zeros(num_classes, x.dtype)

        def step(carry, inputs):
            state, error, previous = carry
            xt, yt = inputs
            state = vsml.lstm_cell(params, state, jnp.concatenate([xt, error, previous]))
            logits = state.h @ params["out"]  # f32[C]
            label = jax.nn.one_hot(yt, num_classes, dtype=x.dtype)
            return (state, jax.nn.softmax(logits) - label, label), _scored(logits, yt)

        state = vsml.VSMLState(jnp.zeros(hidden, x.dtype), jnp.zeros(hidden, x.dtype))
        _, out = jax.lax.scan(step, (state, zeros, zeros), (x, y))
        return out

    return learner


def linear_learner(optimizer: optax.GradientTransformation, *, num_classes: int) -> Learner:
    """Online training of ``logits = x W + b`` from zero with ``optimizer``, one example a step."""

    def loss_fn(w, xt, yt):
        return -jax.nn.log_softmax(xt @ w["w"] + w["b"])[yt]

    def learner(_params, key, x, y):
        del key
        w = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}

        def step(carry, inputs):
            w, state = carry
            xt, yt = inputs
            scored = _scored(xt @ w["w"] + w["b"], yt)
            grads = jax.grad(loss_fn)(w, xt, yt)
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(w, updates), state), scored

        _, out = jax.lax.scan(step, (w, optimizer.init(w)), (x, y))
        return out

    return learner


def mlp_sgd_learner(*, hidden: tuple[int, ...], lr: float | jax.Array, num_classes: int) -> Learner:
    """Online backprop (batch size 1) on a tanh MLP ``n_in -> *hidden -> num_classes``.

    ``vsml.online_mlp_sgd_logits`` from fresh weights ``vsml.init_mlp_weights(key)``
    each episode: the teacher of the multi-layer imitation, run on its own.
    """

    def learner(_params, key, x, y):
        sizes = (x.shape[1], *hidden, num_classes)
        logits = vsml.online_mlp_sgd_logits(x, y, vsml.init_mlp_weights(key, sizes), lr=lr)
        return vsml.online_metrics(logits, y)

    return learner


def init_hebbian(key: jax.Array, *, n_in: int, num_classes: int) -> dict[str, jax.Array]:
    """Parameters of the Hebbian fast-weight learner (the reference's ``HebbianFW``).

    The layer reads ``u = [x, e, onehot(y)]`` (``n_in + 2 C`` numbers; ``e`` and the
    label are zero while predicting). Slow weights ``w`` (truncated normal, std
    ``1/sqrt(n_in + 2C)``), per-weight plasticity ``coeff`` (0.01), bias ``b`` (0) and
    the fast-weight rate ``sigmoid(fw_lr)`` (``fw_lr`` = -4.5), as in ``models.py``.
    """
    n = n_in + 2 * num_classes
    w = jax.random.truncated_normal(key, -2.0, 2.0, (n, num_classes)) / jnp.sqrt(n) / 0.87962566
    return {
        "w": w,
        "coeff": jnp.full((n, num_classes), 0.01),
        "b": jnp.zeros(num_classes),
        "fw_lr": jnp.float32(-4.5),
    }


def oja_update(fast: jax.Array, u: jax.Array, p: jax.Array, rate: jax.Array) -> jax.Array:
    """Oja's rule on every fast weight: ``F_ij + rate * p_j * (u_i - p_j * F_ij)``.

    Args:
      fast: f32[n, C] fast weights; u: f32[n] the layer's input; p: f32[C] its
        post-synaptic activity (``softmax`` of the outputs); rate: a scalar in (0, 1).

    Returns:
      f32[n, C], the new fast weights (Oja 1982; the reference's ``HebbianLinear._oja``).

    >>> oja_update(jnp.zeros((1, 1)), jnp.ones(1), jnp.ones(1), 0.5)
    Array([[0.5]], dtype=float32)
    """
    return fast + rate * p[None, :] * (u[:, None] - p[None, :] * fast)


def hebbian_learner(*, num_classes: int) -> Learner:
    """A fast-weight layer updated by Oja's rule (the paper's Hebbian baseline).

    Per example: predict ``z = u (w + coeff * F) + b`` with ``u = [x, 0, 0]``; then
    the learn pass reads ``u' = [x, e, onehot(y)]`` with the error
    ``e = softmax(z) - onehot(y)``, and ``F <- oja_update(F, u', softmax(z'), sigmoid(fw_lr))``
    with ``z'`` the learn pass's output. ``F`` starts at zero in every episode.
    """

    def learner(params, key, x, y):
        del key
        rate = jax.nn.sigmoid(params["fw_lr"])
        zeros = jnp.zeros(num_classes, x.dtype)

        def outputs(fast, u):
            return u @ (params["w"] + params["coeff"] * fast) + params["b"]

        def step(fast, inputs):
            xt, yt = inputs
            logits = outputs(fast, jnp.concatenate([xt, zeros, zeros]))
            label = jax.nn.one_hot(yt, num_classes, dtype=x.dtype)
            u = jnp.concatenate([xt, jax.nn.softmax(logits) - label, label])
            fast = oja_update(fast, u, jax.nn.softmax(outputs(fast, u)), rate)
            return fast, _scored(logits, yt)

        _, out = jax.lax.scan(step, jnp.zeros_like(params["w"]), (x, y))
        return out

    return learner
