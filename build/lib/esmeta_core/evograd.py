"""EvoGrad: first-order, evolution-inspired hypergradients (Bohdal et al. 2021, arXiv:2106.10575).

Given model parameters :math:`\\theta` and hyperparameters :math:`\\lambda`
(both pytrees), EvoGrad makes ``K`` perturbed copies of the (detached) model,
weights them by how well they fit the training loss, and differentiates the
validation loss of their weighted mean through the weights only:

.. math::

   \\theta_k &= \\theta + \\sigma \\epsilon_k, \\quad k = 1..K \\\\
   w &= \\operatorname{softmax}\\big(-[L_{train}(\\theta_k; \\lambda)]_k / \\tau\\big) \\\\
   \\theta^\\ast &= \\textstyle\\sum_k w_k \\theta_k \\\\
   g_\\lambda &= \\partial L_{val}(\\theta^\\ast) / \\partial \\lambda .

No second-order derivative and no unrolled graph is needed: the cost is ``K``
training-loss evaluations and one backward pass through them. Defaults follow
the public code: ``K = 2``, ``sigma = 0.001`` with random-sign noise,
``tau = 0.05``.

:func:`unrolled_hypergradient` is the second-order baseline it replaces: the
exact hypergradient through ``T`` unrolled SGD steps (``jax.grad`` of
``jax.grad``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

NOISE_KINDS = ("sign", "gaussian")


class EvoGradAux(NamedTuple):
    """What EvoGrad saw: copy weights f32[K], their train losses f32[K], the val loss f32[]."""

    weights: jax.Array
    train_losses: jax.Array
    val_loss: jax.Array


def _check_float_pytree(name: str, tree: Any) -> None:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise TypeError(f"{name} must be a non-empty pytree of float arrays, got {tree!r}.")
    for leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name} must be a pytree of float arrays (hypergradients need floats), but a "
                f"leaf has dtype {dtype}. Pass e.g. jnp.asarray(value, jnp.float32)."
            )


def validate_evograd(copies: int, sigma: float, temperature: float, noise: str) -> None:
    """Raises ``ValueError`` naming the bad option and its allowed range."""
    if not isinstance(copies, int) or copies < 2:
        raise ValueError(f"copies (K) must be an integer >= 2 to compare copies, got {copies!r}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature (tau) must be positive, got {temperature!r}.")
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}.")


def perturbed_copies(
    key: jax.Array, theta: Any, *, copies: int, sigma: float, noise: str = "sign"
) -> Any:
    """``theta_k = theta + sigma eps_k``: every leaf gains a leading ``[K]`` axis.

    ``noise="sign"`` draws each entry of ``eps_k`` from {-1, +1}; ``"gaussian"`` from N(0, 1).
    """
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))

    def draw(k, x):
        shape = (copies, *jnp.shape(x))
        if noise == "sign":
            eps = jax.random.rademacher(k, shape, jnp.result_type(x))
        else:
            eps = jax.random.normal(k, shape, jnp.result_type(x))
        return x[None] + sigma * eps

    return jax.tree.unflatten(treedef, [draw(k, x) for k, x in zip(keys, leaves, strict=True)])


def evograd_hypergradient(
    train_loss: Callable[[Any, Any, Any], jax.Array],
    val_loss: Callable[[Any, Any], jax.Array],
    theta: Any,
    lam: Any,
    key: jax.Array,
    train_batch: Any,
    val_batch: Any,
    *,
    copies: int = 2,
    sigma: float = 0.001,
    temperature: float = 0.05,
    noise: str = "sign",
) -> tuple[Any, EvoGradAux]:
    """The EvoGrad hypergradient :math:`\\partial L_{val}(\\theta^\\ast) / \\partial \\lambda`.

    Args:
      train_loss: ``train_loss(theta, lam, batch) -> f32[]``.
      val_loss: ``val_loss(theta, batch) -> f32[]``.
      theta: model parameters, a pytree (treated as a constant).
      lam: hyperparameters, a pytree of floats.
      key: PRNG key for the perturbations.
      train_batch, val_batch: passed to the losses.
      copies: ``K``, the number of perturbed copies (>= 2).
      sigma: perturbation scale.
      temperature: ``tau`` of the softmax over negative training losses.
      noise: ``"sign"`` (random signs, as in the public code) or ``"gaussian"``.

    Returns:
      ``(hypergradient, aux)``: the hypergradient shaped like ``lam`` and an
      :class:`EvoGradAux`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> train = lambda x, lam, _: (x - 1.0) ** 2 + lam * x**2
      >>> val = lambda x, _: (x - 0.5) ** 2
      >>> g, aux = evograd_hypergradient(train, val, jnp.float32(0.5), jnp.float32(1.5),
      ...                                jax.random.key(0), None, None, copies=100,
      ...                                sigma=1.0, temperature=0.5)
      >>> bool(g > 0)  # the exact hypergradient (lam - 1) / (lam + 1)^3 is positive
      True
    """
    validate_evograd(copies, sigma, temperature, noise)
    _check_float_pytree("lam", lam)
    theta = lax.stop_gradient(theta)
    thetas = perturbed_copies(key, theta, copies=copies, sigma=sigma, noise=noise)  # [K, ...]

    def hyper_objective(lam):
        losses = jax.vmap(lambda t: train_loss(t, lam, train_batch))(thetas)  # f32[K]
        weights = jax.nn.softmax(-losses / temperature)  # f32[K]
        theta_star = jax.tree.map(lambda t: jnp.tensordot(weights, t, axes=1), thetas)
        loss = val_loss(theta_star, val_batch)
        return loss, (weights, losses)

    (loss, (weights, losses)), hypergrad = jax.value_and_grad(hyper_objective, has_aux=True)(lam)
    return hypergrad, EvoGradAux(weights, losses, loss)


def unrolled_hypergradient(
    train_loss: Callable[[Any, Any, Any], jax.Array],
    val_loss: Callable[[Any, Any], jax.Array],
    theta: Any,
    lam: Any,
    train_batch: Any,
    val_batch: Any,
    *,
    lr: float,
    steps: int = 1,
) -> tuple[Any, jax.Array]:
    """Second-order baseline: the exact hypergradient through ``steps`` SGD steps.

    .. math::

       \\theta_{t+1} = \\theta_t - \\eta \\nabla_\\theta L_{train}(\\theta_t; \\lambda), \\qquad
       g_\\lambda = \\frac{d}{d\\lambda} L_{val}(\\theta_T) ,

    computed by differentiating through the unrolled updates (``jax.grad`` of
    ``jax.grad``); memory grows with ``steps`` and with the model.

    Returns:
      ``(hypergradient, val_loss)``.
    """
    _check_float_pytree("lam", lam)
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")

    def objective(lam):
        def sgd(th, _):
            grads = jax.grad(train_loss)(th, lam, train_batch)
            return jax.tree.map(lambda p, g: p - lr * g, th, grads), None

        theta_t, _ = lax.scan(sgd, theta, None, length=steps)
        return val_loss(theta_t, val_batch)

    loss, hypergrad = jax.value_and_grad(objective)(lam)
    return hypergrad, loss
