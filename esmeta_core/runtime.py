"""Notebook set-up on any runtime: install what is missing, keep the accelerator's JAX.

Every chapter starts with the same two-line cell (:func:`bootstrap_cell` writes it):
where ``esmeta_core`` is not importable (a fresh Colab or Kaggle runtime) it
installs the package alone, with ``--no-deps`` so that nothing else changes,
from :data:`REPOSITORY` at :data:`REVISION`; then :func:`setup` installs the
missing dependencies and reports the backend, the devices and their memory.

The decisions are a pure function, :func:`plan_install`, of what
:func:`detect_runtime` finds, so they are tested without touching pip:

- every dependency installed at a version its requirement allows: nothing is installed;
- a dependency missing, or older than its requirement allows: it is installed or
  upgraded (one line says which and why);
- JAX preinstalled (Colab and Kaggle TPU/GPU images) and new enough: it is pinned
  to its installed version, so it is never upgraded or downgraded;
- JAX preinstalled on a TPU or GPU runtime but too old: :class:`RuntimeTooOld`, one
  line naming both versions; an accelerator's JAX is never replaced silently
  (on a CPU runtime it is upgraded like any other package);
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

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

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


class RuntimeTooOld(RuntimeError):
    """This runtime's JAX is older than esmeta needs, on a TPU or GPU (not replaced)."""


def _requirement(requirement: str) -> Requirement | None:
    """The parsed requirement, or ``None`` where its marker excludes this environment."""
    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate({"extra": ""}):
        return None
    return parsed


def _satisfied(requirement: Requirement, version: str) -> bool:
    """Whether an installed ``version`` is one that ``requirement`` allows (pre-releases too)."""
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:  # a local build with a version pip cannot compare: trusted
        return True


def _floor(requirement: Requirement) -> str:
    """``"0.7.0"`` for ``jax>=0.7.0``; the whole specifier where there is no ``>=``."""
    floors = [s.version for s in requirement.specifier if s.operator in (">=", "~=", "==")]
    return floors[0] if len(floors) == 1 else str(requirement.specifier)


def _mismatch(requirement: Requirement, version: str) -> str:
    """``"is older than optax>=0.2.4: upgrading it"``, or ``"does not satisfy ..."``."""
    if any(
        s.operator in (">", ">=") and not s.contains(version, True) for s in requirement.specifier
    ):
        return f"is older than {requirement}: upgrading it"
    return f"does not satisfy {requirement}: installing {requirement}"


def _jax_too_old(info: RuntimeInfo, requirement: Requirement, version: str) -> RuntimeTooOld:
    extra = JAX_FOR_ACCELERATOR[info.accelerator]
    return RuntimeTooOld(
        f"this runtime's JAX is {version}, older than the {_floor(requirement)} that esmeta "
        f"needs; esmeta does not replace a {info.accelerator.upper()} runtime's JAX: choose a "
        f'newer runtime, or run `pip install -U "{extra}{requirement.specifier}"` and restart'
    )


def _plan(info: RuntimeInfo) -> tuple[list[list[str]], list[str]]:
    """The pip commands and one line per package that is missing or too old."""
    installed = {canonicalize_name(k): v for k, v in info.installed.items()}
    packages, notes, jax = [], [], None
    for text in info.requirements:
        requirement = _requirement(text)
        if requirement is None:
            continue
        name = canonicalize_name(requirement.name)
        version = installed.get(name)
        if name == "jax":
            jax = requirement
            if version is not None and not _satisfied(requirement, version):
                if info.accelerator != "cpu":
                    raise _jax_too_old(info, requirement, version)
                packages.append(text)
                notes.append(f"jax {version} is older than {text}: upgrading it")
            continue
        if version is None:
            packages.append(text)
            notes.append(f"{requirement.name} is missing: installing {text}")
        elif not _satisfied(requirement, version):
            packages.append(text)
            notes.append(f"{requirement.name} {version} {_mismatch(requirement, version)}")
    if not packages and (jax is None or "jax" in installed):
        return [], []
    if "jax" not in installed:
        packages.append(JAX_FOR_ACCELERATOR[info.accelerator] + str(jax.specifier if jax else ""))
        notes.append(f"jax is missing: installing {packages[-1]}")
    elif jax is None or _satisfied(jax, installed["jax"]):
        # Pinned: pip may add what the others need, but never replace the runtime's JAX.
        packages.append(f"jax=={installed['jax']}")
    return [["-q", *packages]], notes


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
        canonicalize_name(dist.metadata["Name"] or ""): dist.version
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

    A package counts as installed only at a version its requirement allows
    (``packaging`` compares them); an older one is upgraded, except JAX on a TPU or
    GPU runtime, which raises :class:`RuntimeTooOld` instead (:func:`install_notes`
    gives the line per package).

    Example:
      >>> cpu = RuntimeInfo("cpu", {"jax": "0.7.2", "flax": "0.11.0"}, ("jax>=0.7", "flax"))
      >>> plan_install(cpu)
      []
      >>> tpu = RuntimeInfo("tpu", {"jax": "0.7.2"}, ("jax>=0.7", "optax"))
      >>> plan_install(tpu)
      [['-q', 'optax', 'jax==0.7.2']]
      >>> plan_install(RuntimeInfo("tpu", {}, ("jax>=0.7", "optax")))
      [['-q', 'optax', 'jax[tpu]>=0.7']]
      >>> plan_install(RuntimeInfo("cpu", {"jax": "0.7.2", "optax": "0.2.3"}, ("optax>=0.2.4",)))
      [['-q', 'optax>=0.2.4', 'jax==0.7.2']]
      >>> plan_install(RuntimeInfo("tpu", {"jax": "0.5.3"}, ("jax>=0.7.0",)))
      Traceback (most recent call last):
      ...
      esmeta_core.runtime.RuntimeTooOld: this runtime's JAX is 0.5.3, older than the 0.7.0 ...
    """
    return _plan(info)[0]


def install_notes(info: RuntimeInfo) -> list[str]:
    """One line per package that :func:`plan_install` installs or upgrades, and why.

    Example:
      >>> install_notes(RuntimeInfo("cpu", {"jax": "0.7.2", "optax": "0.2.3"}, ("optax>=0.2.4",)))
      ['optax 0.2.3 is older than optax>=0.2.4: upgrading it']
    """
    return _plan(info)[1]


# Import names whose distribution is named otherwise (``import PIL``: ``pip install pillow``).
MODULE_DISTRIBUTIONS = {
    "PIL": "pillow",
    "orbax": "orbax-checkpoint",
    "sklearn": "scikit-learn",
    "tensorflow_datasets": "tensorflow-datasets",
}


def install_command(module: str, requirements: tuple[str, ...] | None = None) -> str:
    """The pip command that installs the package behind ``import module``, at esmeta's floor.

    ``requirements``: esmeta_core's, extras included (default: the installed metadata's).
    A core dependency is installed at its floor, an extra's through the extra.

    Example:
      >>> install_command("orbax.checkpoint", ("orbax-checkpoint>=0.11.0",))
      "pip install 'orbax-checkpoint>=0.11.0'"
      >>> install_command("tensorflow_datasets", ('tensorflow-datasets>=4.9.6; extra == "tfds"',))
      "pip install 'esmeta_core[tfds]'"
      >>> install_command("einops", ())
      'pip install einops'
    """
    top = module.partition(".")[0]
    name = canonicalize_name(MODULE_DISTRIBUTIONS.get(top, top))
    if requirements is None:
        try:
            requirements = tuple(importlib.metadata.requires(DISTRIBUTION) or ())
        except importlib.metadata.PackageNotFoundError:
            requirements = ()
    for text in requirements:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) != name:
            continue
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(requirement.marker or ""))
        if extra:
            return f"pip install '{DISTRIBUTION}[{extra.group(1)}]'"
        return f"pip install '{requirement.name}{requirement.specifier}'"
    return f"pip install {name}"


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
    *,
    cpu_devices: int | None = None,
    matmul_precision: str | None = "highest",
    install: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Installs the missing dependencies (see :func:`plan_install`), then reports devices.

    Args:
      cpu_devices: simulate this many CPU devices when no TPU or GPU is attached
        (:func:`esmeta_core.devices.simulate_cpu_devices`; only before JAX starts).
      matmul_precision: ``jax_default_matmul_precision`` for the notebook. TPUs (and
        GPUs with TF32) multiply f32 matrices in bf16 passes by default, about 3
        significant digits, which the chapters' checks against hand-written versions
        (``rtol`` 1e-4 to 1e-5) would fail; ``"highest"`` makes them exact f32 (slower
        on an accelerator, the same on a CPU). ``None`` keeps JAX's default.
      install: run the pip commands; ``False`` only reports what it would run.
      verbose: print one line per command and the device report.

    Returns:
      ``{"pip": [commands], "simulated_cpu_devices": bool, **device_report()}``.

    Raises:
      RuntimeTooOld: this TPU or GPU runtime's JAX is older than esmeta needs.
    """
    simulated = False
    if cpu_devices is not None:
        from esmeta_core.devices import simulate_cpu_devices

        simulated = simulate_cpu_devices(cpu_devices)
    info = detect_runtime()
    commands, notes = _plan(info)  # RuntimeTooOld: an accelerator's JAX is too old
    if verbose:
        for note in notes:
            print(note, flush=True)
    for args in commands:
        if verbose:
            print("pip install", " ".join(args[1:]), flush=True)
        if install:
            subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)
    if matmul_precision is not None:
        import jax

        jax.config.update("jax_default_matmul_precision", matmul_precision)
    report = {
        "pip": commands,
        "simulated_cpu_devices": simulated,
        "matmul_precision": matmul_precision,
        **device_report(),
    }
    if verbose:
        memory = report["memory_per_device_gib"]
        print(
            f"JAX {report['jax_version']}, backend {report['backend']}: "
            f"{report['device_count']} x {report['device_kind']}"
            + (" (simulated)" if simulated else "")
            + (f", {memory} GiB each" if memory is not None else "")
        )
    return report
