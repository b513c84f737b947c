"""Peak memory of the ES gradient against ``jax.grad`` as a ProtoNet episode grows.

The paper's claim (Sheng & He 2022): ES needs "as much as 40 times less memory
than automatic differentiation", and its memory does not grow with task
length. Here a 5-way 5-shot episode gets more and more queries (100 to
20,000+ images). ES evaluates it forward-only, queries in chunks of 25
(``query_chunk``; also with the smallest chunk, 5), members one at a time.
Backprop is measured two ways, so that the comparison is between equally
careful programs:

- **naive**: ``jax.grad`` of the standard (unchunked) episode loss;
- **chunked + remat**: ``jax.grad`` of the *same* chunked loss ES evaluates,
  with every chunk wrapped in ``jax.checkpoint`` (rematerialised in the
  backward pass), so only one chunk's activations are alive at a time.

Memory is XLA's compiled analysis (temporaries + arguments + outputs), which
is deterministic on CPU.

  python -m benchmarks.memory_vs_backprop   # writes results/benchmarks/memory_vs_backprop.json
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.common import (
    compiled_memory,
    mib,
    protonet_fitness,
    synthetic_episode,
    write_result,
)
from esmeta_core import es, protonet


def remat_chunked_loss(model: protonet.Conv4, *, way: int, chunk: int):
    """The chunked episode loss of :mod:`esmeta_core.protonet`, each chunk under ``jax.checkpoint``.

    Same maths as ``protonet.episode_loss(..., query_chunk=chunk)``: every chunk
    embeds the support with its queries (batch norm uses support statistics) and
    adds its summed cross-entropy; the mean is over all queries.
    """

    def loss(params, episode):
        support, support_labels, query, query_labels = episode
        n_support = support.shape[0]

        @jax.checkpoint
        def chunk_nll(params, q, y):  # q: f32[chunk, 28, 28, 1]
            z = model.apply({"params": params}, jnp.concatenate([support, q]), stats_rows=n_support)
            protos = protonet.prototypes(z[:n_support], support_labels, way)  # [way, d]
            log_probs = jax.nn.log_softmax(-protonet.squared_distances(z[n_support:], protos))
            return -jnp.take_along_axis(log_probs, y[:, None], axis=1).sum()

        qs = query.reshape(-1, chunk, *query.shape[1:])  # [n_chunks, chunk, 28, 28, 1]
        ys = query_labels.reshape(-1, chunk)
        total, _ = lax.scan(lambda acc, xy: (acc + chunk_nll(params, *xy), None), 0.0, (qs, ys))
        return total / query.shape[0]

    return loss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", default="15,60,240,960,4000")  # per class, 5 classes
    parser.add_argument("--population", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=25)
    parser.add_argument("--smallest-chunk", type=int, default=5)
    args = parser.parse_args()
    model, params, plain_loss = protonet_fitness(64)
    config = es.ESConfig(population=args.population)
    # The remat loss is the same function as the plain one (checked on 75 queries).
    check = synthetic_episode(5, 5, 15)
    same = remat_chunked_loss(model, way=5, chunk=25)(params, check)
    assert abs(float(same) - float(plain_loss(params, check))) < 1e-4, (same, plain_loss)
    rows = []
    for query in map(int, args.queries.split(",")):
        episode = protonet.episode_spec(5, 5, query)
        images = 5 * 5 + 5 * query
        chunk = args.chunk if (5 * query) % args.chunk == 0 else 5 * query

        def measure(query_chunk, episode=episode):
            _, _, chunked = protonet_fitness(64, query_chunk=query_chunk)
            return es.es_vs_backprop_memory(chunked, plain_loss, params, episode, config=config)

        measured = measure(chunk)
        es_bytes, naive = measured["es_bytes"], measured["backprop_bytes"]
        es_small_bytes = measure(args.smallest_chunk)["es_bytes"]
        remat = compiled_memory(
            jax.grad(remat_chunked_loss(model, way=5, chunk=chunk)), params, episode
        )["total_bytes"]
        row = {
            "images": images,
            "query_chunk": chunk,
            "es_mib": mib(es_bytes),
            f"es_chunk{args.smallest_chunk}_mib": mib(es_small_bytes),
            "backprop_naive_mib": mib(naive),
            "backprop_chunked_remat_mib": mib(remat),
            "ratio_naive": round(naive / es_bytes, 2),
            "ratio_chunked_remat": round(remat / es_bytes, 2),
        }
        print(row, flush=True)
        rows.append(row)
    write_result(
        "memory_vs_backprop",
        rows,
        config=vars(args),
        population=args.population,
        model="ProtoNet Conv4-64, 5-way 5-shot, growing queries",
        memory="XLA compiled memory analysis: temporaries + arguments + outputs",
    )


def naive_crossing(result: dict, ratio: float = 40.0) -> float:
    """Images per episode at which naive backprop needs ``ratio`` times ES's memory.

    Each memory is interpolated linearly in the images between the two rows around the
    crossing, ``m(n) = m_a + (n - n_a) (m_b - m_a) / (n_b - n_a)``, and
    ``naive(n) = ratio * es(n)`` solved for ``n``.

    Example:
      >>> rows = [{"images": 100, "es_mib": 10.0, "backprop_naive_mib": 100.0},
      ...         {"images": 200, "es_mib": 10.0, "backprop_naive_mib": 500.0}]
      >>> naive_crossing({"rows": rows})
      175.0
    """
    rows = sorted(result["rows"], key=lambda r: r["images"])
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        gap_a = a["backprop_naive_mib"] - ratio * a["es_mib"]
        gap_b = b["backprop_naive_mib"] - ratio * b["es_mib"]
        if gap_a < 0 <= gap_b:
            return a["images"] + (b["images"] - a["images"]) * -gap_a / (gap_b - gap_a)
    raise ValueError(f"naive backprop's memory never crosses {ratio} times ES's in these rows")


def markdown_table(result: dict) -> str:
    """The table of ``memory_vs_backprop.json``: compiled memory of ES and backprop per
    episode size, and their ratios."""
    from esmeta_core.report import table

    small = next(k for k in result["rows"][0] if k.startswith("es_chunk"))  # es_chunk<c>_mib
    headers = [
        "images per episode", "ES MiB", "ES MiB, smallest chunk", "backprop naive MiB",
        "backprop chunked + remat MiB", "ratio to naive", "ratio to chunked + remat",
    ]  # fmt: skip
    rows = [
        [
            r["images"],
            r["es_mib"],
            r[small],
            r["backprop_naive_mib"],
            r["backprop_chunked_remat_mib"],
            f"{r['ratio_naive']}x",
            f"{r['ratio_chunked_remat']}x",
        ]
        for r in result["rows"]
    ]
    crossing = (
        f"\n\nNaive backprop needs 40x the memory of ES (the paper's figure) from about "
        f"{round(naive_crossing(result), -1):.0f} images per episode (each memory "
        "interpolated linearly between the rows around it)."
    )
    return table(headers, rows) + crossing


if __name__ == "__main__":
    main()
