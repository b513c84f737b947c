"""One training step of a ProtoNet, by backprop or by sharded ES, and what it needs.

:func:`make_train_step` builds the jitted ``(params, opt_state, key, episodes) ->
(params, opt_state, metrics)`` that :mod:`esmeta_core.train`'s loop calls;
:func:`init_state` is a run's first state and :func:`step_key` the ES noise key of a
step (``fold_in(key(seed + 1), step)``), so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from esmeta_core import es, optim, protonet, subspace
from esmeta_core.checkpoint import TrainState
from esmeta_core.configs import TrainConfig, es_config
from esmeta_core.data import Episode


def all_finite(tree: Any) -> jax.Array:
    """``True`` iff every element of every leaf of ``tree`` is finite."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


make_optimizer = optim.make_optimizer  # its home is esmeta_core/optim.py


def model_for(config: TrainConfig) -> protonet.Conv4:
    """The Conv4 embedding a config trains: ``width`` channels, ``separable`` or not."""
    return protonet.Conv4(config.width, separable=config.separable, first_width=config.first_width)


def init_state(config: TrainConfig, model: protonet.Conv4) -> TrainState:
    params = protonet.init_params(jax.random.key(config.seed), model)
    return TrainState(0, params, make_optimizer(config).init(params))


def step_key(seed: int, step: int) -> jax.Array:
    """The ES noise key of step ``step``: ``fold_in(key(seed + 1), step)``."""
    return jax.random.fold_in(jax.random.key(seed + 1), step)


def make_train_step(
    config: TrainConfig, model: protonet.Conv4, mesh: jax.sharding.Mesh
) -> Callable[[Any, Any, jax.Array, Episode], tuple[Any, Any, dict[str, jax.Array]]]:
    """A jitted ``(params, opt_state, key, episodes) -> (params, opt_state, metrics)``.

    ``episodes`` carry a leading ``[batch]`` axis. With ``method="es"`` the
    gradient is :func:`esmeta_core.es.es_grad` sharded over ``mesh``; with
    ``"backprop"`` it is ``jax.grad``. Either way Adam applies it. With
    ``config.guide_fraction > 0`` the ES noise is guided by Adam's first moment
    (:func:`esmeta_core.optim.first_moment`; Guided ES, arXiv:1806.10230), so a
    resumed run needs no state beyond the optimizer's. With ``config.subspace_dim > 0``
    the ES noise lies in a fixed random subspace (:mod:`esmeta_core.subspace`) and a
    backprop gradient is projected onto one.
    """
    optimizer = make_optimizer(config)
    train_way = config.train_way or config.way if config.method == "backprop" else config.way

    def loss_fn(params, episodes):
        losses = jax.vmap(
            lambda e: protonet.episode_loss(
                model, params, e, way=train_way, query_chunk=config.query_chunk
            )
        )(episodes)
        return losses.mean()

    def center_metrics(params, episodes):
        loss, acc = jax.vmap(
            lambda e: protonet.episode_loss_and_accuracy(model, params, e, way=train_way)
        )(episodes)
        return loss.mean(), acc.mean()

    @jax.jit
    def train_step(params, opt_state, key, episodes):
        metrics = {}
        if config.method == "es":
            guided = config.guide_fraction > 0
            grads, stats = es.es_grad_with_options(
                loss_fn,
                params,
                key,
                episodes,
                config=es_config(config),
                mesh=mesh,
                guide=optim.first_moment(opt_state) if guided else None,
                guide_fraction=config.guide_fraction,
                subspace_dim=config.subspace_dim,
                subspace_key=subspace.basis_key(config.seed) if config.subspace_dim else None,
                **es_options(config, params),
            )
            metrics.update(
                population_loss=stats.loss_mean,
                population_loss_std=stats.loss_std,
                num_nonfinite=stats.num_nonfinite,
            )
        else:
            grads = jax.grad(loss_fn)(params, episodes)
            if config.subspace_dim:  # the subspace's ceiling: P P^T g
                grads = subspace.project_gradient(
                    grads, subspace.basis_key(config.seed), config.subspace_dim
                )
        loss, acc = center_metrics(params, episodes)
        metrics.update(loss=loss, accuracy=acc, grad_norm=optax.tree.norm(grads))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics.update(params_finite=all_finite(params))
        return params, opt_state, metrics

    return train_step


def es_options(config: TrainConfig, params: Any) -> dict[str, Any]:
    """``perturb`` and ``sigma_scales`` of :func:`esmeta_core.es.es_grad_with_options`."""
    kernels = optim.conv_kernel_mask(params)
    perturb = None
    if not config.perturb_conv_bias:
        perturb = jax.tree.map(lambda b: not b, optim.conv_bias_mask(params))
    scales = None
    if config.relative_sigma:
        scales = jax.tree.map(lambda x, k: es.channel_norms(x) if k else 1.0, params, kernels)
    return {"perturb": perturb, "sigma_scales": scales}
