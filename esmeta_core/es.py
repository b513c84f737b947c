"""Evolution strategies: a gradient estimate from forward passes only.

**Sign convention: the estimator minimises.** ``loss_fn(params, *args)``
returns a scalar loss, and :func:`es_grad` returns an estimate of the
gradient of the Gaussian-smoothed loss, shaped like ``params``:

.. math::

   \\nabla_\\theta \\, \\mathbb{E}_{\\epsilon \\sim \\mathcal{N}(0, I)}
   [L(\\theta + \\sigma\\epsilon)]
   \\approx \\frac{1}{N\\sigma} \\sum_{i=1}^{N} s_i \\, \\epsilon_i ,

where :math:`s_i` is member :math:`i`'s shaped loss (Salimans et al. 2017,
arXiv:1703.03864). Any optax optimizer descends it unchanged.

Three rules make it scale:

- **Noise is regenerated, never stored.** Direction ``j``'s perturbation is
  drawn from ``fold_in(key, j)``, leaf by leaf, wherever it is needed. No
  ``N x D`` matrix exists; memory grows with ``N`` only by ``N`` scalars.
- **Antithetic pairs.** Member ``2j`` is ``theta + sigma eps_j`` and member
  ``2j + 1`` is ``theta - sigma eps_j``.
- **Sharding.** Directions are split over the mesh axis ``"pop"``, which may
  span every device of every process. Each device evaluates its own members in
  chunks (``lax.map`` with ``batch_size=chunk_size``), the ``N`` scalar losses
  are all-gathered and shaped over the whole population, and then either

  - ``"psum"``: each device sums ``w_j eps_j`` over its own directions and one
    ``D``-sized all-reduce adds them up, or
  - ``"regenerate"``: each device regenerates all ``N`` perturbations itself
    and sums them (no ``D``-sized traffic; the Salimans et al. scheme).

**Guided ES** (optional): a share ``a`` of the perturbation variance goes along one
unit direction ``u`` (a surrogate gradient, e.g. the optimizer's running average of
past estimates): ``eps_j = sqrt(1 - a) z_j + sqrt(a D) w_j u`` with ``z_j`` and the
scalar ``w_j`` regenerated from the direction's key (:func:`guided_direction_noise`;
Maheswaranathan et al. 2019, arXiv:1806.10230). Only ``u`` (one ``params``-shaped
pytree) is extra; the ``u`` part of the sum is ``N`` scalars and adds no traffic.

**Non-finite losses** (a diverged member) are replaced by the worst finite
loss of the population before shaping: the member ranks last and the update
stays finite. ``ESStats.num_nonfinite`` counts them. If every member is
non-finite the gradient is zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from esmeta_core import subspace
from esmeta_core.sharding import POP_AXIS, P, population_mesh

SHAPINGS = ("centered_rank", "z_score", "raw", "pair_z_score")
COMMUNICATIONS = ("psum", "regenerate")


class ESConfig(NamedTuple):
    """Options of the ES estimator.

    Attributes:
      population: number of members ``N`` (perturbed copies) per estimate.
      sigma: standard deviation of the perturbations.
      antithetic: evaluate ``theta +- sigma eps`` in pairs (``N`` must be even).
      shaping: ``"centered_rank"`` (ranks in [-0.5, 0.5]), ``"z_score"``, ``"raw"``, or
        ``"pair_z_score"`` (antithetic differences over their root mean square; see
        :func:`pair_weights`).
      chunk_size: directions evaluated together with ``vmap`` inside ``lax.map``
        (1: one at a time; the population per device: all at once), or ``"auto"``:
        1 on a CPU, and on a GPU/TPU the largest chunk whose compiled temporaries
        fit :data:`AUTO_CHUNK_BUDGET_BYTES` (see :func:`resolve_chunk_size`).
      communication: ``"psum"`` or ``"regenerate"`` (see the module docstring).
    """

    population: int = 256
    sigma: float = 0.01
    antithetic: bool = True
    shaping: str = "centered_rank"
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
    if not (isinstance(config.sigma, (int, float)) and math.isfinite(config.sigma)) or (
        config.sigma <= 0
    ):
        raise ValueError(f"sigma must be a positive number, got {config.sigma!r}.")
    if config.shaping not in SHAPINGS:
        raise ValueError(f"shaping must be one of {SHAPINGS}, got {config.shaping!r}.")
    if config.communication not in COMMUNICATIONS:
        raise ValueError(
            f"communication must be one of {COMMUNICATIONS}, got {config.communication!r}."
        )
    if config.chunk_size != "auto" and (
        not isinstance(config.chunk_size, int)
        or isinstance(config.chunk_size, bool)
        or config.chunk_size < 1
    ):
        raise ValueError(
            f"chunk_size must be a positive integer or 'auto', got {config.chunk_size!r}."
        )


# ----------------------------------------------------------------------------
# The maths: noise, shaping, weighted sum.


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


# The stream of Guided ES's scalars w_j: fold_in(fold_in(key, j), GUIDE_STREAM).
GUIDE_STREAM = 0x67756964


def guide_scalar(key: jax.Array, direction: jax.Array) -> jax.Array:
    """Direction ``j``'s coefficient ``w_j ~ N(0, 1)`` along the guide: f32[].

    Regenerated from ``fold_in(fold_in(key, j), GUIDE_STREAM)``, so like the rest
    of the noise it is the same on any device, in any order.
    """
    return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, direction), GUIDE_STREAM))


def unit_guide(guide: Any) -> tuple[Any, jax.Array]:
    """``(u, usable)``: ``guide / ||guide||`` over the whole pytree, and ``||guide|| > 0``.

    A zero or non-finite guide gives ``u = 0`` and ``usable = False`` (the
    estimator then falls back to plain ES).

    Args:
      guide: a pytree of float arrays (``D`` numbers in all).

    Returns:
      ``u`` shaped like ``guide`` and a bool[] scalar.
    """
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(guide)))
    usable = jnp.isfinite(norm) & (norm > 0)
    safe = jnp.where(usable, norm, 1.0)
    unit = jax.tree.map(lambda g: jnp.where(usable, g / safe.astype(g.dtype), 0.0), guide)
    return unit, usable


def guided_direction_noise(
    key: jax.Array, params: Any, direction: jax.Array, unit: Any, guide_fraction: Any
) -> Any:
    """Direction ``j``'s Guided ES perturbation, shaped like ``params``.

    .. math::

       \\epsilon_j = \\sqrt{1 - a} \\, z_j + \\sqrt{a D} \\, w_j \\, u ,
       \\qquad
       \\mathbb{E}[\\epsilon_j \\epsilon_j^\\top] = (1 - a) I + a D \\, u u^\\top ,

    with ``z_j`` from :func:`direction_noise`, ``w_j`` from :func:`guide_scalar` and
    ``D`` the number of parameters: the covariance has trace ``D`` like plain ES,
    and a share ``a`` of it lies along ``u`` (Guided ES's
    ``Sigma = alpha/n I + (1 - alpha)/k U U^T`` with ``k = 1``, ``a = 1 - alpha``,
    scaled by ``D``). With rank shaping a large ``a D`` makes the members' ranks
    mostly measure the loss along ``u``, so little is learnt about other directions.

    Args:
      key, params, direction: as in :func:`direction_noise`.
      unit: a unit-norm pytree shaped like ``params`` (:func:`unit_guide`), or zeros.
      guide_fraction: ``a`` in [0, 1), a float or an f32[] scalar.

    Returns:
      ``eps_j`` shaped like ``params``.

    Reference: Maheswaranathan et al., "Guided evolutionary strategies: Augmenting
    random search with surrogate gradients", arXiv:1806.10230.
    """
    size = sum(jnp.size(x) for x in jax.tree.leaves(params))
    a = jnp.asarray(guide_fraction, jnp.float32)
    along = jnp.sqrt(a * size) * guide_scalar(key, direction)
    return jax.tree.map(
        lambda z, u: jnp.sqrt(1.0 - a).astype(z.dtype) * z + along.astype(z.dtype) * u,
        direction_noise(key, params, direction),
        unit,
    )


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


def replace_nonfinite(losses: jax.Array) -> jax.Array:
    """Replaces NaN/inf losses by the worst (largest) finite loss, or 0 if none is finite."""
    finite = jnp.isfinite(losses)
    worst = jnp.max(jnp.where(finite, losses, -jnp.inf))
    worst = jnp.where(jnp.any(finite), worst, 0.0)
    return jnp.where(finite, losses, worst)


def shape_losses(losses: jax.Array, shaping: str) -> jax.Array:
    """Fitness shaping over the whole population: f32[N] -> f32[N]."""
    losses = replace_nonfinite(losses)
    if shaping == "centered_rank":
        return centered_ranks(losses)
    if shaping == "z_score":
        return (losses - losses.mean()) / (losses.std() + 1e-8)
    if shaping in ("raw", "pair_z_score"):
        return losses
    raise ValueError(f"shaping must be one of {SHAPINGS}, got {shaping!r}.")


def pair_weights(losses: jax.Array, shaping: str) -> jax.Array:
    """Each direction's weight ``w_j`` in ``g = 1/(N sigma) sum_j w_j eps_j``.

    Antithetic (``losses``: f32[M, 2], columns ``L(theta + sigma eps_j)`` and
    ``L(theta - sigma eps_j)``): ``w_j = s_j^+ - s_j^-`` with the shaped losses
    ``s`` of :func:`shape_losses`. ``"pair_z_score"`` instead divides the raw
    differences ``d_j = L_j^+ - L_j^-`` by their root mean square,
    ``w_j = d_j / sqrt(mean_k d_k^2)``: it keeps each pair's finite-difference
    magnitude (which ranks throw away) and makes the step independent of the loss
    scale. Without a mean subtraction: the mean of ``d_j`` is itself signal.
    (Antithetic z-scoring of differences: Mania et al. 2018, arXiv:1803.07055,
    divide by the std of the evaluated rewards.)

    Plain sampling (f32[M, 1]): ``w_j = s_j``; ``"pair_z_score"`` is the z-score.
    """
    if shaping == "pair_z_score":
        losses = replace_nonfinite(losses.reshape(-1)).reshape(losses.shape)
        if losses.shape[1] == 1:
            return shape_losses(losses[:, 0], "z_score")
        diffs = losses[:, 0] - losses[:, 1]  # f32[M]
        return diffs / (jnp.sqrt(jnp.mean(diffs**2)) + 1e-12)
    shaped = shape_losses(losses.reshape(-1), shaping).reshape(losses.shape)
    return shaped[:, 0] - shaped[:, 1] if losses.shape[1] == 2 else shaped[:, 0]


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


def _perturb(params: Any, noise: Any, scale: jax.Array) -> Any:
    return jax.tree.map(lambda p, e: p + scale * e, params, noise)


# ----------------------------------------------------------------------------
# The estimator.


def es_grad(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
    config: ESConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    guide: Any = None,
    guide_fraction: float = 0.0,
) -> tuple[Any, ESStats]:
    """Estimates the gradient of ``E[loss_fn(params + sigma eps, *args)]`` by ES.

    .. math::

       g = \\frac{1}{N\\sigma} \\sum_{j=1}^{N/2} (s_j^{+} - s_j^{-}) \\, \\epsilon_j
       \\quad\\text{(antithetic)}, \\qquad
       g = \\frac{1}{N\\sigma} \\sum_{i=1}^{N} s_i \\, \\epsilon_i \\quad\\text{(plain)}.

    Args:
      loss_fn: ``loss_fn(params, *args) -> f32[]``, to be minimised.
      params: a pytree of float arrays, ``D`` numbers in all.
      key: a PRNG key; the same key gives the same estimate on any mesh.
      *args: passed to ``loss_fn`` unchanged (e.g. an episode), replicated to
        every device.
      config: an :class:`ESConfig` (default ``ESConfig()``).
      mesh: a mesh with a ``"pop"`` axis (see ``sharding.population_mesh``);
        ``None`` uses the first local device only.
      guide: Guided ES's surrogate direction, a pytree shaped like ``params``
        (only its direction matters; treated as a constant), or ``None``.
      guide_fraction: ``a`` in [0, 1), the share of the perturbation variance
        along the guide (:func:`guided_direction_noise`). With ``a = 0``, no
        guide, or a zero (or non-finite) guide, this is plain ES exactly.

    Returns:
      ``(grads, stats)``: ``grads`` shaped like ``params``, to be descended by
      an optax optimizer, and an :class:`ESStats`. With a guide, ``grads`` is
      ``1/(N sigma) sum_i s_i eps_i`` over the guided ``eps_i``: an estimate of
      ``Sigma`` times the smoothed gradient, ``Sigma = (1 - a) I + a D u u^T``
      (a descent direction; arXiv:1806.10230).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p - 1.0) ** 2)
      >>> config = ESConfig(population=4096, sigma=0.1, shaping="raw")
      >>> g, stats = es_grad(loss, jnp.zeros(3), jax.random.key(0), config=config)
      >>> g.round(0)  # the true gradient is -2
      Array([-2., -2., -2.], dtype=float32)

    Reference: Salimans et al., "Evolution Strategies as a Scalable
    Alternative to Reinforcement Learning", arXiv:1703.03864.
    """
    config = ESConfig() if config is None else config
    mesh = population_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    num_devices = mesh.shape[POP_AXIS]
    validate_config(config, num_devices)
    if not (isinstance(guide_fraction, (int, float)) and 0.0 <= guide_fraction < 1.0):
        raise ValueError(f"guide_fraction must be a number in [0, 1), got {guide_fraction!r}.")
    guided = guide is not None and guide_fraction > 0
    if guided:
        guide = jax.tree.map(
            lambda p, g: lax.stop_gradient(jnp.asarray(g, jnp.result_type(p))), params, guide
        )
    else:
        guide = jax.tree.map(lambda _: jnp.zeros(()), params)  # unused placeholder
    if config.chunk_size == "auto":
        config = resolve_chunk_size(loss_fn, params, key, *args, config=config, mesh=mesh)
    directions_total = num_directions(config)
    per_device = directions_total // num_devices
    sigma = jnp.float32(config.sigma)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)

    def member_losses(params, key, j, guiding, *args):
        if guided:
            unit, fraction = guiding
            noise = guided_direction_noise(key, params, j, unit, fraction)
        else:
            noise = direction_noise(key, params, j)
        plus = loss_fn(_perturb(params, noise, sigma), *args)
        if not config.antithetic:
            return plus[None]
        minus = loss_fn(_perturb(params, noise, -sigma), *args)
        return jnp.stack([plus, minus])  # f32[2]

    def on_device(params, key_data, guide, *args):
        key = jax.random.wrap_key_data(key_data)
        guiding = None
        if guided:
            unit, usable = unit_guide(guide)
            guiding = (unit, jnp.where(usable, jnp.float32(guide_fraction), 0.0))
        first = lax.axis_index(POP_AXIS) * per_device
        local_dirs = first + jnp.arange(per_device)  # i32[per_device]
        local = lax.map(
            lambda j: member_losses(params, key, j, guiding, *args),
            local_dirs,
            batch_size=min(config.chunk_size, per_device),
        )  # f32[per_device, 1 or 2]
        losses = lax.all_gather(local, POP_AXIS, tiled=True)  # f32[directions, 1 or 2]
        weights = pair_weights(losses, config.shaping)  # f32[directions]
        if config.communication == "psum":
            local_w = lax.dynamic_slice_in_dim(weights, first, per_device)
            partial = weighted_noise_sum(key, params, local_dirs, local_w, config.chunk_size)
            total = lax.psum(partial, POP_AXIS)
        else:
            all_dirs = jnp.arange(directions_total)
            total = weighted_noise_sum(key, params, all_dirs, weights, config.chunk_size)
        if guided:  # sum_j w_j eps_j = sqrt(1 - a) sum_j w_j z_j + sqrt(a D) (sum_j w_j s_j) u
            unit, fraction = guiding
            size = sum(jnp.size(x) for x in jax.tree.leaves(params))
            scalars = jax.vmap(lambda j: guide_scalar(key, j))(jnp.arange(directions_total))
            along = jnp.sqrt(fraction * size) * jnp.dot(weights, scalars)
            total = jax.tree.map(
                lambda t, u: (
                    jnp.sqrt(1.0 - fraction).astype(t.dtype) * t + along.astype(t.dtype) * u
                ),
                total,
                unit,
            )
        grads = jax.tree.map(lambda t: t / (config.population * sigma), total)
        flat = losses.reshape(-1)
        finite = jnp.isfinite(flat)
        count = jnp.maximum(finite.sum(), 1)
        mean = jnp.where(finite, flat, 0.0).sum() / count
        var = jnp.where(finite, (flat - mean) ** 2, 0.0).sum() / count
        stats = ESStats(
            loss_mean=mean,
            loss_std=jnp.sqrt(var),
            loss_min=jnp.min(jnp.where(finite, flat, jnp.inf)),
            loss_max=jnp.max(jnp.where(finite, flat, -jnp.inf)),
            num_nonfinite=flat.size - finite.sum(),
            grad_norm=jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))),
            losses=flat,
        )
        return grads, stats

    sharded = jax.shard_map(
        on_device,
        mesh=mesh,
        in_specs=(P(), P(), P(), *(P() for _ in args)),
        out_specs=P(),
        check_vma=False,
    )
    return sharded(params, key, guide, *args)


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

    The measurement behind chapter 7 and ``benchmarks/memory_vs_backprop.py``: both
    programs are compiled (not run) for the same ``params`` and ``args`` (which may
    be ``jax.ShapeDtypeStruct``), and XLA's memory analysis gives their temporaries,
    arguments and outputs (:func:`esmeta_core.profiling.compiled_memory`). Pass the
    query-chunked loss as ``es_loss`` to see ES's flat memory.

    Returns:
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
) -> Callable[..., tuple[Any, ESStats]]:
    """A jitted ``(params, key, *args) -> (grads, stats)``; checks ``config`` at once."""
    config = ESConfig() if config is None else config
    mesh = population_mesh(jax.local_devices()[:1]) if mesh is None else mesh
    validate_config(config, mesh.shape[POP_AXIS])

    @jax.jit
    def grad_fn(params, key, *args):
        return es_grad(loss_fn, params, key, *args, config=config, mesh=mesh)

    return grad_fn


# ----------------------------------------------------------------------------
# Options that wrap the estimator: which leaves to perturb, and by how much.


def channel_norms(x: jax.Array) -> jax.Array:
    """Norm of each output channel of a kernel: f32[..., c] -> f32[1, ..., 1, c].

    Under a batch norm each output channel of the kernel before it can be
    rescaled without changing the loss, so its norm only sets the scale of a
    perturbation relative to the weights.
    """
    axes = tuple(range(x.ndim - 1))
    return jnp.sqrt(jnp.sum(x**2, axis=axes, keepdims=True))


def es_grad_with_options(
    loss_fn: Callable[..., jax.Array],
    params: Any,
    key: jax.Array,
    *args: Any,
    config: ESConfig | None = None,
    mesh: jax.sharding.Mesh | None = None,
    perturb: Any = None,
    sigma_scales: Any = None,
    guide: Any = None,
    guide_fraction: float = 0.0,
    subspace_dim: int = 0,
    subspace_key: jax.Array | None = None,
) -> tuple[Any, ESStats]:
    """:func:`es_grad` with fixed leaves and a sigma per leaf, by a change of variables.

    Leaf ``l`` is perturbed by ``sigma * r_l * eps_l`` (``r_l`` from
    ``sigma_scales``, broadcast against the leaf): write ``theta_l = r_l u_l``,
    run plain ES on ``u`` and map the estimate back by the chain rule,

    .. math::

       g_{\\theta_l} = \\frac{1}{r_l} \\, g_{u_l}
       = \\frac{1}{N \\sigma r_l} \\sum_i s_i \\, \\epsilon_{i,l} .

    With ``r_l = ||theta_l||`` per output channel (:func:`channel_norms`) the
    perturbation is a fixed *fraction* of each batch-normed kernel channel, so
    it does not shrink in effect as the (scale-invariant) kernels grow
    (van Laarhoven 2017, arXiv:1706.05350, on the effective learning rate of
    scale-invariant weights). Leaves with ``perturb`` False are not perturbed
    and get a zero gradient: for parameters that cannot change the loss (a conv
    bias before a batch norm), noise there is spent for nothing.

    Args:
      loss_fn, params, key, *args, config, mesh: as in :func:`es_grad`.
      perturb: a pytree of bools shaped like ``params``' leaves (``None``: all).
      sigma_scales: a pytree of positive arrays broadcastable to ``params``'
        leaves (``None``: all ones). Treated as constants.
      guide, guide_fraction: Guided ES as in :func:`es_grad`; ``guide`` is a
        gradient-like pytree shaped like ``params`` (e.g. Adam's first moment). It
        is mapped to the free variables by the same chain rule,
        ``guide_u_l = r_l guide_l``, and its fixed leaves are dropped, so ``D`` counts
        the perturbed parameters only.
      subspace_dim, subspace_key: ES in a random ``d``-dimensional subspace of the
        perturbed parameters (0: off; :mod:`esmeta_core.subspace`, Li et al. 2018,
        arXiv:1804.08838): one more change of variables, ``u -> u + P z``, ES on ``z``
        (f32[d]) and ``g_u = P g_z``. ``subspace_key`` fixes ``P``.

    Returns:
      ``(grads, stats)`` as :func:`es_grad`. With all scales 1 and every leaf
      perturbed it is :func:`es_grad` exactly.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> loss = lambda p: jnp.sum((p["a"] - 1.0) ** 2) + 0 * jnp.sum(p["b"])
      >>> config = ESConfig(population=4096, sigma=0.1, shaping="raw")
      >>> g, _ = es_grad_with_options(
      ...     loss, {"a": jnp.zeros(2), "b": jnp.ones(2)}, jax.random.key(0),
      ...     config=config, perturb={"a": True, "b": False})
      >>> g["a"].round(0), g["b"]
      (Array([-2., -2.], dtype=float32), Array([0., 0.], dtype=float32))
    """
    leaves, treedef = jax.tree.flatten(params)
    keep = [True] * len(leaves) if perturb is None else treedef.flatten_up_to(perturb)
    scales = [None] * len(leaves) if sigma_scales is None else treedef.flatten_up_to(sigma_scales)
    scales = [None if r is None else lax.stop_gradient(jnp.asarray(r)) for r in scales]

    def to_u(x, r):
        return x if r is None else x / r

    def from_u(u, r):
        return u if r is None else u * r

    free = [to_u(x, r) for x, r, k in zip(leaves, scales, keep, strict=True) if k]

    def free_loss(free_u, *args):
        it = iter(free_u)
        full = [
            from_u(next(it), r) if k else x for x, r, k in zip(leaves, scales, keep, strict=True)
        ]
        return loss_fn(jax.tree.unflatten(treedef, full), *args)

    guide_free = None
    if guide is not None:
        guide_free = [
            from_u(g, r)
            for g, r, k in zip(treedef.flatten_up_to(guide), scales, keep, strict=True)
            if k
        ]
    to_free = None
    if subspace_dim:
        if subspace_key is None:
            raise ValueError("subspace_dim > 0 needs a subspace_key (the basis's key).")
        free_loss, free, to_free, to_z = subspace.in_subspace(
            free_loss, free, subspace_key, subspace_dim
        )
        guide_free = None if guide_free is None else to_z(guide_free)
    g_free, stats = es_grad(
        free_loss,
        free,
        key,
        *args,
        config=config,
        mesh=mesh,
        guide=guide_free,
        guide_fraction=guide_fraction,
    )
    if to_free is not None:
        g_free = to_free(g_free)
    it = iter(g_free)
    grads = [
        to_u(next(it), r) if k else jnp.zeros_like(x)
        for x, r, k in zip(leaves, scales, keep, strict=True)
    ]
    return jax.tree.unflatten(treedef, grads), stats
