import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import nets
from esmeta_core.data import tasks
from esmeta_core.experiments import vsml_generalisation as vg

t0 = time.time()
pool = tasks.omniglot_pool()
C, NI = 5, 16
learner = nets.hebbian_learner(num_classes=C)
tl = vg.online_cross_entropy(learner)
bl = vg.mean_over_tasks(tl)
xb, yb = map(jnp.asarray, tasks.task_batch(np.random.default_rng(5), pool, 512))
key = jax.random.key(1)
ev = jax.jit(lambda p: jax.vmap(lambda x, y: learner(p, None, x, y))(xb, yb))


def summary(p):
    l, c = ev(p)
    w = p["w"]
    return (
        f"loss {float(l.mean()):.3f} acc_last10 {float(c[:, -10:].mean()):.3f} |w_x| {float(jnp.linalg.norm(w[:NI])):.2f} "
        f"diag w_y {float(jnp.diag(w[NI + C :]).mean()):.2f} offdiag w_y {float((w[NI + C :].sum() - jnp.trace(w[NI + C :])) / 20):.2f} "
        f"diag w_e {float(jnp.diag(w[NI : NI + C]).mean()):.2f} coeff mean {float(p['coeff'].mean()):.3f} std {float(p['coeff'].std()):.3f} rate {float(jax.nn.sigmoid(p['fw_lr'])):.3f}"
    )


for kind, lr in [(a, float(b)) for a, b in (s.split(":") for s in sys.argv[1:])]:
    params = nets.init_hebbian(jax.random.key(0), n_in=NI, num_classes=C)
    if kind == "es":
        p, log = vg.es_meta_train(
            tl,
            params,
            pool,
            seed=0,
            steps=300,
            population=64,
            tasks_per_step=4,
            lr=lr,
            sigma=0.05,
            monitor=None,
        )
    else:
        p, log = vg.gradient_meta_train(
            tl, params, pool, seed=0, steps=300, tasks_per_step=4, lr=lr, monitor=None
        )
    L = np.array(log["loss"])
    print(
        kind,
        lr,
        "train loss first/last 30:",
        L[:30].mean().round(3),
        L[-30:].mean().round(3),
        "| 512 tasks:",
        summary(p),
        f"t={time.time() - t0:.0f}",
        flush=True,
    )
