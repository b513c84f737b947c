"""One training step of a ProtoNet, by backprop or by sharded ES: the training-step contract.

The pieces every user of a training step shares (training, the diagnostics in
``scripts/diagnostics/`` and the benchmarks):

- :func:`make_episode_loss` and :func:`make_loss`: the training loss, the ES fitness
  and the backprop loss alike, on ``config.training_way`` classes;
- :func:`make_loss_and_metrics`: the loss and accuracy reported for a step;
- :func:`make_gradient`: the step's gradient, :func:`esmeta_core.es.es_grad_masked`
  sharded over a mesh (``method="es"``) or ``jax.grad`` (``"backprop"``);
- :func:`make_train_step`: the jitted ``(params, opt_state, key, episodes) ->
  (params, opt_state, metrics)`` that :mod:`esmeta_core.train`'s loop calls.

:func:`init_state` is a run's first state and :func:`step_key` the ES noise key of a
step (``fold_in(key(seed + 1), step)``), so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from esmeta_core import es, optim, protonet
from esmeta_core.checkpoint import TrainState
from esmeta_core.configs import TrainConfig, es_config
from esmeta_core.data import Episode

Loss = Callable[[Any, Episode], jax.Array]


def all_finite(tree: Any) -> jax.Array:
    """``True`` iff every element of every leaf of ``tree`` is finite."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def model_for(config: TrainConfig) -> protonet.Conv4:
    """The Conv4 embedding a config trains: ``width`` channels, ``separable`` or not."""
    return protonet.Conv4(config.width, separable=config.separable)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """:func:`esmeta_core.optim.make_optimizer` with the Conv4's kernels as the kernel mask."""
    return optim.make_optimizer(config, kernel_mask=protonet.conv_kernel_mask)


def init_state(config: TrainConfig, model: protonet.Conv4) -> TrainState:
    params = protonet.init_params(jax.random.key(config.seed), model)
    return TrainState(0, params, make_optimizer(config).init(params))


def step_key(seed: int, step: int) -> jax.Array:
    """The ES noise key of step ``step``: ``fold_in(key(seed + 1), step)``."""
    return jax.random.fold_in(jax.random.key(seed + 1), step)


def perturb_mask(config: TrainConfig, params: Any) -> Any:
    """Which leaves ES perturbs: all (``None``), or all but the conv biases."""
    if config.perturb_conv_bias:
        return None
    return jax.tree.map(lambda b: not b, protonet.conv_bias_mask(params))


def make_episode_loss(
    config: TrainConfig, model: protonet.Conv4, *, query_chunk: int | None = None
) -> Loss:
    """``loss(params, episode) -> f32[]``: one episode's mean query cross-entropy.

    The episode has no batch axis; it has ``config.training_way`` classes.
    ``query_chunk`` embeds the queries that many at a time (the same loss, flat
    memory; see :func:`esmeta_core.protonet.episode_loss_and_accuracy`).
    """

    def loss(params: Any, episode: Episode) -> jax.Array:
        return protonet.episode_loss(
            model, params, episode, way=config.training_way, query_chunk=query_chunk
        )

    return loss


def make_loss(config: TrainConfig, model: protonet.Conv4) -> Loss:
    """``loss(params, episodes) -> f32[]``: the training loss, ES fitness and backprop loss.

    .. math::

       L(\\theta) = \\frac{1}{B} \\sum_{b=1}^{B} \\mathrm{CE}_b(\\theta),

    the mean over the episodes' leading ``[B]`` axis of :func:`make_episode_loss`.
    """
    episode_loss = make_episode_loss(config, model)

    def loss(params: Any, episodes: Episode) -> jax.Array:
        return jax.vmap(lambda e: episode_loss(params, e))(episodes).mean()

    return loss


def make_loss_and_metrics(
    config: TrainConfig, model: protonet.Conv4
) -> Callable[[Any, Episode], dict[str, jax.Array]]:
    """``metrics(params, episodes) -> {"loss": f32[], "accuracy": f32[]}`` at ``params``.

    Means over the episodes' leading ``[B]`` axis, on ``config.training_way`` classes.
    """

    def metrics(params: Any, episodes: Episode) -> dict[str, jax.Array]:
        loss, acc = jax.vmap(
            lambda e: protonet.episode_loss_and_accuracy(model, params, e, way=config.training_way)
        )(episodes)
        return {"loss": loss.mean(), "accuracy": acc.mean()}

    return metrics


def make_gradient(
    config: TrainConfig, model: protonet.Conv4, mesh: jax.sharding.Mesh
) -> Callable[[Any, jax.Array, Episode], tuple[Any, dict[str, jax.Array]]]:
    """``gradient(params, key, episodes) -> (grads, metrics)`` of :func:`make_loss`.

    ``method="es"``: :func:`esmeta_core.es.es_grad_masked` sharded over ``mesh``
    (:func:`perturb_mask`), with ``metrics`` the population's loss mean and std and
    its number of non-finite members. ``"backprop"``: ``jax.grad`` (``key`` unused),
    with no metrics. Not jitted: call it inside ``jax.jit``.
    """
    loss = make_loss(config, model)
    if config.method == "backprop":
        return lambda params, key, episodes: (jax.grad(loss)(params, episodes), {})

    def gradient(params, key, episodes):
        grads, stats = es.es_grad_masked(
            loss,
            params,
            key,
            episodes,
            perturb=perturb_mask(config, params),
            config=es_config(config),
            mesh=mesh,
        )
        metrics = {
            "population_loss": stats.loss_mean,
            "population_loss_std": stats.loss_std,
            "num_nonfinite": stats.num_nonfinite,
        }
        return grads, metrics

    return gradient


def trend_cosine(grads: Any, trend: Any) -> jax.Array:
    """Cosine between this step's gradient (or ES estimate) and Adam's running average.

    .. math::

       \\cos(g_t, \\mu_{t-1}) = \\frac{g_t \\cdot \\mu_{t-1}}{\\|g_t\\| \\, \\|\\mu_{t-1}\\|}

    A training signal where the estimate's norm says nothing (an ES estimate's norm is
    set by ``N``, ``D`` and ``sigma``, not by progress). One ES estimate is mostly noise,
    so the cosine is small even while learning (about ``sqrt(N / 2D)`` times the cosine
    of the true gradient to the trend); it stays positive while the estimates agree with
    the direction the optimizer is moving in, and falls to about 0 when the run has
    levelled off. ``0`` on the first step (``mu = 0``).

    Args:
      grads: the step's gradient, a pytree.
      trend: Adam's first moment before this step (:func:`esmeta_core.optim.first_moment`),
        shaped like ``grads``.

    Returns:
      f32[], in [-1, 1].

    Example:
      >>> import jax.numpy as jnp
      >>> float(trend_cosine({"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 1.0])}))
      0.7071...
    """
    dot = optax.tree_utils.tree_vdot(grads, trend)
    norms = optax.tree.norm(grads) * optax.tree.norm(trend)
    return jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)


def make_train_step(
    config: TrainConfig, model: protonet.Conv4, mesh: jax.sharding.Mesh
) -> Callable[[Any, Any, jax.Array, Episode], tuple[Any, Any, dict[str, jax.Array]]]:
    """A jitted ``(params, opt_state, key, episodes) -> (params, opt_state, metrics)``.

    ``episodes`` carry a leading ``[batch]`` axis. The gradient is
    :func:`make_gradient`'s (ES or backprop); :func:`make_optimizer` applies it.
    ``metrics``: the gradient's, then ``loss`` and ``accuracy`` at ``params``
    (:func:`make_loss_and_metrics`), ``trend_cosine`` (:func:`trend_cosine`) and
    ``params_finite``.
    """
    optimizer = make_optimizer(config)
    gradient = make_gradient(config, model, mesh)
    loss_and_metrics = make_loss_and_metrics(config, model)

    @jax.jit
    def train_step(params, opt_state, key, episodes):
        grads, metrics = gradient(params, key, episodes)
        metrics.update(loss_and_metrics(params, episodes))
        metrics.update(trend_cosine=trend_cosine(grads, optim.first_moment(opt_state)))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics.update(params_finite=all_finite(params))
        return params, opt_state, metrics

    return train_step
