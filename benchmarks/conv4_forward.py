"""The fused Conv4 against the textbook composition, alone and inside an ES step.

:class:`esmeta_core.protonet.Conv4` computes the same embedding as
:class:`esmeta_core.protonet.PlainConv4` (``nn.Conv``, batch norm, ReLU,
``nn.max_pool``) with the same parameters, but convolves the one-channel input as
a patch matmul and pools before the batch-norm offset and the ReLU. This times
both, side by side in one process, on one 5-way 5-shot episode with 5 queries per
class (the ``main`` preset's training episode; synthetic images, timing only):

- ``forward``: one embedding of the episode's 50 images (jitted alone);
- ``es_step``: one ES gradient (population 64, antithetic, ``lax.map`` over members),
  where XLA computes the first layer's patches once for the whole population.

  python -m benchmarks.conv4_forward        # writes results/benchmarks/conv4_forward.json
"""

from __future__ import annotations

import argparse

import jax

from benchmarks.common import spread, synthetic_episode, time_calls, write_result
from esmeta_core import es, protonet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="16,32")
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    episode = synthetic_episode(5, 5, 5)
    images = jax.numpy.concatenate([episode.support, episode.query])
    config = es.ESConfig(population=args.population)
    rows = []
    for width in map(int, args.widths.split(",")):
        row: dict = {"width": width, "population": args.population}
        models = {"fused": protonet.Conv4(width), "plain": protonet.PlainConv4(width)}
        for name, model in models.items():
            params = protonet.init_params(jax.random.key(0), model)
            forward = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, stats_rows=25))

            def loss_fn(p, e, m=model):
                return protonet.episode_loss(m, p, e, way=5)

            grad_fn = es.make_es_grad(loss_fn, config=config)
            row[name] = {
                "forward": spread(time_calls(forward, params, images, repeats=args.repeats)),
                "es_step": spread(
                    time_calls(grad_fn, params, jax.random.key(0), episode, repeats=args.repeats)
                ),
            }
        for part in ("forward", "es_step"):
            row[f"{part}_speedup"] = round(
                row["plain"][part]["median_s"] / row["fused"][part]["median_s"], 2
            )
        print(row)
        rows.append(row)
    write_result("conv4_forward", rows, config=vars(args))


if __name__ == "__main__":
    main()
