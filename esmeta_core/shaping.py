"""Fitness shaping: the ES population's losses to the weights of its noise.

A shaping is a callable ``f32[N] -> f32[N]`` from the member losses, in the
estimator's member order (antithetic: member ``2j`` is ``theta + sigma eps_j`` and
``2j + 1`` is ``theta - sigma eps_j``), to their weights ``s_i`` in
``g = 1/(N sigma) sum_i s_i eps_i`` (:func:`esmeta_core.es.es_grad`). The estimator
replaces non-finite losses first (:func:`replace_nonfinite`), so a shaping sees
finite numbers only. Any such callable can be passed as ``ESConfig.shaping``; the
names of :data:`SHAPINGS` (used by configs and the command line) map to the
built-ins here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

# A fitness shaping: the N member losses (member order) -> their N weights.
Shaping = Callable[[jax.Array], jax.Array]


def centered_ranks(x: jax.Array) -> jax.Array:
    """Ranks of ``x`` scaled to [-0.5, 0.5] (lowest value -0.5); they sum to zero.

    Tied values share their average rank, so equal losses (an antithetic pair
    on a flat region, or a whole population of diverged members) get equal
    weights and add nothing to the gradient.

    Args:
      x: f32[N].
    """
    ordered = jnp.sort(x)
    low = jnp.searchsorted(ordered, x, side="left")  # i32[N], 0 = smallest
    high = jnp.searchsorted(ordered, x, side="right") - 1
    ranks = (low + high).astype(jnp.float32) / 2
    return ranks / jnp.maximum(x.shape[0] - 1, 1) - 0.5


def z_scores(losses: jax.Array) -> jax.Array:
    """``(L_i - mean L) / (std L + 1e-8)``: f32[N] -> f32[N]."""
    return (losses - losses.mean()) / (losses.std() + 1e-8)


def raw_losses(losses: jax.Array) -> jax.Array:
    """The losses themselves: f32[N] -> f32[N]."""
    return losses


def pair_z_scores(losses: jax.Array) -> jax.Array:
    """Antithetic differences over their root mean square, split over each pair: f32[N] -> f32[N].

    A *pair shaping*: it reads ``losses`` in the estimator's member order (``2j``:
    ``theta + sigma eps_j``, ``2j + 1``: ``theta - sigma eps_j``) and gives pair ``j``
    the weights ``+w_j / 2`` and ``-w_j / 2``, so the direction's weight
    ``s_{2j} - s_{2j+1}`` is

    .. math::

       w_j = \\frac{d_j}{\\sqrt{\\operatorname{mean}_k d_k^2}}, \\qquad d_j = L_{2j} - L_{2j+1} .

    It keeps each pair's finite-difference magnitude (which ranks throw away) and makes
    the step independent of the loss scale; no mean is subtracted, since the mean of
    ``d_j`` is itself signal (Mania et al. 2018, arXiv:1803.07055, divide by the std of
    the evaluated rewards). Only for antithetic sampling (``N`` even); without it the
    name ``"pair_z_score"`` means :func:`z_scores`.

    >>> pair_z_scores(jnp.array([1.0, 0.0, 0.0, 1.0]))
    Array([ 0.5, -0.5, -0.5,  0.5], dtype=float32)
    """
    pairs = losses.reshape(-1, 2)
    diffs = pairs[:, 0] - pairs[:, 1]  # f32[N / 2]
    half = diffs / (2 * (jnp.sqrt(jnp.mean(diffs**2)) + 1e-12))
    return jnp.stack([half, -half], axis=1).reshape(-1)


# The built-in shapings by name (configs and the command line use the names).
SHAPING_FUNCTIONS: dict[str, Shaping] = {
    "centered_rank": centered_ranks,
    "z_score": z_scores,
    "raw": raw_losses,
    "pair_z_score": pair_z_scores,
}
SHAPINGS = tuple(SHAPING_FUNCTIONS)


def shaping_function(shaping: str | Shaping, *, antithetic: bool = True) -> Shaping:
    """The callable of a shaping name (:data:`SHAPING_FUNCTIONS`), or ``shaping`` itself."""
    if callable(shaping):
        return shaping
    if shaping not in SHAPING_FUNCTIONS:
        raise ValueError(f"shaping must be one of {SHAPINGS} or a callable, got {shaping!r}.")
    if shaping == "pair_z_score" and not antithetic:
        return z_scores
    return SHAPING_FUNCTIONS[shaping]


def replace_nonfinite(losses: jax.Array) -> jax.Array:
    """Replaces NaN/inf losses by the worst (largest) finite loss, or 0 if none is finite."""
    finite = jnp.isfinite(losses)
    worst = jnp.max(jnp.where(finite, losses, -jnp.inf))
    worst = jnp.where(jnp.any(finite), worst, 0.0)
    return jnp.where(finite, losses, worst)


def shape_losses(losses: jax.Array, shaping: str | Shaping) -> jax.Array:
    """Fitness shaping over the whole population (non-finite losses rank last): f32[N] -> f32[N]."""
    return shaping_function(shaping)(replace_nonfinite(losses))


def direction_weights(losses: jax.Array, shaping: str | Shaping) -> jax.Array:
    """Each direction's weight ``w_j`` in ``g = 1/(N sigma) sum_j w_j eps_j``.

    Args:
      losses: f32[M, 2] (antithetic: columns ``L(theta + sigma eps_j)`` and
        ``L(theta - sigma eps_j)``) or f32[M, 1] (plain sampling).
      shaping: a name of :data:`SHAPINGS` or a callable ``f32[N] -> f32[N]`` of the
        ``N = M x columns`` member losses in member order.

    Returns:
      f32[M]: ``s_{2j} - s_{2j+1}`` of the shaped member losses ``s`` (antithetic),
      or ``s_j`` (plain).
    """
    antithetic = losses.shape[1] == 2
    members = replace_nonfinite(losses.reshape(-1))
    shaped = shaping_function(shaping, antithetic=antithetic)(members).reshape(losses.shape)
    return shaped[:, 0] - shaped[:, 1] if antithetic else shaped[:, 0]
