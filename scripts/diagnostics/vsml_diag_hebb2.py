import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import es, nets
from esmeta_core.data import tasks
from esmeta_core.experiments import vsml_generalisation as vg

t0 = time.time()
pool = tasks.omniglot_pool()
C, NI = 5, 16
bl = vg.mean_over_tasks(vg.online_cross_entropy(nets.hebbian_learner(num_classes=C)))
G = jax.jit(jax.grad(bl))


def split(g):  # (static: w_x, b) and (learning: w_e, w_y, coeff, fw_lr)
    w = g["w"]
    return (
        jnp.concatenate([w[:NI].ravel(), g["b"]]),
        jnp.concatenate([w[NI:].ravel(), g["coeff"].ravel(), g["fw_lr"][None]]),
    )


cos = lambda a, b: float(a @ b / jnp.linalg.norm(a) / jnp.linalg.norm(b))
xb, yb = map(jnp.asarray, tasks.task_batch(np.random.default_rng(5), pool, 512))
for coeff0 in (0.01, 1.0):
    params = nets.init_hebbian(jax.random.key(0), n_in=NI, num_classes=C)
    params["coeff"] = jnp.full_like(params["coeff"], coeff0)
    gb = split(G(params, xb, yb, jax.random.key(1)))
    print(
        f"coeff0={coeff0}: |grad| static {float(jnp.linalg.norm(gb[0])):.2e} learning {float(jnp.linalg.norm(gb[1])):.2e} (512 tasks)"
    )
    for N in (64, 1024):
        esg = es.make_es_grad(bl, config=es.ESConfig(population=N, sigma=0.05, chunk_size=8))
        rng = np.random.default_rng(7)
        r = {"s": [], "l": [], "gs": [], "gl": [], "tl": []}
        for i in range(6):
            x4, y4 = map(jnp.asarray, tasks.task_batch(rng, pool, 4))
            k = jax.random.key(100 + i)
            g4 = split(G(params, x4, y4, k))
            ge, _ = esg(params, k, x4, y4, jax.random.fold_in(k, 1))
            ge = split(ge)
            r["s"].append(cos(ge[0], g4[0]))
            r["l"].append(cos(ge[1], g4[1]))
            r["gs"].append(cos(ge[0], gb[0]))
            r["gl"].append(cos(ge[1], gb[1]))
            r["tl"].append(cos(g4[1], gb[1]))
        m = {k: round(float(np.mean(v)), 3) for k, v in r.items()}
        print(
            f"  N={N}: cos(ES,grad same 4 tasks) static {m['s']} learning {m['l']}; vs 512-task grad: static {m['gs']} learning {m['gl']}; cos(grad 4 tasks, grad 512) learning {m['tl']}  t={time.time() - t0:.0f}",
            flush=True,
        )
