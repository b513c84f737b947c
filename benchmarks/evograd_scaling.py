"""EvoGrad against the second-order hypergradient and a plain gradient step as the model grows.

One Meta-Weight-Net hyper-step (per-example weights from a small MLP reading the
unperturbed model's losses) for a Conv4 classifier of growing width on a batch of
32 Omniglot-sized images (28x28, 20 classes). For each program:

- FLOPs from XLA's cost analysis of the compiled step (what the program asks for);
- memory from XLA's compiled memory analysis (temporaries + arguments + outputs);
- wall time: median, min and max of ``--repeats`` calls after a warm-up.

EvoGrad is measured twice: regenerating each copy's noise from its key
(``materialise=False``, the default) and with the K copies vmapped
(``materialise=True``, the committed implementation before this change).
Inputs are random arrays of the right shapes: this measures cost, not accuracy.

  python -m benchmarks.evograd_scaling   # writes results/benchmarks/evograd_scaling.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from esmeta_core import protonet, report
from esmeta_core.evograd import evograd_hypergradient, unrolled_hypergradient
from esmeta_core.nets import Classifier, cross_entropy, init_mlp, mwn_example_weights
from esmeta_core.profiling import compiled_memory

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "evograd_scaling.json"


def problem(width: int, *, batch: int = 32, copies: int = 2):
    """The programs to compare, their arguments and the classifier's parameter count."""
    model = Classifier(width)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, 28, 28, 1)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 20, batch), jnp.int32)
    params = model.init(jax.random.key(0), x)["params"]
    weight_net = init_mlp(jax.random.key(1), [1, 32, 1])
    logits = lambda p, x: model.apply({"params": p}, x)

    def train_loss(p, wn, b):
        x, y, read = b
        return jnp.mean(mwn_example_weights(wn, read) * cross_entropy(logits(p, x), y))

    def val_loss(p, b):
        return cross_entropy(logits(p, b[0]), b[1]).mean()

    def with_reads(p, b):  # the weight net reads the unperturbed model's losses
        return (*b, jax.lax.stop_gradient(cross_entropy(logits(p, b[0]), b[1])))

    def evograd_step(materialise):
        def step(p, wn, key, b):
            return evograd_hypergradient(
                train_loss, val_loss, p, wn, key, with_reads(p, b), b,
                copies=copies, materialise=materialise,
            )[0]  # fmt: skip

        return step

    def second_order_step(p, wn, key, b):
        del key
        return unrolled_hypergradient(
            train_loss, val_loss, p, wn, with_reads(p, b), b, lr=0.1, steps=1
        )[0]

    def plain_step(p, wn, key, b):  # one ordinary gradient of the weighted training loss
        del key
        return jax.grad(train_loss)(p, wn, with_reads(p, b))

    programs = {
        "plain_gradient": plain_step,
        "evograd": evograd_step(False),
        "evograd_materialised": evograd_step(True),
        "second_order": second_order_step,
    }
    args = (params, weight_net, jax.random.key(2), (x, y))
    return programs, args, protonet.num_params(params)


def flops(fn, *args) -> float:
    """FLOPs of the compiled program from XLA's cost analysis."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost.get("flops", float("nan")))


def wall_times(fn, *args, repeats: int) -> list[float]:
    """Seconds per call of ``jit(fn)``, ``repeats`` calls after one warm-up (compile) call."""
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(jitted(*args))
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--widths", default="32,64,128,256,512")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for width in map(int, args.widths.split(",")):
        programs, inputs, n = problem(width)
        row = {"width": width, "params": n}
        for name, fn in programs.items():
            times = wall_times(fn, *inputs, repeats=args.repeats)
            row[name] = {
                "mib": round(compiled_memory(fn, *inputs)["total_bytes"] / 2**20, 2),
                "gflop": round(flops(fn, *inputs) / 1e9, 4),
                "step_s_median": round(statistics.median(times), 5),
                "step_s_min": round(min(times), 5),
                "step_s_max": round(max(times), 5),
            }
        e, s = row["evograd"], row["second_order"]
        row["second_order_over_evograd"] = {
            "flops": round(s["gflop"] / e["gflop"], 2),
            "memory": round(s["mib"] / e["mib"], 2),
            "time": round(s["step_s_median"] / e["step_s_median"], 2),
        }
        print(row, flush=True)
        rows.append(row)
    report.write_result(
        args.out,
        {
            "model": "Conv4 + linear head, batch 32, 28x28, 20 classes; MWN weight net [1, 32, 1]",
            "evograd": "K=2, sigma=0.001, tau=0.05, sign noise",
            "second_order": "1 unrolled SGD step (lr 0.1)",
            "rows": rows,
        },
        config=vars(args),
        command="python -m benchmarks.evograd_scaling",
        wall_s=time.perf_counter() - start,
    )
    print(f"wrote {args.out}")


PROGRAMS = {
    "plain_gradient": "plain gradient step",
    "evograd": "EvoGrad (noise regenerated)",
    "evograd_materialised": "EvoGrad (copies stored)",
    "second_order": "second order",
}


def markdown_table(result: dict) -> str:
    """The table of ``evograd_scaling.json``: memory, FLOPs and step time of each program."""
    headers = ["Conv4 width", "parameters", "program", "memory MiB", "GFLOP"]
    rows = [
        [
            r["width"],
            f"{r['params']:,}",
            label,
            r[key]["mib"],
            r[key]["gflop"],
            report.median_range(
                r[key]["step_s_median"], r[key]["step_s_min"], r[key]["step_s_max"]
            ),
        ]
        for r in result["rows"]
        for key, label in PROGRAMS.items()
        if key in r
    ]
    return report.table([*headers, "step s, median (min-max)"], rows)


if __name__ == "__main__":
    main()
