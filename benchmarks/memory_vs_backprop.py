"""Peak memory of the ES gradient against ``jax.grad`` as a ProtoNet episode grows.

The paper's claim (Sheng & He 2022): ES needs "as much as 40 times less memory
than automatic differentiation", and its memory does not grow with task
length. Here a 5-way 5-shot episode gets more and more queries (100 to
20,000+ images). ES evaluates it forward-only, queries in chunks of 100
(``query_chunk``), members one at a time; backprop differentiates the
standard (unchunked) episode loss. Memory is XLA's compiled analysis
(temporaries + arguments + outputs), which is deterministic on CPU.

  python -m benchmarks.memory_vs_backprop   # writes results/benchmarks/memory_vs_backprop.json
"""

from __future__ import annotations

import argparse

import jax

from benchmarks.common import compiled_memory, mib, protonet_fitness, write_result
from esmeta_core import es, protonet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", default="15,60,240,960,4000")  # per class, 5 classes
    parser.add_argument("--population", type=int, default=256)
    args = parser.parse_args()
    _, params, plain_loss = protonet_fitness(64)
    rows = []
    for query in map(int, args.queries.split(",")):
        episode = protonet.episode_spec(5, 5, query)
        images = 5 * 5 + 5 * query
        chunk = 25 if (5 * query) % 25 == 0 else 5 * query
        _, _, chunked_loss = protonet_fitness(64, query_chunk=chunk)
        config = es.ESConfig(population=args.population)
        es_mem = compiled_memory(
            lambda p, k, e, f=chunked_loss, c=config: es.es_grad(f, p, k, e, config=c),
            params,
            jax.random.key(0),
            episode,
        )
        bp_mem = compiled_memory(jax.grad(plain_loss), params, episode)
        row = {
            "images": images,
            "es_mib": mib(es_mem["total_bytes"]),
            "backprop_mib": mib(bp_mem["total_bytes"]),
            "ratio": round(bp_mem["total_bytes"] / es_mem["total_bytes"], 2),
            "es_temp_mib": mib(es_mem["temp_bytes"]),
            "backprop_temp_mib": mib(bp_mem["temp_bytes"]),
            "temp_ratio": round(bp_mem["temp_bytes"] / max(es_mem["temp_bytes"], 1), 2),
        }
        print(row, flush=True)
        rows.append(row)
    write_result(
        "memory_vs_backprop",
        rows,
        config=vars(args),
        population=args.population,
        model="ProtoNet Conv4-64, 5-way 5-shot, growing queries",
    )


if __name__ == "__main__":
    main()
