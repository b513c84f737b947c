"""Simulated CPU devices through ``jax_num_cpu_devices``, in fresh interpreters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from esmeta_core import devices

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, os
from esmeta_core import devices
done = devices.simulate_cpu_devices(4)
import jax
n = len(jax.devices())
try:
    devices.simulate_cpu_devices(2)
    late = "no error"
except RuntimeError as e:
    late = str(e)
print(json.dumps({"done": done, "n": n, "xla_flags": os.environ.get("XLA_FLAGS"), "late": late}))
"""


@pytest.mark.skipif(devices.has_accelerator(), reason="real devices are kept on an accelerator")
def test_simulate_cpu_devices_gives_that_many_devices_without_xla_flags():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["done"] is True and out["n"] == 4
    assert out["xla_flags"] is None  # the JAX option, not the environment, made the devices
    assert "must run before JAX starts" in out["late"]


def test_simulate_cpu_devices_refuses_a_non_positive_count():
    with pytest.raises(ValueError, match="count must be a positive integer"):
        devices.simulate_cpu_devices(0)
