"""esmeta's ES step against evosax's OpenES on the same fitness and population.

Both do one full generation (perturb, evaluate with ``lax.map``, shape by
centered ranks, Adam update) on a ProtoNet 5-way 1-shot 1-query episode
(10 images per member, Conv4-64, D = 111,936), jitted end to end. Time is the
median, min and max of 5 steps after a warm-up; memory is XLA's compiled analysis and, in a fresh
process per case, the peak RSS.

  python -m benchmarks.vs_evosax     # writes results/benchmarks/vs_evosax.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import jax
import optax
from jax import lax

from benchmarks.common import (
    compiled_memory,
    mib,
    peak_rss_bytes,
    protonet_fitness,
    spread,
    synthetic_episode,
    time_calls,
    write_result,
)
from esmeta_core import es


def make_steps(population: int, sigma: float = 0.01, lr: float = 1e-3):
    _, params, loss_fn = protonet_fitness(64, way=5)
    episode = synthetic_episode(5, 1, 1)
    optimizer = optax.adam(lr)

    config = es.ESConfig(population=population, sigma=sigma)

    def esmeta_step(params, opt_state, key, episode):
        grads, _ = es.es_grad(loss_fn, params, key, episode, config=config)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    from evosax.algorithms import Open_ES

    strategy = Open_ES(
        population_size=population,
        solution=params,
        optimizer=optimizer,
        std_schedule=optax.constant_schedule(sigma),
    )
    es_params = strategy.default_params

    def evosax_step(state, key, episode):
        population_tree, state = strategy.ask(key, state, es_params)
        fitness = lax.map(lambda p: loss_fn(p, episode), population_tree)
        state, _ = strategy.tell(key, population_tree, fitness, state, es_params)
        return state

    ours = (esmeta_step, (params, optimizer.init(params), jax.random.key(0), episode))
    evosax_state = strategy.init(jax.random.key(0), params, es_params)
    theirs = (evosax_step, (evosax_state, jax.random.key(0), episode))
    return ours, theirs


def measure_one(library: str, population: int, repeats: int) -> dict:
    ours, theirs = make_steps(population)
    fn, args = ours if library == "esmeta" else theirs
    memory = compiled_memory(fn, *args)
    step = spread(time_calls(jax.jit(fn), *args, repeats=repeats))
    return {"step": step, **memory, "peak_rss_bytes": peak_rss_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--populations", default="256,1024,4096")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # library population
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.repeats)))
        return
    rows = []
    for population in map(int, args.populations.split(",")):
        result = {}
        for library in ("esmeta", "evosax"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.vs_evosax",
                    "--one",
                    library,
                    str(population),
                    "--repeats",
                    str(args.repeats),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            result[library] = json.loads(out.stdout.strip().splitlines()[-1])
        ours, theirs = result["esmeta"], result["evosax"]
        row = {
            "population": population,
            "esmeta_step": ours["step"],
            "evosax_step": theirs["step"],
            # median over median; the range pairs each library's fastest with the other's slowest
            "speedup": round(theirs["step"]["median_s"] / ours["step"]["median_s"], 2),
            "speedup_range": [
                round(theirs["step"]["min_s"] / ours["step"]["max_s"], 2),
                round(theirs["step"]["max_s"] / ours["step"]["min_s"], 2),
            ],
            "esmeta_compiled_mib": mib(ours["total_bytes"]),
            "evosax_compiled_mib": mib(theirs["total_bytes"]),
            "compiled_memory_ratio": round(theirs["total_bytes"] / ours["total_bytes"], 1),
            "esmeta_peak_rss_mib": mib(ours["peak_rss_bytes"]),
            "evosax_peak_rss_mib": mib(theirs["peak_rss_bytes"]),
            "rss_ratio": round(theirs["peak_rss_bytes"] / ours["peak_rss_bytes"], 2),
        }
        print(row, flush=True)
        rows.append(row)
    import evosax

    write_result(
        "vs_evosax",
        rows,
        config=vars(args),
        timing=f"{args.repeats} repeats after one warm-up call: median, min, max",
        evosax_version=getattr(evosax, "__version__", "unknown"),
        fitness="ProtoNet Conv4-64, 5-way 1-shot 1-query, D=111936",
    )


def markdown_table(result: dict) -> str:
    """The table of ``vs_evosax.json``: step times, speed-up, compiled memory and peak RSS."""
    from esmeta_core.report import median_range, table

    def timing(t: dict) -> str:
        return median_range(t["median_s"], t["min_s"], t["max_s"])

    headers = [
        "N", "esmeta step s, median (min-max)", "evosax step s, median (min-max)", "speed-up",
        "compiled MiB (esmeta / evosax)", "memory ratio", "peak RSS MiB (esmeta / evosax)",
        "RSS ratio",
    ]  # fmt: skip
    rows = [
        [
            r["population"],
            timing(r["esmeta_step"]),
            timing(r["evosax_step"]),
            f"{r['speedup']}x ({r['speedup_range'][0]}-{r['speedup_range'][1]})",
            f"{r['esmeta_compiled_mib']} / {r['evosax_compiled_mib']}",
            f"{r['compiled_memory_ratio']}x",
            f"{r['esmeta_peak_rss_mib']} / {r['evosax_peak_rss_mib']}",
            f"{r['rss_ratio']}x",
        ]
        for r in result["rows"]
    ]
    return table(headers, rows)


if __name__ == "__main__":
    main()
