"""Small networks that are neither ProtoNet nor VS-ML, as pure functions over pytrees.

- :func:`init_mlp` / :func:`mlp`: a ReLU MLP as a list of ``{"w", "b"}`` dicts (the
  digits classifiers of the EvoGrad experiments, and Meta-Weight-Net's weight net).
- :class:`Classifier`: Conv4 (from :mod:`esmeta_core.protonet`) plus a linear head,
  the model of the EvoGrad scaling benchmark.
- :func:`mwn_example_weights`: Meta-Weight-Net's per-example weights (Shu et al. 2019,
  arXiv:1902.07379), the one place the weighting lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from esmeta_core import protonet


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
