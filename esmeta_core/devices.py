"""Device set-up that must happen before JAX starts its backends (JAX is imported lazily)."""

from __future__ import annotations

import os
import sys

ACCELERATOR_HINTS = ("/dev/accel0", "/dev/nvidia0", "/dev/vfio/0")
TPU_ENV_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


def has_accelerator() -> bool:
    """A cheap guess, without starting JAX, of whether a TPU or GPU is attached."""
    return any(os.path.exists(p) for p in ACCELERATOR_HINTS) or any(
        v in os.environ for v in TPU_ENV_HINTS
    )


def simulate_cpu_devices(count: int = 8) -> bool:
    """Asks JAX for ``count`` CPU devices when no accelerator is present.

    Sets ``jax.config.update("jax_num_cpu_devices", count)``, so call it before
    the first JAX computation (``jax.devices()`` included). With a JAX too old
    for that option, or none installed yet, it falls back to
    ``XLA_FLAGS=--xla_force_host_platform_device_count`` (then before ``import
    jax``). Returns whether it did anything: on a TPU or GPU runtime the real
    devices are kept.

    Raises:
      ValueError: ``count`` is not a positive integer.
      RuntimeError: JAX has already started its backends.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}.")
    if has_accelerator():
        return False
    try:
        import jax
    except ImportError:
        jax = None
    if jax is not None and hasattr(jax.config, "jax_num_cpu_devices"):
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            raise RuntimeError(
                "simulate_cpu_devices must run before JAX starts (before any JAX computation "
                "or jax.devices()); restart the kernel and call it first."
            )
        jax.config.update("jax_num_cpu_devices", count)
        return True
    if "jax" in sys.modules:
        raise RuntimeError("simulate_cpu_devices must run before JAX is imported.")
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return True
