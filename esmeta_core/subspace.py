"""A fixed random subspace for the ES estimate (intrinsic dimension).

Li et al. (2018, "Measuring the Intrinsic Dimension of Objective Landscapes",
arXiv:1804.08838) train ``theta = theta_0 + P z`` with a fixed random ``P``
(``D x d``) and find that many networks reach 90 % of their accuracy with
``d << D``. For ES this is tempting: with ``N/2`` antithetic pairs on a locally
linear loss the estimate's cosine to the gradient is about ``sqrt(N / 2D)`` in ``D``
dimensions, and to the subspace's gradient ``P P^T g`` it is ``sqrt(N / 2d)``. But
``P P^T g`` itself has cosine about ``sqrt(d / D)`` to ``g``, so the cosine to the
full gradient stays ``sqrt(N / 2d) sqrt(d / D) = sqrt(N / 2D)``: a better
signal-to-noise ratio, the same first-order progress per step, and a ceiling, since
an average of many estimates (Adam's first moment) tends to ``P P^T g``, not to
``g``. ``results/protonet/ablations.json`` measures it, and :func:`project_gradient`
gives the same subspace's ceiling by backprop (``results/protonet/subspace/``).

Here the subspace moves with the parameters: each step perturbs
``theta + sigma P eps_z`` with ``eps_z ~ N(0, I_d)`` and maps the ``d``-dimensional
estimate back, ``g_theta = P g_z`` (the chain rule for ``theta(z) = theta + P z``
at ``z = 0``). The optimizer (Adam) then acts on ``theta``, so its per-coordinate
scaling can leave the subspace; with plain SGD the run would stay in
``theta_0 + span(P)``, as in Li et al.

``P`` has i.i.d. ``N(0, 1/d)`` entries, so each coordinate of ``P eps_z`` has unit
variance, as plain ES noise does, and ``sigma`` keeps its meaning. ``P`` is
regenerated from its key wherever it is needed (``D x d`` numbers, not ``N x D``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

# fold_in tag of the basis key: a run's basis is fold_in(key(seed), BASIS_TAG).
BASIS_TAG = 0x5B5B


def basis_key(seed: int) -> jax.Array:
    """The key of a run's subspace basis: fixed for the run, so the subspace is too."""
    return jax.random.fold_in(jax.random.key(seed), BASIS_TAG)


def random_basis(key: jax.Array, num_params: int, dim: int) -> jax.Array:
    """``P``: f32[num_params, dim], i.i.d. ``N(0, 1/dim)`` (unit variance per row)."""
    if not (isinstance(dim, int) and 0 < dim):
        raise ValueError(f"subspace dim must be a positive integer, got {dim!r}.")
    return jax.random.normal(key, (num_params, dim), jnp.float32) / jnp.sqrt(jnp.float32(dim))


def project_gradient(grads: Any, key: jax.Array, dim: int) -> Any:
    """``P P^T g`` for a pytree ``g``: the gradient an estimate restricted to ``span(P)``
    can follow (the backprop ceiling of subspace ES)."""
    flat, unravel = ravel_pytree(grads)
    basis = random_basis(key, flat.size, dim)
    return unravel(basis @ (basis.T @ flat))


def in_subspace(loss_fn, params: Any, key: jax.Array, dim: int):
    """Reparameterises ``loss_fn`` around ``params`` in ``d = dim`` coordinates.

    Returns ``(z_loss, z0, to_params_grad, to_z_guide)``: ``z_loss(z, *args) =
    loss_fn(params + P z, *args)`` with ``z0 = 0`` (f32[d]); ``to_params_grad`` maps a
    gradient in ``z`` to one shaped like ``params`` (``P g_z``); ``to_z_guide`` maps a
    ``params``-shaped direction into ``z`` (``P^T v``).
    """
    flat, unravel = ravel_pytree(params)
    basis = random_basis(key, flat.size, dim)

    def z_loss(z: jax.Array, *args: Any) -> jax.Array:
        return loss_fn(unravel(flat + basis @ z), *args)

    def to_params_grad(g_z: jax.Array) -> Any:
        return unravel(basis @ g_z)

    def to_z_guide(direction: Any) -> jax.Array:
        return basis.T @ ravel_pytree(direction)[0]

    return z_loss, jnp.zeros((dim,), flat.dtype), to_params_grad, to_z_guide
