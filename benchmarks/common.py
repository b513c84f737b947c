"""Shared pieces of the benchmarks: the ProtoNet fitness, timing, memory, result files."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from esmeta_core import protonet, report, train_step
from esmeta_core.configs import TrainConfig
from esmeta_core.data import Episode
from esmeta_core.profiling import compiled_memory

_START = time.perf_counter()  # the benchmark process started about here
RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks"


def synthetic_episode(way: int, shot: int, query: int, seed: int = 0) -> Episode:
    """An episode of the right shapes for timing and memory only (no claim on accuracy)."""
    rng = np.random.default_rng(seed)
    return Episode(
        support=rng.random((way * shot, 28, 28, 1), np.float32),
        support_labels=np.repeat(np.arange(way), shot).astype(np.int32),
        query=rng.random((way * query, 28, 28, 1), np.float32),
        query_labels=np.repeat(np.arange(way), query).astype(np.int32),
    )


def protonet_fitness(width: int = 64, *, way: int = 5, query_chunk: int | None = None):
    """``(model, params, loss_fn)`` with ``loss_fn(params, episode)`` the training's episode loss.

    :func:`esmeta_core.train_step.make_episode_loss` of a Conv4-``width`` on ``way``
    classes (one episode, no batch axis).
    """
    config = TrainConfig(width=width, way=way)
    model = train_step.model_for(config)
    params = protonet.init_params(jax.random.key(0), model)
    return model, params, train_step.make_episode_loss(config, model, query_chunk=query_chunk)


def time_call(fn, *args, repeats: int = 3) -> float:
    """Median wall time in seconds of ``fn(*args)`` after one warm-up (compile) call."""
    return statistics.median(time_calls(fn, *args, repeats=repeats))


def time_calls(fn, *args, repeats: int = 5) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn(*args)`` after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def spread(times: list[float]) -> dict[str, float]:
    """Median, min and max of timings, rounded for a table."""
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "repeats": len(times),
    }


def peak_rss_bytes() -> int:
    """This process's peak resident set size."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def write_result(
    name: str, rows: list[dict[str, Any]], *, config: Any = None, **extra: Any
) -> Path:
    """Writes ``results/benchmarks/<name>.json`` through :func:`esmeta_core.report.write_result`.

    ``config`` is the benchmark's settings (its parsed arguments); the wall time
    is counted from the import of this module, i.e. the whole benchmark process.
    """
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, **extra, "rows": rows}
    command = " ".join(["python -m benchmarks." + Path(sys.argv[0]).stem, *sys.argv[1:]])
    report.write_result(
        path, payload, config=config, command=command, wall_s=time.perf_counter() - _START
    )
    print(f"wrote {path}")
    return path


def mib(n: float) -> float:
    return round(n / 2**20, 2)


__all__ = [
    "compiled_memory",
    "mib",
    "peak_rss_bytes",
    "protonet_fitness",
    "synthetic_episode",
    "spread",
    "time_call",
    "time_calls",
    "write_result",
]
