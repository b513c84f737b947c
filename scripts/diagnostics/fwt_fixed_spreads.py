"""Fixed FWT at a given initial spread: 1 seed, 200 steps, held-out alphabets 5w5s (100 episodes)."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import evaluation, protonet
from esmeta_core.experiments import evograd_fwt as F

t0 = time.time()
method, sg, sb = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
inv = lambda s: float(np.log(np.expm1(s)))
cfg = F.Config(seeds=1, steps=200, gamma0=inv(sg), beta0=inv(sb))
model = protonet.Conv4(width=16)
images, groups = F.seen_domains(4)
ids = F.episode_ids(groups, 20, seed=0, steps=200, way=5, shot=5, query=5)
ids = {k: jnp.asarray(v) for k, v in ids.items()}
ids["seed"] = jnp.int32(0)
flat = jnp.asarray(images.reshape(-1, 28, 28))
state, spreads = jax.jit(F.trainer(cfg, F.Variant(method, method, copies=2), model))(flat, ids)
test = F.load_split("test")
timg = test.images[test.rotations == 0]
ev = evaluation.evaluate(model, state.params, timg, way=5, shot=5, query=15, episodes=100)
print(
    f"{method} std0 {sg}/{sb}: omniglot-test 5w5s {100 * ev.accuracy:.1f} +- {100 * ev.ci95:.1f}; final mean softplus gamma {np.round(np.asarray(spreads['gamma'][-1]), 2)} beta {np.round(np.asarray(spreads['beta'][-1]), 2)}; {time.time() - t0:.0f}s"
)
