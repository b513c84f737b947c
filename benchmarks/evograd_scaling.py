"""EvoGrad against the second-order hypergradient as the model grows.

One Meta-Weight-Net hyper-step (per-example weights from a small MLP on the loss)
for a Conv4 classifier of growing width on a batch of 32 Omniglot-sized images
(28x28, 20 classes). Memory is XLA's compiled analysis of each jitted step; time
is the median of repeated steps. Inputs are random arrays of the right shapes:
this measures cost, not accuracy.

  python -m benchmarks.evograd_scaling   # writes results/benchmarks/evograd_scaling.json
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_memory, mib, time_call, write_result
from esmeta_core import protonet
from esmeta_core.evograd import evograd_hypergradient, unrolled_hypergradient
from esmeta_core.experiments.mlp import cross_entropy, init_mlp, mlp


class Classifier(nn.Module):
    width: int
    classes: int = 20

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.classes)(protonet.Conv4(self.width)(x))


def problem(width: int, batch: int = 32):
    model = Classifier(width)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 20, batch), jnp.int32)
    params = model.init(jax.random.key(0), x)["params"]
    weight_net = init_mlp(jax.random.key(1), [1, 32, 1])

    def train_loss(p, wn, b):
        losses = cross_entropy(model.apply({"params": p}, b[0]), b[1])
        w = jax.nn.sigmoid(mlp(wn, jax.lax.stop_gradient(losses)[:, None])[:, 0])
        return jnp.mean(w / (w.mean() + 1e-8) * losses)

    def val_loss(p, b):
        return cross_entropy(model.apply({"params": p}, b[0]), b[1]).mean()

    def evograd_step(p, wn, key, b):
        return evograd_hypergradient(train_loss, val_loss, p, wn, key, b, b)[0]

    def second_order_step(p, wn, key, b):
        del key
        return unrolled_hypergradient(train_loss, val_loss, p, wn, b, b, lr=0.1, steps=1)[0]

    args = (params, weight_net, jax.random.key(2), (x, y))
    return evograd_step, second_order_step, args, protonet.num_params(params)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="32,64,128,256,512")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for width in map(int, args.widths.split(",")):
        evo, second, inputs, n = problem(width)
        evo_mem, so_mem = compiled_memory(evo, *inputs), compiled_memory(second, *inputs)
        evo_s = time_call(jax.jit(evo), *inputs, repeats=args.repeats)
        so_s = time_call(jax.jit(second), *inputs, repeats=args.repeats)
        row = {
            "width": width,
            "params": n,
            "evograd_mib": mib(evo_mem["total_bytes"]),
            "second_order_mib": mib(so_mem["total_bytes"]),
            "memory_ratio": round(so_mem["total_bytes"] / evo_mem["total_bytes"], 2),
            "evograd_step_s": round(evo_s, 4),
            "second_order_step_s": round(so_s, 4),
            "time_ratio": round(so_s / evo_s, 2),
        }
        print(row, flush=True)
        rows.append(row)
    write_result(
        "evograd_scaling",
        rows,
        model="Conv4 + linear head, batch 32, 28x28, MWN",
        evograd="K=2, sigma=0.001, tau=0.05",
        second_order="1 unrolled SGD step",
    )


if __name__ == "__main__":
    main()
