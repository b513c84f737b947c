"""Meshes over every device of every process, and multi-host start-up.

One mesh axis, ``"pop"``, spans all devices of all processes: the ES
population is split along it. The same code runs on one CPU, on the 8 devices
of a Kaggle TPU (v3-8, v5e-8) or the single chip of a Colab TPU, on simulated CPU devices
(``jax.config.update("jax_num_cpu_devices", 8)``) and, after
:func:`initialize_distributed`, on a TPU pod, a GPU cluster or several local
CPU processes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

P = jax.sharding.PartitionSpec
POP_AXIS = "pop"


def population_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"pop"`` over ``devices`` (default: every device of every process).

    Example:
      >>> mesh = population_mesh()
      >>> mesh.axis_names
      ('pop',)
    """
    devices = list(jax.devices() if devices is None else devices)
    auto = (jax.sharding.AxisType.Auto,)  # jit moves inputs to the shardings shard_map asks for
    return jax.make_mesh((len(devices),), (POP_AXIS,), auto, devices=devices)


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
    """Places every leaf of ``tree``, whole, on every device of ``mesh``.

    Works across processes: each process passes the same values (e.g. the same
    seed), and gets back global arrays that ``jit`` and ``shard_map`` accept.
    """
    sharding = jax.sharding.NamedSharding(mesh, P())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            # Typed PRNG keys have no NumPy form: place their bits, then re-wrap them.
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Copies replicated (possibly multi-process) arrays to NumPy on this process."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (nothing with one process).

    E.g. every process checks a workdir before process 0 writes to it.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# Failure bounds of a multi-process run (seconds). JAX's own defaults (300 s to
# start, 100 s heartbeat, 300 s shutdown) let one dead process hang the others
# for minutes. With these, a peer that never starts makes the others exit
# non-zero after STARTUP_TIMEOUT_S, and a peer that dies mid-run after at most
# HEARTBEAT_TIMEOUT_S (the shutdown barrier fails as soon as the peer is
# declared dead); SHUTDOWN_TIMEOUT_S only bounds waiting for live, slower peers
# at exit, so it is kept longer than any ordinary difference in finishing time.
STARTUP_TIMEOUT_S = 30
HEARTBEAT_TIMEOUT_S = 10
SHUTDOWN_TIMEOUT_S = 60
FAILURE_BOUND_S = max(STARTUP_TIMEOUT_S, HEARTBEAT_TIMEOUT_S)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_count: int | None = None,
    startup_timeout_s: int = STARTUP_TIMEOUT_S,
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S,
    shutdown_timeout_s: int = SHUTDOWN_TIMEOUT_S,
) -> None:
    """Starts multi-process JAX so that :func:`population_mesh` spans every host.

    - On a TPU pod or a managed GPU cluster (SLURM, Open MPI), call it with no
      arguments: JAX finds the coordinator itself.
    - On CPU processes of one machine (testing), pass the coordinator
      (``"127.0.0.1:PORT"``), the number of processes and this one's id; gloo
      collectives are switched on, and ``local_device_count`` simulated CPU
      devices are made per process.

    Failure is bounded: a peer that never starts makes the others exit
    non-zero after ``startup_timeout_s``; a peer that dies mid-run is declared
    dead after ``heartbeat_timeout_s`` without a heartbeat (a collective it was
    part of fails at once), and every survivor then exits non-zero without
    waiting out ``shutdown_timeout_s``, which only bounds how long a finished
    process waits for live, slower ones. So every other process exits within
    :data:`FAILURE_BOUND_S` (30 s by default). Raise the start-up timeout where
    a scheduler starts processes far apart.

    Call it first, before any other JAX call.

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator.
      num_processes: how many processes take part.
      process_id: this process's id, ``0 .. num_processes - 1``.
      local_device_count: simulated CPU devices per process (testing).
      startup_timeout_s: how long to wait for every process to join.
      heartbeat_timeout_s: silence after which a process is declared dead.
      shutdown_timeout_s: how long a finishing process waits for the others.
    """
    for name, value in (
        ("startup_timeout_s", startup_timeout_s),
        ("heartbeat_timeout_s", heartbeat_timeout_s),
        ("shutdown_timeout_s", shutdown_timeout_s),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of seconds >= 1, got {value!r}.")
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", local_device_count)
    if coordinator_address is not None and coordinator_address.startswith("127.0.0.1"):
        jax.config.update("jax_platforms", "cpu")
    # Cross-process collectives of CPU devices go through gloo (several CPU hosts, or
    # local test processes); accelerators use their own interconnect either way.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    options = {"shutdown_timeout_seconds": shutdown_timeout_s}
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=startup_timeout_s,
        heartbeat_timeout_seconds=heartbeat_timeout_s,
        **supported_options(jax.distributed.initialize, options),
    )


def supported_options(function: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``function`` accepts as keywords (checked by its signature).

    For arguments newer than the oldest supported JAX: ``shutdown_timeout_seconds``
    arrived in ``jax.distributed.initialize`` after jax 0.7.2 (Colab's version), which
    then keeps its own shutdown default.

    Example:
      >>> supported_options(lambda a, b=1: None, {"b": 2, "c": 3})
      {'b': 2}
    """
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in parameters}
