"""Which processes take part in a run: explicit settings, a detected cluster, or one process.

``esmeta train`` and ``esmeta experiment`` call :func:`detect` then :func:`start`
before any other JAX call. The order (the first that applies wins):

1. explicit settings: ``--coordinator HOST:PORT --num-processes N --process-id I``,
   each falling back to ``ESMETA_COORDINATOR`` / ``ESMETA_NUM_PROCESSES`` /
   ``ESMETA_PROCESS_ID``; all three or none must be given;
2. a cluster JAX detects by itself (a Cloud TPU pod slice, SLURM, Open MPI, ...):
   ``jax.distributed.initialize()`` with no arguments;
3. otherwise one process, as on a laptop (nothing is started).

After :func:`start`, :func:`esmeta_core.sharding.population_mesh` spans every
device of every process; CPU collectives use gloo. See the README section
"More than one host" for launch commands.

:func:`launch`, :func:`wait_all` and :func:`free_port` start local Python
processes (the processes of a run joined over 127.0.0.1, or any worker that needs a
fresh JAX) for the tests and the benchmarks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

ENV = {
    "coordinator": "ESMETA_COORDINATOR",
    "num_processes": "ESMETA_NUM_PROCESSES",
    "process_id": "ESMETA_PROCESS_ID",
}
SINGLE = "single"  # Cluster.source of a one-process run
PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # the folder esmeta_core is imported from


class Cluster(NamedTuple):
    """How this process joins a run.

    Attributes:
      source: ``"flags"``, ``"environment"``, the name of the JAX cluster type
        detected (e.g. ``"SlurmCluster"``), or ``"single"``.
      coordinator: ``"host:port"`` of process 0 (``None``: JAX finds it, or single).
      num_processes: processes taking part (``None``: JAX finds it, or single).
      process_id: this process's id (``None``: JAX finds it, or single).
    """

    source: str
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def is_multi_process(self) -> bool:
        return self.source != SINGLE


def jax_cluster() -> str | None:
    """The name of the cluster JAX's own auto-detection would use here, or ``None``.

    The same test as ``jax.distributed.initialize()`` without arguments (cluster
    types that are not opt-in and whose environment is present), without starting
    anything. Uses JAX's internal registry; ``None`` if that is unavailable.
    """
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:  # pragma: no cover - a JAX without the registry
        return None
    for env in ClusterEnv._cluster_types:
        if not getattr(env, "opt_in_only_method", False) and env.is_env_present():
            return env.__name__
    return None


def _parse_int(name: str, value: str | int, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a whole number, got {value!r}.") from None


def detect(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
    auto_detect: Callable[[], str | None] = jax_cluster,
) -> Cluster:
    """Decides how this process joins a run (explicit settings, detected cluster, single).

    Args:
      coordinator, num_processes, process_id: the command-line flags (``None``: not given).
      environ: the environment to read ``ESMETA_*`` from (default ``os.environ``).
      auto_detect: returns the name of a cluster JAX detects, or ``None``.

    Raises:
      ValueError: some but not all of the three settings are given, or one is bad
        (names the flag and the environment variable).
    """
    environ = os.environ if environ is None else environ
    flags = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    values = {k: v if v is not None else environ.get(ENV[k]) or None for k, v in flags.items()}
    given = [k for k, v in values.items() if v is not None]
    if given:
        where = "flags" if any(v is not None for v in flags.values()) else "environment"
        missing = [k for k in values if values[k] is None]
        if missing:
            names = ", ".join(f"--{k.replace('_', '-')} (or {ENV[k]})" for k in missing)
            raise ValueError(
                f"a multi-process run needs --coordinator, --num-processes and --process-id "
                f"(or {', '.join(ENV.values())}); missing: {names}."
            )
        n = _parse_int("--num-processes", values["num_processes"], where)
        i = _parse_int("--process-id", values["process_id"], where)
        host, sep, port = str(values["coordinator"]).rpartition(":")
        if not (sep and host and port.isdigit()):
            raise ValueError(
                f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got "
                f"{values['coordinator']!r}."
            )
        if n < 1 or not 0 <= i < n:
            raise ValueError(
                f"need --num-processes >= 1 and 0 <= --process-id < --num-processes, got "
                f"--num-processes {n} --process-id {i}."
            )
        return Cluster(where, str(values["coordinator"]), n, i)
    name = auto_detect()
    if name is not None:
        return Cluster(name)
    return Cluster(SINGLE)


def start(cluster: Cluster) -> None:
    """Joins the run described by ``cluster`` (nothing for a single process).

    Calls :func:`esmeta_core.sharding.initialize_distributed` with the bounded
    failure timeouts (:data:`esmeta_core.sharding.FAILURE_BOUND_S`). Call it
    before any other JAX call.
    """
    if not cluster.is_multi_process:
        return
    from esmeta_core import sharding

    sharding.initialize_distributed(cluster.coordinator, cluster.num_processes, cluster.process_id)


def is_main_process() -> bool:
    """Whether this is process 0, the one that prints and shows progress bars."""
    import jax

    return jax.process_index() == 0


class LaunchError(RuntimeError):
    """A process started by :func:`launch` exited with a non-zero status."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a local run's coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_environment(
    *, devices: int | None = None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """This process's environment for a local child process.

    ``PYTHONPATH`` is the folder this ``esmeta_core`` is imported from (so the child
    imports the same code), no ``ESMETA_*`` cluster settings are passed on (the child
    is told how to join by its arguments), and ``XLA_FLAGS`` simulates ``devices`` CPU
    devices (``None``: unset, JAX's default). ``env`` is applied last.
    """
    out = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT))
    out.pop("XLA_FLAGS", None)
    for name in ENV.values():
        out.pop(name, None)
    if devices is not None:
        out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out.update(env or {})
    return out


def launch(
    args: Sequence[str | os.PathLike | int],
    *,
    devices: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
    merge_stderr: bool = True,
) -> subprocess.Popen:
    """Starts ``python ARGS`` (this interpreter) in :func:`child_environment`.

    Its output is piped as text: ``stdout`` only, with stderr merged into it
    (``merge_stderr``), or both. Wait for it with :func:`wait_all`.
    """
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=child_environment(devices=devices, env=env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


def wait_all(
    procs: Sequence[subprocess.Popen], *, timeout: float | None
) -> list[tuple[str, str | None]]:
    """Waits for each process in turn (``timeout`` seconds each); returns its (stdout, stderr).

    Raises:
      LaunchError: a process exited non-zero (the message ends with its output).
      TimeoutError: a process was still running after ``timeout`` seconds.

    Every process still running when this returns or raises is killed, so a failed
    run leaves none behind.
    """
    outputs = []
    try:
        for rank, proc in enumerate(procs):
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"process {rank} did not finish within {timeout} s") from None
            outputs.append((out, err))
            if proc.returncode != 0:
                tail = (out or "")[-3000:] + (f"\n{err[-3000:]}" if err else "")
                raise LaunchError(f"process {rank} exited with {proc.returncode}:\n{tail}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs
