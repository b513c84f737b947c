"""ES steps/s over simulated devices and local processes, and bytes moved per step.

One ES gradient step (``es.make_es_grad``) of a small ProtoNet (Conv4, width 8, one
real 5-way 5-shot Omniglot episode) at 1, 2, 4 and 8 simulated CPU devices in one
process, and at 2 processes (gloo over 127.0.0.1) with 1, 2 and 4 devices each, for
both communication schemes (``psum``, ``regenerate``). Each setting runs in fresh
processes (the device count is fixed when JAX starts); throughput is timed in
``--repeats`` blocks of ``--steps`` steps after a warm-up, reported as median and
min-max steps/s and as the ratio of medians to 1 device of the same scheme.

Bytes per step come from the compiled program (8 devices, one process): the result
sizes of its cross-device collectives (all-reduce, all-gather, ...), against the
model: ``psum`` all-reduces ``D`` floats and all-gathers ``N`` losses, ``regenerate``
all-gathers the ``N`` losses only.

On a machine with fewer cores than simulated devices, devices share cores: the
ratios measure overheads of sharding and communication, not the speed-up of real
chips. See the README section "More than one host".

  python -m benchmarks.multihost_scaling   # writes results/benchmarks/multihost_scaling.json

Finished settings are kept in runs/multihost_scaling/ (same options: reused), so a
run cut short (e.g. by a time limit) continues when the same command is run again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ((1, 1), (1, 2), (1, 4), (1, 8), (2, 1), (2, 2), (2, 4))  # (processes, devices each)
DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4}
DTYPE_BYTES.update({"bf16": 2, "f16": 2, "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1})
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collective_bytes(hlo_text: str) -> dict[str, int]:
    """Bytes of the results of each kind of cross-device collective in an HLO module's text.

    Counts each instruction once (``*-start`` of an async pair, not its ``*-done``).
    """
    out = dict.fromkeys(COLLECTIVES, 0)
    for line in hlo_text.splitlines():
        if "=" not in line:
            continue
        lhs, rhs = line.split("=", 1)
        for kind in COLLECTIVES:
            match = re.match(rf"\s*(.*?)\s{kind}(-start)?\(", rhs)
            if match:
                shapes = re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", match.group(1))
                for dtype, dims in shapes:
                    size = 1
                    for d in filter(None, dims.split(",")):
                        size *= int(d)
                    out[kind] += size * DTYPE_BYTES.get(dtype, 4)
                break
    return out


def _problem(width: int, population: int, communication: str):
    import jax

    from esmeta_core import es, protonet, sharding
    from esmeta_core.data import load_split, sample_episodes

    model = protonet.Conv4(width)
    params = protonet.init_params(jax.random.key(0), model)
    images = load_split("train").images
    episode = sample_episodes(images, seed=0, step=0, batch=1, way=5, shot=5, query=5)
    episode = jax.tree.map(lambda x: x[0], episode)

    def loss_fn(p, e):
        return protonet.episode_loss(model, p, e, way=5)

    mesh = sharding.population_mesh()
    config = es.ESConfig(population=population, sigma=0.05, chunk_size=4)
    config = config._replace(communication=communication)
    grad_fn = es.make_es_grad(loss_fn, config=config, mesh=mesh)
    inputs = sharding.replicate((params, jax.random.key(1), episode), mesh)
    return grad_fn, inputs, protonet.num_params(params)


def worker(args: argparse.Namespace) -> None:
    """Times both schemes on this process's mesh; process 0 prints one JSON line."""
    if args.num_processes > 1:
        from esmeta_core.sharding import initialize_distributed

        initialize_distributed(
            f"127.0.0.1:{args.port}",
            args.num_processes,
            args.process_id,
            local_device_count=args.devices,
        )
    else:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax

    out = {"processes": jax.process_count(), "devices": jax.device_count(), "schemes": {}}
    for scheme in ("psum", "regenerate"):
        grad_fn, inputs, num_params = _problem(args.width, args.population, scheme)
        entry = {"num_params": num_params}
        if args.hlo:
            hlo = grad_fn.lower(*inputs).compile().as_text()
            entry["collective_bytes"] = collective_bytes(hlo)
        jax.block_until_ready(grad_fn(*inputs))  # compile and warm up
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(args.steps):
                result = grad_fn(*inputs)
            jax.block_until_ready(result)
            rates.append(args.steps / (time.perf_counter() - start))
        entry["steps_per_s"] = rates
        out["schemes"][scheme] = entry
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(out), flush=True)


def run_setting(processes: int, devices: int, args: argparse.Namespace, *, hlo: bool) -> dict:
    """Runs one (processes, devices each) setting in fresh processes; returns process 0's JSON."""
    from esmeta_core.distributed import free_port, launch, wait_all

    port = free_port()
    common = ["-m", "benchmarks.multihost_scaling", "--worker"]
    common += ["--devices", str(devices), "--num-processes", str(processes), "--port", str(port)]
    common += ["--repeats", str(args.repeats), "--steps", str(args.steps)]
    common += ["--width", str(args.width), "--population", str(args.population)]
    common += ["--hlo"] if hlo else []
    procs = [launch([*common, "--process-id", rank], cwd=ROOT) for rank in range(processes)]
    out, _ = wait_all(procs, timeout=600)[0]  # LaunchError (with the output) if one fails
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def summarise(runs: list[dict]) -> list[dict]:
    """Rows with median and min-max steps/s and the ratio of medians to 1 device."""
    rows = []
    for run in runs:
        for scheme, entry in run["schemes"].items():
            rates = entry["steps_per_s"]
            rows.append(
                {
                    "processes": run["processes"],
                    "devices": run["devices"],
                    "scheme": scheme,
                    "steps_per_s_median": round(statistics.median(rates), 3),
                    "steps_per_s_min": round(min(rates), 3),
                    "steps_per_s_max": round(max(rates), 3),
                    "steps_per_s": [round(r, 3) for r in rates],
                }
            )
    for row in rows:
        one = [r for r in rows if (r["processes"], r["devices"]) == (1, 1)]
        base = next(r for r in one if r["scheme"] == row["scheme"])
        row["ratio_to_1_device"] = round(row["steps_per_s_median"] / base["steps_per_s_median"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--hlo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed block")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "results/benchmarks/multihost_scaling.json"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    start = time.perf_counter()
    runs = []
    options = {k: getattr(args, k) for k in ("repeats", "steps", "width", "population")}
    for processes, devices in SETTINGS:
        # Each finished setting is kept under runs/, so that a run stopped by the CPU lock's
        # time limit goes on where it stopped (rerun the same command).
        cache = ROOT / "runs" / "multihost_scaling" / f"{processes}x{devices}.json"
        saved = json.loads(cache.read_text()) if cache.exists() else None
        if saved is not None and saved["options"] == options:
            runs.append(saved["run"])
        else:
            hlo = (processes, devices) == (1, 8)
            runs.append(run_setting(processes, devices, args, hlo=hlo))
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({"options": options, "run": runs[-1]}))
        print(json.dumps({k: runs[-1][k] for k in ("processes", "devices")}), flush=True)
    hlo_run = next(r for r in runs if r["processes"] == 1 and r["devices"] == 8)
    num_params = hlo_run["schemes"]["psum"]["num_params"]
    bytes_per_step = {
        scheme: {
            "collective_result_bytes": entry["collective_bytes"],
            "total": sum(entry["collective_bytes"].values()),
        }
        for scheme, entry in hlo_run["schemes"].items()
    }
    model = {
        "D": num_params,
        "N": args.population,
        "psum_expected": 4 * num_params + 4 * args.population,
        "regenerate_expected": 4 * args.population,
        "note": "f32: psum all-reduces D floats and all-gathers N losses; regenerate "
        "all-gathers the N losses only (result sizes of one device's collectives).",
    }
    from esmeta_core.report import write_result  # provenance: this orchestrating process

    write_result(
        args.out,
        {
            "rows": summarise(runs),
            "bytes_per_step": bytes_per_step,
            "bytes_model": model,
            "cpu_cores": os.cpu_count(),
            "note": "simulated CPU devices share this machine's cores; ratios show "
            "sharding/communication overhead, not real-chip speed-up",
        },
        config={k: getattr(args, k) for k in ("repeats", "steps", "width", "population")}
        | {"settings": [list(s) for s in SETTINGS], "way": 5, "shot": 5, "query": 5},
        command="python -m benchmarks.multihost_scaling",
        wall_s=time.perf_counter() - start,
    )
    print(f"Wrote {args.out}")


def markdown_table(result: dict) -> str:
    """The table of ``multihost_scaling.json``: ES steps/s per (processes, devices, scheme)."""
    from esmeta_core.report import median_range, table

    headers = ["processes", "devices in all", "scheme", "steps/s, median (min-max)"]
    rows = [
        [
            r["processes"],
            r["devices"],
            r["scheme"],
            median_range(r["steps_per_s_median"], r["steps_per_s_min"], r["steps_per_s_max"]),
            r["ratio_to_1_device"],
        ]
        for r in result["rows"]
    ]
    return table([*headers, "ratio to 1 device"], rows)


if __name__ == "__main__":
    main()
