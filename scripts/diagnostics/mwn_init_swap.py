"""MWN seed 2: does failure follow the data (seed_data) or the init key (d['seed'])?"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core.experiments import evograd_mwn as M
from esmeta_core.nets import mlp

t0 = time.time()
data_seed, init_seed, method = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
wn_seed = int(sys.argv[4]) if len(sys.argv) > 4 else init_seed
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
cfg = M.Config(steps=steps, seeds=1)
import os

ZERO = os.environ.get("WN_LAST_SCALE")
if ZERO is not None:
    orig0 = M.init_mlp

    def scaled(key, sizes):
        p = orig0(key, sizes)
        if list(sizes) == [1, cfg.weight_hidden, 1]:
            p[-1]["w"] = p[-1]["w"] * float(ZERO)
        return p

    M.init_mlp = scaled
if wn_seed != init_seed:  # weight net from another seed's key
    orig = M.init_mlp

    def patched(key, sizes):
        if list(sizes) == [1, cfg.weight_hidden, 1]:
            return orig(jax.random.fold_in(jax.random.key(wn_seed), 1000), sizes)
        return orig(key, sizes)

    M.init_mlp = patched
d = M.seed_data(cfg, "uniform", data_seed)
d["seed"] = np.int32(init_seed)
d = jax.tree.map(jnp.asarray, d)
v = {
    "so": M.Variant("second order", "second_order"),
    "plain": M.Variant("plain", "plain"),
    "eg10": M.Variant("eg", "evograd", copies=10),
}[method]
state = jax.jit(M.trainer(cfg, v))(d)
acc = float(jnp.mean(jnp.argmax(mlp(state.params, d["test_x"]), 1) == d["test_y"]))
grid = jnp.asarray([0.0, 0.5, 1.0, 2.0, 4.0, 6.0])
wm = jax.nn.sigmoid(mlp(state.lam, grid[:, None])[:, 0])
print(
    f"data seed {data_seed} init seed {init_seed} weight-net seed {wn_seed} {method} {steps} steps: test acc {100 * acc:.1f}; weight map at loss {grid.tolist()}: {np.round(np.asarray(wm), 2)}; {time.time() - t0:.0f}s"
)
