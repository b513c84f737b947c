"""FWT diagnostics: feature std vs FWT noise, accuracy drop under FWT, on a plain-trained Conv4-16."""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import protonet
from esmeta_core.data import Episode, sample_episode
from esmeta_core.evograd import run_bilevel
from esmeta_core.experiments import evograd_fwt as F

t0 = time.time()
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
cfg = F.Config(seeds=1, steps=STEPS)
model = protonet.Conv4(width=16)
images, groups = F.seen_domains(4)
ids = F.episode_ids(groups, 20, seed=0, steps=STEPS, way=5, shot=5, query=5)
ids = {k: jnp.asarray(v) for k, v in ids.items()}
flat = jnp.asarray(images.reshape(-1, 28, 28))
test = F.load_split("test")
timg = test.images[test.rotations == 0]

v = F.Variant("none", "none")
step, mo, meo = F.bilevel_step(cfg, v, model)
key = jax.random.key(0)
state = F.initial_state(cfg, model, mo, meo, key)
p0 = state.params
snaps = {0: p0}
chunks = [STEPS // 5, STEPS]  # snapshots
done = 0
for end in chunks:
    n = end - done
    off = done
    st, _ = run_bilevel(
        step,
        state,
        jax.random.fold_in(key, 2),
        lambda t: (F._episode(cfg, flat, ids, t + off, 0), jax.random.fold_in(key, t + off)),
        lambda t: F._episode(cfg, flat, ids, t + off, 1),
        steps=n,
    )
    state = st
    done = end
    snaps[end] = st.params
print(f"trained {STEPS} steps in {time.time() - t0:.1f}s", flush=True)

# test episodes from the held-out alphabets, 5w5s, 15 queries
rng = np.random.default_rng(123)
table = np.arange(len(timg))[:, None] * 20 + np.arange(20)
flat_t = jnp.asarray(timg.reshape(-1, 28, 28))
eps = []
NE = 40
for i in range(NE):
    e = sample_episode(table, rng, way=5, shot=5, query=15)
    eps.append(
        Episode(
            flat_t[e.support[:, 0]][..., None],
            jnp.repeat(jnp.arange(5), 5),
            flat_t[e.query[:, 0]][..., None],
            jnp.repeat(jnp.arange(5), 15),
        )
    )
eps = jax.tree.map(lambda *x: jnp.stack(x), *eps)


def bn_outputs(params, e):
    x = jnp.concatenate([e[0], e[2]])
    _, inter = model.apply(
        {"params": params},
        x,
        stats_rows=e[0].shape[0],
        capture_intermediates=lambda mdl, name: isinstance(
            mdl, (protonet.Conv3x3, protonet.SupportBatchNorm)
        ),
    )
    inter = inter["intermediates"]
    outputs = []  # batch norm's output: conv output * multiplier + offset
    for i in range(4):
        multiplier, offset = inter[f"SupportBatchNorm_{i}"]["affine"][0]
        outputs.append(inter[f"Conv_{i}"]["__call__"][0] * multiplier + offset)
    return outputs


@jax.jit
def acc_fwt(params, sg, sb, key):
    hyper = {"gamma": jnp.full((4, 16), sg), "beta": jnp.full((4, 16), sb)}

    def one(e, k):
        tr = protonet.sample_feature_transform(k, hyper)
        return protonet.episode_loss_and_accuracy(model, params, e, way=5, transform=tr)[1]

    return jax.vmap(one)(eps, jax.random.split(key, NE)).mean()


@jax.jit
def acc_plain(params):
    return jax.vmap(lambda e: protonet.episode_loss_and_accuracy(model, params, e, way=5)[1])(
        eps
    ).mean()


inv_sp = lambda s: float(np.log(np.expm1(s)))
spreads = [(0.854, 0.974), (0.3, 0.5), (0.1, 0.1)]
for t, p in snaps.items():
    outs = jax.jit(jax.vmap(lambda e: bn_outputs(p, e)))(eps)
    stds = [float(o.std(axis=(1, 2, 3)).mean()) for o in outs]
    scale = [float(jnp.abs(p[f"SupportBatchNorm_{i}"]["scale"]).mean()) for i in range(4)]
    a0 = float(acc_plain(p))
    print(
        f"step {t:4d}: BN-out per-channel std {np.round(stds, 3)} |scale| {np.round(scale, 3)}  acc no-FWT {100 * a0:.1f}",
        flush=True,
    )
    for sg, sb in spreads:
        a = np.mean(
            [float(acc_fwt(p, inv_sp(sg), inv_sp(sb), jax.random.key(r))) for r in range(3)]
        )
        print(
            f"    FWT std gamma {sg} beta {sb}: acc {100 * a:.1f}  (drop {100 * (a0 - a):.1f})",
            flush=True,
        )
print(f"total {time.time() - t0:.1f}s")
