"""Notebook set-up on any runtime: install what is missing, keep the accelerator's JAX.

Every chapter starts with the same two-line cell (:func:`bootstrap_cell` writes it):
where ``esmeta_core`` is not importable (a fresh Colab or Kaggle runtime) it
installs the package alone, with ``--no-deps`` so that nothing else changes,
from :data:`REPOSITORY` at :data:`REVISION`; then :func:`setup` installs the
missing dependencies and reports the backend, the devices and their memory.

The decisions are a pure function, :func:`plan_install`, of what
:func:`detect_runtime` finds, so they are tested without touching pip:

- every dependency already importable: nothing is installed;
- JAX preinstalled (Colab and Kaggle TPU/GPU images): it is pinned to its
  installed version, so it is never upgraded or downgraded;
- no JAX on a TPU runtime: ``jax[tpu]``; on a GPU: ``jax[cuda12]``; on a CPU: ``jax``.

To publish a fork, change :data:`REPOSITORY` (and tag :data:`REVISION`), then run
``python scripts/sync_launch_links.py``: it rewrites every chapter's setup cell,
badges and the book's launch buttons from these two constants.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from typing import Any, NamedTuple

from esmeta_core import __version__
from esmeta_core.devices import ACCELERATOR_HINTS, TPU_ENV_HINTS

REPOSITORY = "https://github.com/esmeta-dev/esmeta"
REVISION = f"v{__version__}"  # a tag: every notebook installs the code it was written for
DISTRIBUTION = "esmeta_core"
JAX_FOR_ACCELERATOR = {"tpu": "jax[tpu]", "gpu": "jax[cuda12]", "cpu": "jax"}


class RuntimeInfo(NamedTuple):
    """What :func:`plan_install` decides from.

    Attributes:
      accelerator: ``"tpu"``, ``"gpu"`` or ``"cpu"`` (guessed without starting JAX).
      installed: distribution name -> version of what is installed (lower case).
      requirements: the package's own requirements, e.g. ``("jax>=0.7.0", ...)``.
    """

    accelerator: str
    installed: dict[str, str]
    requirements: tuple[str, ...]


def install_url(repository: str = REPOSITORY, revision: str = REVISION) -> str:
    """The pip requirement that installs this package from its pinned source."""
    return f"{DISTRIBUTION} @ git+{repository}@{revision}"


def bootstrap_cell(
    repository: str = REPOSITORY, revision: str = REVISION, *, cpu_devices: int | None = None
) -> str:
    """The first code cell of every chapter (kept identical by a test).

    ``cpu_devices``: the multi-device chapters ask for that many simulated CPU
    devices where no accelerator is attached (it must happen before JAX starts).
    """
    call = "setup()" if cpu_devices is None else f"setup(cpu_devices={cpu_devices})"
    return (
        "try:  # Colab, Kaggle: install esmeta_core alone (--no-deps keeps the runtime's JAX)\n"
        "    import esmeta_core\n"
        "except ImportError:\n"
        f'    %pip install -q --no-deps "{install_url(repository, revision)}"\n'
        "from esmeta_core.runtime import setup\n"
        "\n"
        f"runtime = {call}  # installs missing dependencies; reports backend, devices, memory"
    )


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _accelerator() -> str:
    if any(v in os.environ for v in TPU_ENV_HINTS) or os.path.exists("/dev/accel0"):
        return "tpu"
    if os.path.exists("/dev/vfio/0") and not shutil.which("nvidia-smi"):
        return "tpu"  # TPU VMs (v5e, v6e) expose the chips through vfio
    if shutil.which("nvidia-smi") or any(os.path.exists(p) for p in ACCELERATOR_HINTS[1:2]):
        return "gpu"
    return "cpu"


def detect_runtime() -> RuntimeInfo:
    """Inspects this Python environment and machine (does not import JAX)."""
    installed = {
        (dist.metadata["Name"] or "").lower().replace("_", "-"): dist.version
        for dist in importlib.metadata.distributions()
    }
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    core = tuple(r for r in requires if "extra ==" not in r)
    return RuntimeInfo(_accelerator(), installed, core)


def plan_install(info: RuntimeInfo) -> list[list[str]]:
    """The pip commands (argument lists after ``pip install``) that ``setup`` would run.

    Example:
      >>> cpu = RuntimeInfo("cpu", {"jax": "0.7.2", "flax": "0.11.0"}, ("jax>=0.7", "flax"))
      >>> plan_install(cpu)
      []
      >>> tpu = RuntimeInfo("tpu", {"jax": "0.6.2"}, ("jax>=0.7", "optax"))
      >>> plan_install(tpu)
      [['-q', 'optax', 'jax==0.6.2']]
      >>> plan_install(RuntimeInfo("tpu", {}, ("jax>=0.7", "optax")))
      [['-q', 'optax', 'jax[tpu]']]
    """
    missing = [r for r in info.requirements if _requirement_name(r) not in info.installed]
    if not missing:
        return []
    packages = [r for r in missing if _requirement_name(r) != "jax"]
    if "jax" in info.installed:
        # Pinned: pip may add what the others need, but never replace the runtime's JAX.
        packages.append(f"jax=={info.installed['jax']}")
    else:
        packages.append(JAX_FOR_ACCELERATOR[info.accelerator])
    return [["-q", *packages]]


def device_report() -> dict[str, Any]:
    """Backend, device count and kind, and memory per device where the backend tells."""
    import jax

    devices = jax.devices()
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    memory = (stats or {}).get("bytes_limit")
    if memory is None and hasattr(os, "sysconf"):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # host memory
    return {
        "backend": jax.default_backend(),
        "device_count": len(devices),
        "device_kind": devices[0].device_kind,
        "memory_per_device_gib": None if memory is None else round(memory / 2**30, 1),
        "jax_version": jax.__version__,
    }


def setup(
    *, cpu_devices: int | None = None, install: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Installs the missing dependencies (see :func:`plan_install`), then reports devices.

    Args:
      cpu_devices: simulate this many CPU devices when no TPU or GPU is attached
        (:func:`esmeta_core.devices.simulate_cpu_devices`; only before JAX starts).
      install: run the pip commands; ``False`` only reports what it would run.
      verbose: print one line per command and the device report.

    Returns:
      ``{"pip": [commands], "simulated_cpu_devices": bool, **device_report()}``.
    """
    simulated = False
    if cpu_devices is not None:
        from esmeta_core.devices import simulate_cpu_devices

        simulated = simulate_cpu_devices(cpu_devices)
    commands = plan_install(detect_runtime())
    for args in commands:
        if verbose:
            print("pip install", " ".join(args[1:]), flush=True)
        if install:
            subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
    report = {"pip": commands, "simulated_cpu_devices": simulated, **device_report()}
    if verbose:
        memory = report["memory_per_device_gib"]
        print(
            f"JAX {report['jax_version']}, backend {report['backend']}: "
            f"{report['device_count']} x {report['device_kind']}"
            + (" (simulated)" if simulated else "")
            + (f", {memory} GiB each" if memory is not None else "")
        )
    return report
