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
learner = nets.hebbian_learner(num_classes=C)
bl = vg.mean_over_tasks(vg.online_cross_entropy(learner))
params = nets.init_hebbian(jax.random.key(0), n_in=NI, num_classes=C)
flat = lambda t: jnp.concatenate([v.ravel() for v in jax.tree.leaves(t)])
cos = lambda a, b: float(flat(a) @ flat(b) / jnp.linalg.norm(flat(a)) / jnp.linalg.norm(flat(b)))
xb, yb = map(jnp.asarray, tasks.task_batch(np.random.default_rng(5), pool, 512))
key = jax.random.key(1)
L = jax.jit(bl)
G = jax.jit(jax.grad(bl))
print("init loss 512 tasks", float(L(params, xb, yb, key)), "ln5", np.log(5))
gbig = G(params, xb, yb, key)


def groups(g):
    w = g["w"]
    c = g["coeff"]
    return {
        "w_x": float(jnp.linalg.norm(w[:NI])),
        "w_e": float(jnp.linalg.norm(w[NI : NI + C])),
        "w_y": float(jnp.linalg.norm(w[NI + C :])),
        "coeff": float(jnp.linalg.norm(c)),
        "b": float(jnp.linalg.norm(g["b"])),
        "fw_lr": float(abs(g["fw_lr"])),
    }


print("grad norms by group (512 tasks):", groups(gbig))
esg = es.make_es_grad(bl, config=es.ESConfig(population=64, sigma=0.05, chunk_size=8))
rng = np.random.default_rng(7)
c_es4, c_g4, c_es_big, c_es_g4 = [], [], [], []
for i in range(8):
    x4, y4 = map(jnp.asarray, tasks.task_batch(rng, pool, 4))
    k = jax.random.key(100 + i)
    g4 = G(params, x4, y4, k)
    ge, _ = esg(params, k, x4, y4, jax.random.fold_in(k, 1))
    c_es_g4.append(cos(ge, g4))
    c_g4.append(cos(g4, gbig))
    c_es_big.append(cos(ge, gbig))
print(
    "cos(ES64 on 4 tasks, grad same 4 tasks) mean %.3f  all %s"
    % (np.mean(c_es_g4), np.round(c_es_g4, 2))
)
print("cos(grad 4 tasks, grad 512 tasks) mean %.3f" % np.mean(c_g4))
print("cos(ES64 4 tasks, grad 512 tasks) mean %.3f" % np.mean(c_es_big))


# ES estimate of the separate groups vs grad, same 4 tasks
# hand-set capacity check: w_x=0, w_e=0, w_y=a I, coeff=c, rate r
def hand(a, c, r):
    w = jnp.zeros((NI + 2 * C, C)).at[NI + C :].set(a * jnp.eye(C))
    return {
        "w": w,
        "coeff": jnp.full((NI + 2 * C, C), c),
        "b": jnp.zeros(C),
        "fw_lr": jnp.float32(np.log(r / (1 - r))),
    }


for a in (0.0, 5.0):
    for c in (0.01, 1.0, 10.0):
        for r in (0.011, 0.1):
            print(
                f"hand-set w_y={a}I coeff={c} rate={r}: loss {float(L(hand(a, c, r), xb, yb, key)):.3f}"
            )
print("t", time.time() - t0)
