"""Memory of compiled programs, read from XLA before anything runs.

``jit(f).lower(*args).compile().memory_analysis()`` is deterministic, works on
CPU, GPU and TPU, and accepts ``jax.ShapeDtypeStruct`` arguments, so the memory
of an episode too large to allocate can still be measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def compiled_memory(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """Bytes XLA reserves for ``jit(fn)(*args)``: temporaries, arguments, outputs and their sum.

    Example:
      >>> import jax.numpy as jnp
      >>> compiled_memory(lambda x: x * 2, jnp.ones(1024))["argument_bytes"]
      4096
    """
    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    analysis = jitted.lower(*args).compile().memory_analysis()
    out = {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }
    out["total_bytes"] = out["temp_bytes"] + out["argument_bytes"] + out["output_bytes"]
    return out
