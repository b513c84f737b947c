"""Evolution strategies: a gradient estimate from forward passes only.

**Sign convention: the estimator minimises.** :func:`es_grad` estimates the gradient of
the Gaussian-smoothed loss ``E[L(theta + sigma eps)]``, ``eps ~ N(0, I)``, shaped like
``params``, as ``1/(N sigma) sum_i s_i eps_i`` with ``s_i`` member ``i``'s shaped loss
(Salimans et al. 2017, arXiv:1703.03864; the antithetic form is in :func:`es_grad`). Any
optax optimizer descends it unchanged. Three rules make it scale:

- **Noise is regenerated, never stored.** Direction ``j``'s perturbation is drawn from
  ``fold_in(key, j)``, leaf by leaf, wherever it is needed. No ``N x D`` matrix exists;
  memory grows with ``N`` only by ``N`` scalars.
- **Antithetic pairs.** Member ``2j`` is ``theta + sigma eps_j`` and member ``2j + 1`` is
  ``theta - sigma eps_j``.
- **Sharding.** Directions are split over the mesh axis ``"pop"``, which may span every
  device of every process. Each device evaluates its own members in chunks (``lax.map``
  with ``batch_size=chunk_size``), the ``N`` scalar losses are all-gathered and shaped
  over the whole population, and then either

  - ``"psum"``: each device sums ``w_j eps_j`` over its own directions and one
    ``D``-sized all-reduce adds them up, or
  - ``"regenerate"``: each device regenerates all ``N`` perturbations itself and sums
    them (no ``D``-sized traffic; the Salimans et al. scheme).

Each variant is a piece, not a branch: **fitness shaping** is a callable ``f32[N] -> f32[N]``
from the member losses to their weights ``s_i`` (``ESConfig.shaping``; the names of
:data:`SHAPINGS` map to the built-ins of :mod:`esmeta_core.shaping`), the communication
scheme one of :data:`NOISE_SUMS` (:mod:`esmeta_core.noise`), and which leaves are perturbed
a wrapper around the estimator (:func:`es_grad_masked`). **Non-finite losses** (a diverged
member) are replaced by the worst finite loss of the population before shaping: the member
ranks last and the update stays finite (``ESStats.num_nonfinite`` counts them; if every
member is non-finite the gradient is zero).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from esmeta_core.noise import (  # noqa: F401 (es.* names too)
    COMMUNICATIONS,
    NOISE_SUMS,
    direction_noise,
    member_noise,
    weighted_noise_sum,
)
from esmeta_core.shaping import (  # noqa: F401 (es.* names too)
    SHAPING_FUNCTIONS,
    SHAPINGS,
    Shaping,
    centered_ranks,
    direction_weights,
    pair_z_scores,
    raw_losses,
    replace_nonfinite,
    shape_losses,
    shaping_function,
    z_scores,
)
from esmeta_core.sharding import POP_AXIS, P, population_mesh


class ESConfig(NamedTuple):
    """Options of the ES estimator.

    Attributes:
      population: number of members ``N`` (perturbed copies) per estimate.
      sigma: standard deviation of the perturbations.
      antithetic: evaluate ``theta +- sigma eps`` in pairs (``N`` must be even).
      shaping: a callable ``f32[N] -> f32[N]`` from the member losses (member order)
        to their weights, or one of :data:`SHAPINGS`: ``"centered_rank"`` (ranks in
        [-0.5, 0.5]), ``"z_score"``, ``"raw"``, or ``"pair_z_score"`` (antithetic
        differences over their root mean square; see :func:`pair_z_scores`).
      chunk_size: directions evaluated together with ``vmap`` inside ``lax.map``
        (1: one at a time; the population per device: all at once), or ``"auto"``:
        1 on a CPU, and on a GPU/TPU the largest chunk whose compiled temporaries
        fit :data:`AUTO_CHUNK_BUDGET_BYTES` (see :func:`resolve_chunk_size`).
      communication: ``"psum"`` or ``"regenerate"`` (see the module docstring).
    """

    population: int = 256
    sigma: float = 0.01
    antithetic: bool = True
    shaping: str | Shaping = "centered_rank"
    chunk_size: int | str = 1
    communication: str = "psum"


# The memory budget of chunk_size="auto": XLA temporaries per device of one ES step.
AUTO_CHUNK_BUDGET_BYTES = 4 * 2**30


class ESStats(NamedTuple):
    """Per-step statistics of the population's losses (non-finite ones left out)."""

    loss_mean: jax.Array
    loss_std: jax.Array
    loss_min: jax.Array
    loss_max: jax.Array
    num_nonfinite: jax.Array
    grad_norm: jax.Array
    losses: jax.Array  # f32[N], member order (2j: theta + sigma eps_j, 2j + 1: theta - ...)


def num_directions(config: ESConfig) -> int:
    """How many independent noise directions a population of ``config`` uses."""
    return config.population // 2 if config.antithetic else config.population


def validate_config(config: ESConfig, num_devices: int = 1) -> None:
    """Raises ``ValueError`` naming the field and the allowed values."""
    if not isinstance(config.population, int) or config.population < 1:
        raise ValueError(f"population must be a positive integer, got {config.population!r}.")
    if config.antithetic and config.population % 2:
        raise ValueError(
            f"population={config.population} is odd, but antithetic sampling evaluates "
            "members in +/- pairs: use an even population or antithetic=False."
        )
    per_member = 2 if config.antithetic else 1
    if num_directions(config) % num_devices:
        raise ValueError(
            f"population={config.population} does not split evenly over {num_devices} "
            f"devices: use a multiple of {per_member * num_devices}"
            + (" (antithetic pairs stay on one device)." if config.antithetic else ".")
        )
    if not (isinstance(sigma := config.sigma, (int, float)) and math.isfinite(sigma)) or sigma <= 0:
        raise ValueError(f"sigma must be a positive number, got {sigma!r}.")
    if not callable(shaping := config.shaping) and shaping not in SHAPINGS:
        raise ValueError(f"shaping must be one of {SHAPINGS} or a callable, got {shaping!r}.")
    if (communication := config.communication) not in COMMUNICATIONS:
        raise ValueError(f"communication must be one of {COMMUNICATIONS}, got {communication!r}.")
    chunk = config.chunk_size
    if chunk != "auto" and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1):
        raise ValueError(f"chunk_size must be a positive integer or 'auto', got {chunk!r}.")


def _perturb(params: Any, noise: Any, scale: jax.Array) -> Any:
    return jax.tree.map(lambda p, e: p + scale * e, params, noise)


# ----------------------------------------------------------------------------
# The estimator: member losses, weights, the weighted noise sum.


def member_losses(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    directions: jax.Array,
    *args: Any,
    sigma: jax.Array,
    config: ESConfig,
    has_aux: bool = False,
) -> tuple[jax.Array, Any]:
    """The losses of the members of ``directions``, ``config.chunk_size`` directions at a time.

    Args:
      directions: i32[M] direction indices; sigma: f32[], the perturbation scale.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.

    Returns:
      ``(losses, aux)``: f32[M, 2] (``L(theta + sigma eps_j)``, ``L(theta - sigma eps_j)``)
      if ``config.antithetic``, else f32[M, 1]; ``aux`` stacked alike (leaves
      ``[M, 2 or 1, ...]``), or ``None`` without ``has_aux``.
    """

    def losses_of(j):
        noise = direction_noise(key, params, j)
        scales = (sigma, -sigma) if config.antithetic else (sigma,)
        outs = [loss_fn(_perturb(params, noise, s), *args) for s in scales]
        outs = outs if has_aux else [(out, None) for out in outs]
        return jax.tree.map(lambda *x: jnp.stack(x), *outs)  # (f32[2 or 1], aux)

    batch_size = min(config.chunk_size, directions.shape[0])
    return lax.map(losses_of, directions, batch_size=batch_size)


def population_stats(losses: jax.Array, grads: Any) -> ESStats:
    """The :class:`ESStats` of the member losses ``losses`` (f32[N]) and the estimate."""
    finite = jnp.isfinite(losses)
    count = jnp.maximum(finite.sum(), 1)
    mean = jnp.where(finite, losses, 0.0).sum() / count
    var = jnp.where(finite, (losses - mean) ** 2, 0.0).sum() / count
    return ESStats(
        loss_mean=mean,
        loss_std=jnp.sqrt(var),
        loss_min=jnp.min(jnp.where(finite, losses, jnp.inf)),
        loss_max=jnp.max(jnp.where(finite, losses, -jnp.inf)),
        num_nonfinite=losses.size - finite.sum(),
        grad_norm=jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))),
        losses=losses,
    )


def _on_device(loss_fn, config, num_devices, sigma, has_aux, params, key_data, *args):
    """One device's part of :func:`es_grad`, inside ``shard_map`` over ``"pop"``."""
    key = jax.random.wrap_key_data(key_data)
    per_device = num_directions(config) // num_devices
    first = lax.axis_index(POP_AXIS) * per_device
    local_dirs = first + jnp.arange(per_device)  # i32[per_device]
    local, local_aux = member_losses(
        loss_fn, params, key, local_dirs, *args, sigma=sigma, config=config, has_aux=has_aux
    )
    losses = lax.all_gather(local, POP_AXIS, tiled=True)  # f32[directions, 1 or 2], all members
    weights = direction_weights(losses, config.shaping)  # f32[directions]
    noise_sum = NOISE_SUMS[config.communication]
    total = noise_sum(key, params, weights, local_dirs, first, config.chunk_size)
    grads = jax.tree.map(lambda t: t / (config.population * sigma), total)
    stats = population_stats(losses.reshape(-1), grads)
    if not has_aux:
        return grads, stats
    gather = lambda a: lax.all_gather(a, POP_AXIS, tiled=True).reshape(-1, *a.shape[2:])
    return grads, stats, jax.tree.map(gather, local_aux)  # aux leaves [N, ...], member order


def es_grad(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
    config: ESConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    has_aux: bool = False,
) -> tuple[Any, ESStats] | tuple[Any, ESStats, Any]:
    """Estimates the gradient of ``E[loss_fn(params + sigma eps, *args)]`` by ES.

    .. math::

       g = \\frac{1}{N\\sigma} \\sum_{j=1}^{N/2} (s_{2j} - s_{2j+1}) \\, \\epsilon_j
       \\quad\\text{(antithetic)}, \\qquad
       g = \\frac{1}{N\\sigma} \\sum_{i=1}^{N} s_i \\, \\epsilon_i \\quad\\text{(plain)},

    with ``s = shaping(L)`` the shaped member losses (:func:`direction_weights`).

    Args:
      loss_fn: ``loss_fn(params, *args) -> f32[]``, to be minimised; with
        ``has_aux``, ``-> (f32[], aux)`` with ``aux`` any pytree of arrays.
      params: a pytree of float arrays, ``D`` numbers in all.
      key: a PRNG key; the same key gives the same estimate on any mesh.
      *args: passed to ``loss_fn`` unchanged (e.g. an episode), replicated to every device.
      config: an :class:`ESConfig` (default ``ESConfig()``).
      mesh: a mesh with a ``"pop"`` axis (``sharding.population_mesh``); ``None``: one device.
      has_aux: as in ``jax.grad``: ``loss_fn`` also returns metrics.

    Returns:
      ``(grads, stats)``: ``grads`` shaped like ``params``, to be descended by an optax
      optimizer, and an :class:`ESStats`. With ``has_aux``, ``(grads, stats, aux)``, the
      same ``grads``; ``aux`` is every member's aux stacked, leaves ``[N, ...]`` in the
      member order of ``stats.losses`` (the aux at ``params`` would cost one more forward
      pass). It comes last as in ``jax.grad`` and beside ``stats``, the other forward
      output, as ``jax.value_and_grad`` pairs it with the value.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> config = ESConfig(population=4096, sigma=0.1, shaping="raw")
      >>> g, stats = es_grad(loss, jnp.zeros(3), jax.random.key(0), config=config)
      >>> g.round(0)  # the true gradient is -2
      Array([-2., -2., -2.], dtype=float32)
      >>> with_aux = lambda p: (loss(p), {"norm": jnp.linalg.norm(p)})
      >>> g2, _, aux = es_grad(with_aux, jnp.zeros(3), jax.random.key(0), config=config,
      ...                      has_aux=True)
      >>> aux["norm"].shape, bool((g2 == g).all())
      ((4096,), True)
    """
    config = ESConfig() if config is None else config
    mesh = population_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    num_devices = mesh.shape[POP_AXIS]
    validate_config(config, num_devices)
    if config.chunk_size == "auto":
        loss_only = (lambda *a: loss_fn(*a)[0]) if has_aux else loss_fn
        config = resolve_chunk_size(loss_only, params, key, *args, config=config, mesh=mesh)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    sigma = jnp.float32(config.sigma)
    on_device = functools.partial(_on_device, loss_fn, config, num_devices, sigma, has_aux)
    sharded = jax.shard_map(
        on_device,
        mesh=mesh,
        in_specs=(P(), P(), *(P() for _ in args)),
        out_specs=P(),
        check_vma=False,
    )
    return sharded(params, key, *args)


def resolve_chunk_size(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
    config: ESConfig,
    mesh: jax.sharding.Mesh | None = None,
    budget_bytes: int = AUTO_CHUNK_BUDGET_BYTES,
    backend: str | None = None,
) -> ESConfig:
    """``config`` with ``chunk_size="auto"`` replaced by a number (others unchanged).

    On a CPU the answer is 1: ``vmap`` over members turns each convolution into a
    grouped one, which is slower there (chapter 7). On a GPU or TPU one member at a
    time leaves the accelerator idle, so the largest power-of-two chunk (up to the
    members per device) whose compiled program keeps its temporaries within
    ``budget_bytes`` is chosen, read from XLA's memory analysis of the real step.
    The gradient does not depend on the chunk size (a test checks it).

    Args:
      loss_fn, params, key, args: as for :func:`es_grad` (only shapes are used, so
        tracers inside an outer ``jit`` are fine).
      budget_bytes: XLA temporaries allowed per device.
      backend: ``"cpu"``, ``"gpu"`` or ``"tpu"``; default: JAX's default backend.

    Example:
      >>> import jax.numpy as jnp
      >>> config = ESConfig(population=8, chunk_size="auto")
      >>> loss = lambda p: jnp.sum(p**2)
      >>> resolve_chunk_size(loss, jnp.zeros(3), jax.random.key(0), config=config,
      ...                    backend="cpu").chunk_size
      1
    """
    if config.chunk_size != "auto":
        return config
    if (backend or jax.default_backend()) == "cpu":
        return config._replace(chunk_size=1)
    mesh = population_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    per_device = num_directions(config) // mesh.shape[POP_AXIS]
    candidates = sorted({per_device} | {2**k for k in range(per_device.bit_length())}, reverse=True)
    shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), (params, key, args)
    )
    for chunk in candidates:
        if chunk > per_device:
            continue
        trial = config._replace(chunk_size=chunk)
        step = jax.jit(
            lambda p, k, a, trial=trial: es_grad(loss_fn, p, k, *a, config=trial, mesh=mesh)
        )
        memory = step.lower(*shapes).compile().memory_analysis()
        if memory is None or memory.temp_size_in_bytes <= budget_bytes:
            return trial
    return config._replace(chunk_size=1)


def es_vs_backprop_memory(
    es_loss: Callable[..., jax.Array],
    backprop_loss: Callable[..., jax.Array],
    params: Any,
    *args: Any,
    config: ESConfig,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, int]:
    """Compiled bytes of one ES estimate of ``es_loss`` and of ``jax.grad(backprop_loss)``.

    Chapter 7's and ``benchmarks/memory_vs_backprop.py``'s measurement: both programs are
    compiled (not run) for the same ``params`` and ``args`` (may be ``jax.ShapeDtypeStruct``)
    and :func:`esmeta_core.profiling.compiled_memory` reads their temporaries, arguments and
    outputs. Pass the query-chunked loss as ``es_loss`` to see ES's flat memory. Returns
    ``{"es_bytes": int, "backprop_bytes": int}``.
    """
    from esmeta_core.profiling import compiled_memory

    key = jax.random.key(0)
    es_bytes = compiled_memory(
        lambda p, k, *a: es_grad(es_loss, p, k, *a, config=config, mesh=mesh), params, key, *args
    )["total_bytes"]
    backprop_bytes = compiled_memory(jax.grad(backprop_loss), params, *args)["total_bytes"]
    return {"es_bytes": es_bytes, "backprop_bytes": backprop_bytes}


def make_es_grad(
    loss_fn: Callable[..., jax.Array],
    *,
    config: ESConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    has_aux: bool = False,
) -> Callable[..., tuple[Any, ...]]:
    """Jitted :func:`es_grad`: ``(params, key, *args) -> (grads, stats[, aux])``; checks config."""
    config = ESConfig() if config is None else config
    mesh = population_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    validate_config(config, mesh.shape[POP_AXIS])

    @jax.jit
    def grad_fn(params, key, *args):
        return es_grad(loss_fn, params, key, *args, config=config, mesh=mesh, has_aux=has_aux)

    return grad_fn


# ----------------------------------------------------------------------------
# A composable piece around the estimator: which leaves to perturb.


def restrict(
    loss_fn: Callable[..., jax.Array], params: Any, perturb: Any
) -> tuple[list[Any], Callable[..., jax.Array], Callable[[list[Any]], Any]]:
    """The loss as a function of the leaves in ``perturb`` only, the others held fixed.

    Args:
      loss_fn: ``loss_fn(params, *args) -> f32[]``.
      params: a pytree of arrays.
      perturb: a pytree of bools with ``params``' structure (``None``: every leaf).

    Returns:
      ``(free, free_loss, expand)``: the list of free leaves (in ``params``' leaf
      order), ``free_loss(free, *args) -> f32[]``, and ``expand(g_free)``, a pytree
      shaped like ``params`` with ``g_free`` at the free leaves and zeros elsewhere.
    """
    leaves, treedef = jax.tree.flatten(params)
    keep = [True] * len(leaves) if perturb is None else treedef.flatten_up_to(perturb)
    free = [x for x, k in zip(leaves, keep, strict=True) if k]

    def free_loss(free_leaves, *args):
        it = iter(free_leaves)
        full = [next(it) if k else x for x, k in zip(leaves, keep, strict=True)]
        return loss_fn(jax.tree.unflatten(treedef, full), *args)

    def expand(g_free):
        it = iter(g_free)
        grads = [next(it) if k else jnp.zeros_like(x) for x, k in zip(leaves, keep, strict=True)]
        return jax.tree.unflatten(treedef, grads)

    return free, free_loss, expand


def es_grad_masked(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
    perturb: Any = None,
    config: ESConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    has_aux: bool = False,
) -> tuple[Any, ESStats] | tuple[Any, ESStats, Any]:
    """:func:`es_grad` over the leaves where ``perturb`` is True; the others get a zero gradient.

    For parameters that cannot change the loss (a conv bias right before a batch norm)
    noise is spent for nothing, so they are held fixed (:func:`restrict`) and ES runs on
    the rest: ``D`` counts the perturbed parameters only. The noise is drawn for the list
    of perturbed leaves, so ``perturb=None`` (every leaf) gives :func:`es_grad`'s estimate
    exactly. Returns ``(grads, stats)`` or ``(grads, stats, aux)`` as :func:`es_grad`.

    Args:
      loss_fn, params, key, *args, config, mesh, has_aux: as in :func:`es_grad`.
      perturb: a pytree of bools with ``params``' structure (``None``: all leaves).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p["a"] - 1.0) ** 2) + 0 * jnp.sum(p["b"])
      >>> config = ESConfig(population=4096, sigma=0.1, shaping="raw")
      >>> g, _ = es_grad_masked(
      ...     loss, {"a": jnp.zeros(2), "b": jnp.ones(2)}, jax.random.key(0),
      ...     config=config, perturb={"a": True, "b": False})
      >>> g["a"].round(0), g["b"]
      (Array([-2., -2.], dtype=float32), Array([0., 0.], dtype=float32))
    """
    free, free_loss, expand = restrict(loss_fn, params, perturb)
    g_free, *rest = es_grad(free_loss, free, key, *args, config=config, mesh=mesh, has_aux=has_aux)
    return expand(g_free), *rest
