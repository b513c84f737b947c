"""EvoGrad: first-order, evolution-inspired hypergradients (Bohdal et al. 2021, arXiv:2106.10575).

Given model parameters :math:`\\theta` and hyperparameters :math:`\\lambda`
(both pytrees), EvoGrad makes ``K`` perturbed copies of the (detached) model,
weights them by how well they fit the training loss, and differentiates the
validation loss of their weighted mean through the weights only. Losses are
minimised:

.. math::

   \\theta_k &= \\theta + \\sigma \\epsilon_k, \\quad k = 1..K \\\\
   w &= \\operatorname{softmax}\\big(-[L_{train}(\\theta_k; \\lambda)]_k / \\tau\\big) \\\\
   \\theta^\\ast &= \\textstyle\\sum_k w_k \\theta_k \\\\
   g_\\lambda &= \\partial L_{val}(\\theta^\\ast) / \\partial \\lambda .

No second-order derivative and no unrolled graph is needed: the cost is ``K``
training-loss evaluations, one validation gradient and one backward pass through
the ``K`` losses. Defaults follow the public code: ``K = 2``, ``sigma = 0.001``
with random-sign noise, ``tau = 0.05``.

**Scale.** For small ``sigma`` the chain rule through the softmax gives

.. math::

   g_\\lambda = -\\frac{\\sigma}{\\tau} \\sum_k w_k (a_k - \\bar a)
                \\frac{\\partial L_{train}(\\theta_k)}{\\partial \\lambda},
   \\qquad a_k = \\langle \\nabla L_{val}(\\theta^\\ast), \\epsilon_k \\rangle,

and, averaged over the noise (sign or Gaussian, near-uniform weights),
:math:`E[g_\\lambda] \\approx -\\frac{\\sigma^2 (1 - 1/K)}{\\tau}
\\nabla_\\theta L_{val}^\\top \\nabla^2_{\\theta\\lambda} L_{train}`. One
unrolled SGD step of size ``eta`` gives the exact
:math:`-\\eta \\nabla_\\theta L_{val}^\\top \\nabla^2_{\\theta\\lambda} L_{train}`,
so EvoGrad points the same way at ``sigma^2 (1 - 1/K) / (tau eta)`` of its
length: ``2 sigma^2 w_1 w_2 / (tau eta) = 1e-4`` with the public defaults and
``eta = 0.1``. Adam divides the scale away (its step is invariant to it); plain
SGD with the public meta learning rate (1e-3) moves ``lambda`` by 1e-4 of the
second-order step and in practice not at all.

**Memory.** By default the copies are never stored: copy ``k``'s noise is
regenerated from ``jax.random.fold_in(key, k)`` each time it is needed (as in
:mod:`esmeta_core.es`), the ``K`` training losses run under ``lax.map``, and
:math:`\\theta^\\ast = \\theta + \\sigma \\sum_k w_k \\epsilon_k` is accumulated.
Where the training loss reaches ``lambda`` without going back through the model's
weights (Meta-Weight-Net), the backward pass keeps only the ``K`` loss vectors.
``materialise=True`` vmaps the ``K`` copies instead (same numbers, more memory).

:func:`unrolled_hypergradient` is the second-order baseline it replaces: the
exact hypergradient through ``T`` unrolled SGD steps (``jax.grad`` of
``jax.grad``). :func:`make_bilevel_step` and :func:`run_bilevel` are the one
training loop that both use (the rotation and Meta-Weight-Net experiments).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

NOISE_KINDS = ("sign", "gaussian")
ArrayLikeInt = int | jax.Array
META_METHODS = ("evograd", "second_order", "none")


class EvoGradAux(NamedTuple):
    """What EvoGrad saw: copy weights f32[K], their train losses f32[K], the val loss f32[]."""

    weights: jax.Array
    train_losses: jax.Array
    val_loss: jax.Array


def _validate_float_pytree(name: str, tree: Any) -> None:
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


def copy_noise(key: jax.Array, k: ArrayLikeInt, like: Any, *, noise: str = "sign") -> Any:
    """``eps_k``, copy ``k``'s noise, shaped like the pytree ``like``, from ``fold_in(key, k)``.

    ``noise="sign"`` draws each entry from {-1, +1} (the public code's
    ``sign(randn)``); ``"gaussian"`` from N(0, 1). The same ``(key, k)`` always gives
    the same noise, so it can be regenerated instead of stored.
    """
    leaves, treedef = jax.tree.flatten(like)
    keys = jax.random.split(jax.random.fold_in(key, k), len(leaves))
    draw = jax.random.rademacher if noise == "sign" else jax.random.normal
    eps = [draw(kk, jnp.shape(x), jnp.result_type(x)) for kk, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, eps)


def perturbed_copies(
    key: jax.Array, theta: Any, *, copies: int, sigma: float, noise: str = "sign"
) -> Any:
    """``theta_k = theta + sigma eps_k`` for k < K: every leaf gains a leading ``[K]`` axis.

    This materialises the ``K`` copies (for teaching and tests);
    :func:`evograd_hypergradient` regenerates them instead.
    """
    one = lambda k: jax.tree.map(
        lambda t, e: t + sigma * e, theta, copy_noise(key, k, theta, noise=noise)
    )
    return jax.vmap(one)(jnp.arange(copies))


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
    materialise: bool = False,
) -> tuple[Any, EvoGradAux]:
    """The EvoGrad hypergradient :math:`\\partial L_{val}(\\theta^\\ast) / \\partial \\lambda`.

    Computed as in the module docstring: ``losses, vjp = jax.vjp(K train losses, lam)``;
    ``w = softmax(-losses / tau)``; ``dL/dw_k = sigma <grad L_val(theta*), eps_k>`` (the
    common ``<grad, theta>`` term cancels in the softmax); ``g = vjp(softmax backward)``.

    Args:
      train_loss: ``train_loss(theta, lam, batch) -> f32[]``. Whatever ``lam`` reads must
        come from ``theta`` *as given* or from the batch: Meta-Weight-Net, for instance,
        should put the unperturbed model's losses in the batch (see
        :mod:`esmeta_core.experiments.evograd_mwn`).
      val_loss: ``val_loss(theta, batch) -> f32[]``.
      theta: model parameters, a pytree (treated as a constant).
      lam: hyperparameters, a pytree of floats.
      key: PRNG key for the perturbations; copy ``k`` uses ``fold_in(key, k)``.
      train_batch, val_batch: passed to the losses.
      copies: ``K``, the number of perturbed copies (>= 2).
      sigma: perturbation scale.
      temperature: ``tau`` of the softmax over negative training losses.
      noise: ``"sign"`` (random signs, as in the public code) or ``"gaussian"``.
      materialise: vmap the ``K`` copies (stores them) instead of ``lax.map`` over them.

    Returns:
      ``(hypergradient, aux)``: the hypergradient shaped like ``lam`` and an
      :class:`EvoGradAux`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> train = lambda x, lam, _: (x - 1.0) ** 2 + lam * x**2
      >>> val = lambda x, _: (x - 0.5) ** 2
      >>> g, aux = evograd_hypergradient(train, val, jnp.float32(0.5), jnp.float32(1.5),
      ...                                jax.random.key(0), None, None, copies=100,
      ...                                sigma=1.0, temperature=0.5, noise="gaussian")
      >>> bool(g > 0)  # the exact hypergradient (lam - 1) / (lam + 1)^3 is positive
      True
    """
    validate_evograd(copies, sigma, temperature, noise)
    _validate_float_pytree("lam", lam)
    theta = lax.stop_gradient(theta)
    c = _copies(key, theta, copies=copies, noise=noise, materialise=materialise)

    def train_losses(lam):
        def one(x):
            theta_k = jax.tree.map(lambda t, e: t + sigma * e, theta, c.eps(x))
            return train_loss(theta_k, lam, train_batch)

        return c.over(one)(c.xs)  # f32[K]

    losses, pullback = jax.vjp(train_losses, lam)
    weights = jax.nn.softmax(-losses / temperature)  # f32[K]
    theta_star = jax.tree.map(lambda t, e: t + sigma * e, theta, _weighted_noise(c, weights, theta))
    loss, g_val = jax.value_and_grad(val_loss)(theta_star, val_batch)

    def along_noise(x):  # sigma <grad L_val(theta*), eps_k>
        leaves = jax.tree.leaves(jax.tree.map(jnp.vdot, g_val, c.eps(x)))
        return sigma * sum(leaves)

    d_weights = c.over(along_noise)(c.xs)  # f32[K], dL_val/dw_k up to a common constant
    d_losses = -(weights / temperature) * (d_weights - jnp.dot(weights, d_weights))
    (hypergrad,) = pullback(d_losses.astype(losses.dtype))
    return hypergrad, EvoGradAux(weights, losses, loss)


class _Copies(NamedTuple):
    """How :func:`evograd_hypergradient` reaches the ``K`` copies' noise.

    ``over(f)(xs)`` maps ``f`` over the copies (``f32[K]`` out) and ``eps(x)`` is the
    noise of the copy ``x`` stands for. Materialised: ``xs`` is the stacked noise
    (every leaf ``[K, ...]``), ``over`` is ``vmap``. Otherwise ``xs`` is ``arange(K)``,
    ``over`` is ``lax.map`` and ``eps`` regenerates copy ``k``'s noise from ``(key, k)``.
    """

    over: Callable[[Callable[[Any], jax.Array]], Callable[[Any], jax.Array]]
    xs: Any
    eps: Callable[[Any], Any]
    materialised: bool


def _copies(key: jax.Array, theta: Any, *, copies: int, noise: str, materialise: bool) -> _Copies:
    ks = jnp.arange(copies)
    if materialise:  # eps: every leaf gains a leading [K] axis; the maps vmap over it
        stacked = jax.vmap(lambda k: copy_noise(key, k, theta, noise=noise))(ks)
        return _Copies(jax.vmap, stacked, lambda e: e, True)
    # copy k's noise is regenerated from (key, k) wherever it is needed
    over = lambda f: lambda ks: lax.map(f, ks)
    return _Copies(over, ks, lambda k: copy_noise(key, k, theta, noise=noise), False)


def _weighted_noise(c: _Copies, weights: jax.Array, theta: Any) -> Any:
    """``sum_k w_k eps_k``, shaped like ``theta`` (accumulated copy by copy unless materialised)."""
    if c.materialised:
        return jax.tree.map(lambda e: jnp.tensordot(weights, e, axes=1), c.xs)

    def add_copy(acc, k):
        return jax.tree.map(lambda a, e: a + weights[k] * e, acc, c.eps(k)), None

    mean_eps, _ = lax.scan(add_copy, jax.tree.map(jnp.zeros_like, theta), c.xs)
    return mean_eps


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
    ``jax.grad``); memory grows with ``steps`` and with the model. With one step this
    is Meta-Weight-Net's hypergradient (Shu et al. 2019, arXiv:1902.07379).

    Returns:
      ``(hypergradient, val_loss)``.
    """
    _validate_float_pytree("lam", lam)
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


class BilevelState(NamedTuple):
    """Model parameters and hyperparameters with their optimiser states."""

    params: Any
    model_state: Any
    lam: Any
    meta_state: Any


def validate_meta_method(method: str) -> None:
    """Raises ``ValueError`` unless ``method`` is one of :data:`META_METHODS`."""
    if method not in META_METHODS:
        raise ValueError(f"method must be one of {META_METHODS}, got {method!r}.")


def make_bilevel_step(
    train_loss: Callable[[Any, Any, Any], jax.Array],
    val_loss: Callable[[Any, Any], jax.Array],
    model_opt: optax.GradientTransformation,
    meta_opt: optax.GradientTransformation,
    *,
    method: str,
    inner_lr: float = 0.1,
    model_loss: Callable[[Any, Any, Any], jax.Array] | None = None,
    prepare_batch: Callable[[Any, Any], Any] | None = None,
    **evograd_options: Any,
) -> Callable[[BilevelState, jax.Array, Any, Any], BilevelState]:
    """One alternating step: a hyper-step on ``lam``, then a model step on ``train_loss``.

    ``method`` picks the hypergradient: ``"evograd"`` (:func:`evograd_hypergradient`
    with ``evograd_options``), ``"second_order"`` (:func:`unrolled_hypergradient`
    through one SGD step of size ``inner_lr``) or ``"none"`` (``lam`` stays put). The
    model then takes a ``model_opt`` step on ``model_loss`` (default ``train_loss``)
    at the updated ``lam``. ``prepare_batch(params, train_batch)``, if given, rewrites the
    training batch first with the *unperturbed* parameters (Meta-Weight-Net adds the
    losses its weight net reads there).

    Returns:
      ``step(state, key, train_batch, val_batch) -> state``, pure and jittable.
    """
    validate_meta_method(method)
    model_loss = model_loss or train_loss

    def step(state: BilevelState, key: jax.Array, train_batch: Any, val_batch: Any):
        params, model_state, lam, meta_state = state
        if prepare_batch is not None:
            train_batch = prepare_batch(params, train_batch)
        if method != "none":
            if method == "evograd":
                g, _ = evograd_hypergradient(
                    train_loss, val_loss, params, lam, key, train_batch, val_batch,
                    **evograd_options,
                )  # fmt: skip
            else:
                g, _ = unrolled_hypergradient(
                    train_loss, val_loss, params, lam, train_batch, val_batch, lr=inner_lr
                )
            updates, meta_state = meta_opt.update(g, meta_state, lam)
            lam = optax.apply_updates(lam, updates)
        grads = jax.grad(model_loss)(params, lam, train_batch)
        updates, model_state = model_opt.update(grads, model_state, params)
        params = optax.apply_updates(params, updates)
        return BilevelState(params, model_state, lam, meta_state)

    return step


def run_bilevel(
    step: Callable[[BilevelState, jax.Array, Any, Any], BilevelState],
    state: BilevelState,
    key: jax.Array,
    train_batch: Callable[[jax.Array], Any],
    val_batch: Callable[[jax.Array], Any],
    *,
    steps: int,
    record: Callable[[BilevelState], Any] = lambda s: None,
) -> tuple[BilevelState, Any]:
    """Runs ``steps`` bilevel steps in one jitted ``lax.scan``.

    Args:
      step: from :func:`make_bilevel_step`.
      state: the initial :class:`BilevelState`.
      key: step ``t`` uses ``fold_in(key, t)`` for the perturbations.
      train_batch, val_batch: ``t -> batch``, jittable (e.g. index device arrays by a
        precomputed ``i32[steps, batch]`` table).
      steps: number of steps.
      record: ``state -> pytree`` kept after every step (e.g. the hyperparameter).

    Returns:
      ``(final state, records stacked over steps)``.
    """

    def body(state, t):
        state = step(state, jax.random.fold_in(key, t), train_batch(t), val_batch(t))
        return state, record(state)

    return jax.jit(lambda s: lax.scan(body, s, jnp.arange(steps)))(state)
