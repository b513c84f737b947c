"""A small MLP classifier as plain pytrees, shared by the digits experiments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp


def init_mlp(key: jax.Array, sizes: Sequence[int]) -> list[dict[str, jax.Array]]:
    """Layers ``sizes[0] -> ... -> sizes[-1]`` with LeCun-normal weights."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (a, b)) / jnp.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp(params: Any, x: jax.Array) -> jax.Array:
    """ReLU MLP: f32[n, d_in] -> f32[n, d_out] logits."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example cross-entropy: f32[n, c], i32[n] -> f32[n]."""
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)[:, 0]


def accuracy(params: Any, x: jax.Array, y: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(mlp(params, x), axis=1) == y))
