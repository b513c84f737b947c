"""Hypergradient sign at the start: second order and EvoGrad K=2 on the pseudo-unseen loss (no FWT)."""

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import protonet
from esmeta_core.evograd import evograd_hypergradient, run_bilevel, unrolled_hypergradient
from esmeta_core.experiments import evograd_fwt as F

t0 = time.time()
TRAIN = int(sys.argv[1]) if len(sys.argv) > 1 else 0
NP = int(sys.argv[3]) if len(sys.argv) > 3 else 24
cfg = F.Config(seeds=1, steps=max(TRAIN, NP))
model = protonet.Conv4(width=16)
images, groups = F.seen_domains(4)
ids = F.episode_ids(groups, 20, seed=0, steps=max(TRAIN, NP) + NP, way=5, shot=5, query=5)
ids = {k: jnp.asarray(v) for k, v in ids.items()}
flat = jnp.asarray(images.reshape(-1, 28, 28))
step, mo, meo = F.bilevel_step(cfg, F.Variant("none", "none"), model)
key = jax.random.key(0)
state = F.initial_state(cfg, model, mo, meo, key)
if TRAIN:
    state, _ = run_bilevel(
        step,
        state,
        jax.random.fold_in(key, 2),
        lambda t: (F._episode(cfg, flat, ids, t, 0), jax.random.fold_in(key, t)),
        lambda t: F._episode(cfg, flat, ids, t, 1),
        steps=TRAIN,
    )
params = state.params
train_loss = functools.partial(F.fwt_train_loss, model, 5)
val_loss = functools.partial(F.unseen_loss, model, 5)
off = TRAIN  # pairs not seen in training
inv_sp = lambda s: float(np.log(np.expm1(s)))


@jax.jit
def hgs(lam):
    def one(t):
        tb = (F._episode(cfg, flat, ids, t + off, 0), jax.random.fold_in(jax.random.key(99), t))
        vb = F._episode(cfg, flat, ids, t + off, 1)
        so = unrolled_hypergradient(train_loss, val_loss, params, lam, tb, vb, lr=0.01)[0]
        eg = evograd_hypergradient(
            train_loss,
            val_loss,
            params,
            lam,
            jax.random.fold_in(jax.random.key(5), t),
            tb,
            vb,
            copies=2,
            sigma=1e-3,
            temperature=0.05,
        )[0]
        return so, eg

    return jax.lax.map(one, jnp.arange(NP))


settings = {"committed": (0.854, 0.974), "tseng": (0.3, 0.5)}
for name, (sg, sb) in [(sys.argv[2], settings[sys.argv[2]])]:
    lam = {"gamma": jnp.full((4, 16), inv_sp(sg)), "beta": jnp.full((4, 16), inv_sp(sb))}
    so, eg = hgs(lam)
    for m, g in (("second order", so), ("EvoGrad K=2", eg)):
        for k in ("gamma", "beta"):
            x = np.asarray(g[k])  # [NP, 4, 16]
            per_pair = x.mean(2)  # channel mean per layer
            mean, se = per_pair.mean(0), per_pair.std(0) / np.sqrt(NP)
            frac_neg = (x < 0).mean()
            print(
                f"[{name}] {m:12s} {k:5s}: dL/dtheta channel-mean per layer {np.array2string(mean, precision=2)}"
                f" (SE {np.array2string(se, precision=2)}); t={np.array2string(mean / se, precision=1)}; frac<0 {frac_neg:.2f}",
                flush=True,
            )
    cos = [
        float(
            jnp.vdot(
                jnp.concatenate([so["gamma"][i].ravel(), so["beta"][i].ravel()]),
                jnp.concatenate([eg["gamma"][i].ravel(), eg["beta"][i].ravel()]),
            )
            / (
                jnp.linalg.norm(jnp.concatenate([so["gamma"][i].ravel(), so["beta"][i].ravel()]))
                * jnp.linalg.norm(jnp.concatenate([eg["gamma"][i].ravel(), eg["beta"][i].ravel()]))
            )
        )
        for i in range(NP)
    ]
    print(
        f"[{name}] cosine(EvoGrad, second order) per pair: mean {np.mean(cos):.2f}, median {np.median(cos):.2f}",
        flush=True,
    )
print(f"total {time.time() - t0:.1f}s")
