"""The fused Conv4 against the textbook composition: alone, in ES, in a training step.

:class:`esmeta_core.protonet.Conv4` computes the same embedding as
:class:`benchmarks.reference_conv4.PlainConv4` (``nn.Conv``, batch norm, ReLU,
``nn.max_pool``) with the same parameters, but convolves the one-channel input as
a patch matmul and pools before the batch-norm offset and the ReLU. This times
both, side by side in one process, on one 5-way 5-shot episode with 5 queries per
class (the training episode of the ``main`` and ``long`` presets; synthetic images,
timing only):

- ``forward``: one embedding of the episode's 50 images (jitted alone);
- ``es_step``: one plain ES gradient of the training loss
  (:func:`esmeta_core.train_step.make_loss`; the preset's population, antithetic,
  centered ranks, ``lax.map`` over members), where XLA computes the first layer's
  patches once for the population;
- ``train_step``: one jitted training step of the preset (``main``: Conv4-16,
  ``long``: Conv4-32; ES with the preset's options, Adam, the metrics), the step
  ``esmeta train`` runs.

  python -m benchmarks.conv4_forward        # writes results/benchmarks/conv4_forward.json
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from benchmarks.common import spread, synthetic_episode, time_calls, write_result
from benchmarks.reference_conv4 import PlainConv4
from esmeta_core import es, protonet, sharding, train_step
from esmeta_core.configs import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", default="main,long")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    episode = synthetic_episode(5, 5, 5)
    images = np.concatenate([episode.support, episode.query])
    batched = jax.tree.map(lambda x: x[None], tuple(episode))  # [batch = 1, ...]
    mesh = sharding.population_mesh(jax.local_devices()[:1])
    rows = []
    for preset in args.presets.split(","):
        # Fused against plain *dense* layers: PlainConv4 has no separable variant, so a
        # separable preset (today's ``long``) is measured with dense layers, as committed.
        config = dataclasses.replace(PRESETS[preset], separable=False)
        row: dict = {"preset": preset, "width": config.width, "population": config.population}
        models = {"fused": protonet.Conv4(config.width), "plain": PlainConv4(config.width)}
        for name, model in models.items():
            state = train_step.init_state(config, model)
            forward = jax.jit(lambda p, x, m=model: m.apply({"params": p}, x, stats_rows=25))
            grad_fn = es.make_es_grad(
                train_step.make_loss(config, model),
                config=es.ESConfig(population=config.population),
                mesh=mesh,
            )
            step = train_step.make_train_step(config, model, mesh)
            key = train_step.step_key(0, 1)
            row[name] = {
                "forward": spread(time_calls(forward, state.params, images, repeats=args.repeats)),
                "es_step": spread(
                    time_calls(grad_fn, state.params, key, batched, repeats=args.repeats)
                ),
                "train_step": spread(
                    time_calls(
                        step, state.params, state.opt_state, key, batched, repeats=args.repeats
                    )
                ),
            }
        for part in ("forward", "es_step", "train_step"):
            row[f"{part}_speedup"] = round(
                row["plain"][part]["median_s"] / row["fused"][part]["median_s"], 2
            )
        print(row, flush=True)
        rows.append(row)
    write_result("conv4_forward", rows, config=vars(args))


def markdown_table(result: dict) -> str:
    """The table of ``conv4_forward.json``: fused against plain Conv4 per preset and part
    (one forward pass, one ES gradient, one training step), median (min-max) in ms."""
    from esmeta_core.report import median_range, table

    def ms(t: dict) -> str:
        return median_range(*(round(1e3 * t[k], 1) for k in ("median_s", "min_s", "max_s")))

    rows = [
        [
            f"{r['preset']} (Conv4-{r['width']}, N = {r['population']})",
            part.replace("_", " "),
            ms(r["fused"][part]),
            ms(r["plain"][part]),
            f"{r[part + '_speedup']:.2f}x",
        ]
        for r in result["rows"]
        for part in ("forward", "es_step", "train_step")
    ]
    return table(["preset", "part", "fused ms", "plain ms", "speed-up"], rows)


if __name__ == "__main__":
    main()
