"""Device set-up that must happen before JAX starts (so this module never imports JAX)."""

from __future__ import annotations

import os

ACCELERATOR_HINTS = ("/dev/accel0", "/dev/nvidia0", "/dev/vfio/0")
TPU_ENV_HINTS = ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")


def has_accelerator() -> bool:
    """A cheap guess, without starting JAX, of whether a TPU or GPU is attached."""
    return any(os.path.exists(p) for p in ACCELERATOR_HINTS) or any(
        v in os.environ for v in TPU_ENV_HINTS
    )


def simulate_cpu_devices(count: int = 8) -> bool:
    """Asks XLA for ``count`` CPU devices when no accelerator is present.

    Call it before the first ``import jax``. Returns whether it did anything:
    on a TPU or GPU runtime the real devices are kept.
    """
    if "jax" in __import__("sys").modules:
        raise RuntimeError("simulate_cpu_devices must run before JAX is imported.")
    if has_accelerator():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    return True
