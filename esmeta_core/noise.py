"""ES noise: regenerated from its key wherever it is needed, never stored.

Direction ``j``'s perturbation is drawn from ``fold_in(key, j)``, one key per leaf,
so the same ``(key, j)`` gives the same noise on any device, in any order, and no
``N x D`` matrix exists. :func:`weighted_noise_sum` forms ``sum_j w_j eps_j`` a chunk
of directions at a time, and :data:`NOISE_SUMS` does it over a mesh axis ``"pop"``
by one of two communication schemes (see :mod:`esmeta_core.es`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from esmeta_core.sharding import POP_AXIS


def direction_noise(key: jax.Array, params: Any, direction: jax.Array) -> Any:
    """Direction ``j``'s standard normal perturbation, shaped like ``params``.

    Regenerated from ``fold_in(key, j)`` and then one key per leaf, so the same
    ``(key, j)`` gives the same noise on any device, in any order.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, direction), len(leaves))
    noise = [
        jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, noise)


def member_noise(key: jax.Array, params: Any, member: int, *, antithetic: bool = True) -> Any:
    """Member ``i``'s perturbation ``eps_i``: ``+eps_j`` for ``i = 2j``, ``-eps_j`` for ``2j + 1``.

    Without antithetic sampling member ``i`` uses direction ``i``. The estimator
    evaluates both members of a pair from one regenerated direction.
    """
    if not antithetic:
        return direction_noise(key, params, member)
    sign = 1.0 - 2.0 * (member % 2)
    return jax.tree.map(lambda e: sign * e, direction_noise(key, params, member // 2))


def weighted_noise_sum(
    key: jax.Array, params: Any, directions: jax.Array, weights: jax.Array, chunk_size: int
) -> Any:
    """``sum_j weights[j] * eps_{directions[j]}``, regenerating noise ``chunk_size`` at a time.

    Args:
      directions: i32[M] direction indices.
      weights: f32[M].
    """
    chunk = math.gcd(directions.shape[0], chunk_size)
    directions = directions.reshape(-1, chunk)  # [M / c, c]
    weights = weights.reshape(-1, chunk)

    def add_chunk(total, chunk_in):
        dirs, w = chunk_in
        noise = jax.vmap(lambda j: direction_noise(key, params, j))(dirs)  # leaves [c, ...]
        return jax.tree.map(lambda t, e: t + jnp.tensordot(w, e, axes=1), total, noise), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = lax.scan(add_chunk, zeros, (directions, weights))
    return total


def _psum_noise_sum(key, params, weights, local_dirs, first, chunk_size):
    """Each device sums its own directions; one ``D``-sized all-reduce adds them up."""
    local_w = lax.dynamic_slice_in_dim(weights, first, local_dirs.shape[0])
    return lax.psum(weighted_noise_sum(key, params, local_dirs, local_w, chunk_size), POP_AXIS)


def _regenerate_noise_sum(key, params, weights, local_dirs, first, chunk_size):
    """Each device regenerates and sums all ``N`` directions (no ``D``-sized traffic)."""
    del local_dirs, first
    all_dirs = jnp.arange(weights.shape[0])
    return weighted_noise_sum(key, params, all_dirs, weights, chunk_size)


# ``sum_j w_j eps_j`` over the whole mesh, by communication scheme (module docstring).
NOISE_SUMS = {"psum": _psum_noise_sum, "regenerate": _regenerate_noise_sum}
COMMUNICATIONS = tuple(NOISE_SUMS)
