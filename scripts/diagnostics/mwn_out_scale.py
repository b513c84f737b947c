"""One (method, seed) run of evograd_mwn through trained_state (the real trainer): test accuracy."""

import sys
import time

import jax.numpy as jnp

from esmeta_core.experiments import evograd_mwn as M
from esmeta_core.nets import mlp

seed = int(sys.argv[1])
scale = float(sys.argv[2])
methods = sys.argv[3].split(",")
cfg = M.Config(seeds=1, weight_net_out_scale=scale)
for m in methods:
    t0 = time.time()
    v = {"so": M.Variant("second order", "second_order"), "plain": M.Variant("plain", "plain")}.get(
        m
    ) or M.Variant(m, "evograd", copies=int(m[2:]))
    state, d = M.trained_state(cfg, v, "uniform", seed=seed)
    acc = float(jnp.mean(jnp.argmax(mlp(state.params, d["test_x"]), 1) == d["test_y"]))
    print(
        f"seed {seed} scale {scale} {m}: {100 * acc:.1f} % ({time.time() - t0:.0f} s)", flush=True
    )
