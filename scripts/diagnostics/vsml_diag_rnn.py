import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from esmeta_core import nets
from esmeta_core.data import tasks

t0 = time.time()
pool = tasks.omniglot_pool()
NI = 16


def run(way, leak, steps, lr, hidden=128):
    base = nets.meta_rnn_learner(num_classes=way)
    learner = (
        (lambda p, k, x, y: base(p, k, jnp.concatenate([x, jax.nn.one_hot(y, way)], -1), y))
        if leak
        else base
    )
    params = nets.init_meta_rnn(
        jax.random.key(0), n_in=NI + way * leak, num_classes=way, hidden=hidden
    )
    bl = lambda p, xs, ys: jax.vmap(lambda x, y: learner(p, None, x, y)[0].mean())(xs, ys).mean()
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))

    @jax.jit
    def upd(p, s, xs, ys):
        l, g = jax.value_and_grad(bl)(p, xs, ys)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l, g

    rng = np.random.default_rng(0)
    s = opt.init(params)
    L = []
    for i in range(steps):
        xs, ys = tasks.task_batch(rng, pool, 4, way=way, length=min(50, 20 * way))
        params, s, l, g = upd(params, s, xs, ys)
        L.append(float(l))
        if i == 0:
            gw = g["lstm_w"]
            n = lambda a: float(jnp.linalg.norm(a))
            print(
                f"  step0 grad norms: rows x {n(gw[:NI]):.2e}, error {n(gw[NI : NI + way]):.2e}, prev label {n(gw[NI + way : NI + 2 * way]):.2e}, h {n(gw[NI + 2 * way + way * leak :]):.2e}, out {n(g['out']):.2e}"
            )
    xs, ys = map(
        jnp.asarray,
        tasks.task_batch(np.random.default_rng(5), pool, 256, way=way, length=min(50, 20 * way)),
    )
    lo, co = jax.jit(jax.vmap(lambda x, y: learner(params, None, x, y)))(xs, ys)
    L = np.array(L)
    print(
        f"way={way} leak={leak} H={hidden} lr={lr} steps={steps}: loss first30 {L[:30].mean():.3f} last30 {L[-30:].mean():.3f} (ln way {np.log(way):.3f}); 256 tasks loss {float(lo.mean()):.3f} acc all {float(co.mean()):.3f} last10 {float(co[:, -10:].mean()):.3f}  t={time.time() - t0:.0f}",
        flush=True,
    )


for spec in sys.argv[1:]:
    a = spec.split(":")
    run(int(a[0]), int(a[1]), int(a[2]), float(a[3]), int(a[4]) if len(a) > 4 else 128)
