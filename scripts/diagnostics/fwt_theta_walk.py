"""Does theta drift or random-walk? One seed, record channel mean of theta and of softplus(theta)."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import protonet
from esmeta_core.evograd import run_bilevel
from esmeta_core.experiments import evograd_fwt as F

t0 = time.time()
method, steps = sys.argv[1], int(sys.argv[2])
cfg = F.Config(seeds=1, steps=steps)
model = protonet.Conv4(width=16)
images, groups = F.seen_domains(4)
ids = F.episode_ids(groups, 20, seed=0, steps=steps, way=5, shot=5, query=5)
ids = {k: jnp.asarray(v) for k, v in ids.items()}
flat = jnp.asarray(images.reshape(-1, 28, 28))
step, mo, meo = F.bilevel_step(cfg, F.Variant(method, method, copies=2), model)
key = jax.random.key(0)
state = F.initial_state(cfg, model, mo, meo, key)
fwt_key = jax.random.fold_in(key, 1)
rec = lambda s: {k: (v.mean(1), v.std(1), jax.nn.softplus(v).mean(1)) for k, v in s.lam.items()}
state, r = run_bilevel(
    step,
    state,
    jax.random.fold_in(key, 2),
    lambda t: (F._episode(cfg, flat, ids, t, 0), jax.random.fold_in(fwt_key, t)),
    lambda t: F._episode(cfg, flat, ids, t, 1),
    steps=steps,
    record=rec,
)
for k in ("gamma", "beta"):
    m, s, sp = (np.asarray(x) for x in r[k])
    for t in (steps // 4 - 1, steps // 2 - 1, steps - 1):
        th = np.asarray(state.lam[k]) if t == steps - 1 else None
        print(
            f"{method} {k} step {t + 1}: theta channel-mean {np.round(m[t], 3)}  channel-std {np.round(s[t], 3)}  mean softplus {np.round(sp[t], 3)}"
            f"  softplus(mean theta) {np.round(np.log1p(np.exp(m[t])), 3)}"
        )
print(f"total {time.time() - t0:.1f}s")
