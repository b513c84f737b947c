"""ES step time over plain forward time on the same images (the ProtoNet fitness).

For population N, an ES step evaluates N perturbed models on one 5-way 5-shot
15-query episode (100 images each). The baseline evaluates the *unperturbed*
model on the same N x 100 images with the same loop and no noise, so the ratio
is what ES adds on top of the forward passes it cannot avoid: noise
generation, perturbation, shaping and the weighted sum. (The baseline scales
member j's weights by 1 + 1e-7 j, so that XLA cannot compute one forward pass
and reuse it.)

  python -m benchmarks.es_efficiency            # writes results/benchmarks/es_efficiency.json
"""

from __future__ import annotations

import argparse

import jax
from jax import lax

from benchmarks.common import protonet_fitness, spread, synthetic_episode, time_calls, write_result
from esmeta_core import es


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populations", default="64,256")
    parser.add_argument("--chunks", default="1,4,16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _, params, loss_fn = protonet_fitness(64)
    episode = synthetic_episode(5, 5, 15)
    rows = []
    for population in map(int, args.populations.split(",")):

        @jax.jit
        def plain_forward(params, episode, n=population):
            # Member j scales the weights by (1 + 1e-7 j) so that XLA cannot hoist one
            # forward pass out of the loop: n real forward passes, no noise.
            def member(j):
                scaled = jax.tree.map(lambda p: p * (1.0 + 1e-7 * j), params)
                return loss_fn(scaled, episode)

            return lax.map(member, jax.numpy.arange(n, dtype=jax.numpy.float32)).sum()

        forward = spread(time_calls(plain_forward, params, episode, repeats=args.repeats))
        for chunk in map(int, args.chunks.split(",")):
            if chunk > 1 and population > 64:
                continue  # vmapped chunks are slower on CPU; keep the run short
            config = es.ESConfig(population=population, chunk_size=chunk)
            grad_fn = es.make_es_grad(loss_fn, config=config)
            es_t = spread(
                time_calls(grad_fn, params, jax.random.key(0), episode, repeats=args.repeats)
            )
            row = {
                "population": population,
                "chunk_size": chunk,
                "strategy": "lax.map" if chunk == 1 else f"lax.map over vmap chunks of {chunk}",
                "images": population * 100,
                "es_step": es_t,
                "plain_forward": forward,
                # median over median; the range pairs the fastest ES with the slowest forward
                "ratio": round(es_t["median_s"] / forward["median_s"], 3),
                "ratio_range": [
                    round(es_t["min_s"] / forward["max_s"], 3),
                    round(es_t["max_s"] / forward["min_s"], 3),
                ],
            }
            print(row, flush=True)
            rows.append(row)
    write_result(
        "es_efficiency",
        rows,
        config=vars(args),
        fitness="ProtoNet Conv4-64, 5-way 5-shot 15-query",
        timing=f"{args.repeats} repeats after one warm-up call: median, min, max",
    )


def markdown_table(result: dict) -> str:
    """The table of ``es_efficiency.json``: ES step and plain forward times, and their ratio."""
    from esmeta_core.report import median_range, table

    def timing(t: dict) -> str:
        return median_range(t["median_s"], t["min_s"], t["max_s"])

    headers = ["N", "strategy", "ES step s, median (min-max)", "plain forward s", "ratio (range)"]
    rows = [
        [
            r["population"],
            r["strategy"],
            timing(r["es_step"]),
            timing(r["plain_forward"]),
            f"{r['ratio']} ({r['ratio_range'][0]}-{r['ratio_range'][1]})",
        ]
        for r in result["rows"]
    ]
    return table(headers, rows)


if __name__ == "__main__":
    main()
