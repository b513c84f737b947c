"""Result files: provenance, one writer, and reading them back into tables.

Every result file of the project is written by :func:`write_result`, which
records the command that made it, its config, its wall time and its
provenance (commit, JAX version, devices, machine, date), so any number in the
README or the book can be traced to the code and the run that produced it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Published Omniglot accuracies (Vinyals split, 28x28, Conv4-64), in percent.
SNELL_2017 = {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9}


def git_commit() -> str:
    """The repository's ``HEAD`` commit, or ``"unknown"`` outside a git checkout."""
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Commit, JAX version, backend, devices, processes, machine and date of this run."""
    import jax

    return {
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _as_json(config: Any) -> Any:
    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if hasattr(config, "_asdict"):
        return config._asdict()
    raise TypeError(f"config must be a dataclass, a NamedTuple or a dict, got {type(config)}")


def write_result(
    path: str | Path,
    payload: dict[str, Any],
    *,
    config: Any = None,
    command: str,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """Writes one result file: command, config, provenance and wall time, then ``payload``.

    Args:
      path: the JSON file to write (its folder is created).
      payload: the results; its keys must not clash with the recorded ones.
      config: the run's settings (a dataclass, NamedTuple or dict).
      command: the command line that reproduces the file, e.g.
        ``"esmeta experiment evograd-mwn --out results/evograd"``.
      wall_s: the run's wall time in seconds.

    Returns:
      The dict written.

    Example:
      >>> import tempfile, pathlib
      >>> out = pathlib.Path(tempfile.mkdtemp()) / "r.json"
      >>> r = write_result(out, {"accuracy": 0.9}, command="esmeta experiment x", wall_s=1.0)
      >>> sorted(r)
      ['accuracy', 'command', 'config', 'provenance', 'wall_s']
    """
    recorded = {
        "command": command,
        "config": _as_json(config),
        "provenance": provenance(),
        "wall_s": None if wall_s is None else round(float(wall_s), 2),
    }
    clash = sorted(set(recorded) & set(payload))
    if clash:
        raise ValueError(f"payload keys {clash} clash with the recorded fields of a result file.")
    result = {**recorded, **payload}
    import jax

    if jax.process_index() != 0:  # a multi-process run: process 0 alone writes
        return result
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


RECORDED_FIELDS = ("command", "config", "provenance", "wall_s")
PROVENANCE_FIELDS = ("git_commit", "jax_version", "machine")


def result_files(root: str | Path = "results") -> list[Path]:
    """Every JSON result file under ``root``, sorted.

    A training run's ``config.json`` is left out: it is the run's input (the
    :class:`~esmeta_core.configs.TrainConfig` that its ``summary.json`` records),
    not a result.
    """
    return sorted(
        p
        for p in Path(root).rglob("*.json")
        if not (p.name == "config.json" and (p.parent / "summary.json").exists())
    )


def provenance_problems(result: dict[str, Any]) -> list[str]:
    """What a result file lacks of the fields :func:`write_result` records.

    A file whose provenance is marked ``reconstructed_from`` (written before the
    writer existed, see ``scripts/backfill_provenance.py``) may hold ``None``
    where the value was never recorded; any other file must hold every value.

    Example:
      >>> provenance_problems({"command": "x", "config": {}, "wall_s": 1.0})
      ['provenance']
      >>> provenance_problems({"command": None, "config": None, "wall_s": None,
      ...     "provenance": {"reconstructed_from": "git log", "git_commit": "abc",
      ...                    "jax_version": None, "machine": None}})
      []
    """
    problems = [k for k in RECORDED_FIELDS if k not in result]
    provenance = result.get("provenance")
    if not isinstance(provenance, dict):
        return problems
    problems += [f"provenance.{k}" for k in PROVENANCE_FIELDS if k not in provenance]
    if "reconstructed_from" not in provenance:
        problems += [
            f"{k} is None" for k in ("command", "wall_s") if k in result and result[k] is None
        ]
        problems += [
            f"provenance.{k} is None"
            for k in PROVENANCE_FIELDS
            if k in provenance and provenance[k] is None
        ]
    return problems


def command_line() -> str:
    """This process's command line as a user would type it (``esmeta ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("esmeta", "cli.py", "__main__.py"):
        argv[0] = "esmeta"
    return " ".join(argv)


def experiment_command(name: str, config: Any, out_dir: str | Path) -> str:
    """The ``esmeta experiment <name>`` call that gives ``config``: its fields off default.

    Example:
      >>> @dataclasses.dataclass(frozen=True)
      ... class C:
      ...     seeds: int = 3
      ...     sizes: tuple[int, ...] = (2, 10)
      >>> experiment_command("x", C(seeds=1, sizes=(4,)), "out")
      'esmeta experiment x --out out --seeds 1 --sizes 4'
    """
    parts = [f"esmeta experiment {name} --out {out_dir}"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value != field.default:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            parts.append(f"--{field.name.replace('_', '-')} {text}")
    return " ".join(parts)


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def run_rows(root: str | Path = "results/protonet") -> list[dict[str, Any]]:
    """One row per (run, test setting) from ``summary.json`` and ``eval.json`` files."""
    rows = []
    for summary_path in sorted(Path(root).glob("*/summary.json")):
        summary = load_json(summary_path)
        config = summary["config"]
        results = dict(summary["eval"])
        eval_path = summary_path.with_name("eval.json")
        if eval_path.exists():
            results.update(load_json(eval_path)["results"])
        for setting, r in results.items():
            rows.append(
                {
                    "run": summary_path.parent.name,
                    "method": config["method"],
                    "setting": setting,
                    "accuracy": 100 * r["accuracy"],
                    "ci95": 100 * r["ci95"],
                    "episodes": r["episodes"],
                    "steps": config["steps"],
                    "population": config["population"] if config["method"] == "es" else None,
                    "width": config["width"],
                    "separable": config.get("separable", False),
                    "train_way": config.get("train_way") or config["way"],
                    "trained_as": f"{config['way']}w{config['shot']}s",
                    "train_wall_s": summary["train_wall_s"],
                    "machine": summary["provenance"]["machine"],
                    "devices": summary["provenance"]["num_devices"],
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's results table: our rows beside Snell et al. (through :func:`table`)."""
    headers = [
        "run",
        "method",
        "test",
        "accuracy (95 % CI)",
        "Snell et al.",
        "trained as",
        "steps",
        "population",
        "width",
        "train wall time",
        "machine",
    ]
    return table(
        headers,
        [
            [
                f"`{r['run']}`",
                r["method"],
                r["setting"],
                f"{r['accuracy']:.2f} +- {r['ci95']:.2f}",
                SNELL_2017.get(r["setting"], "-"),
                f"{r['trained_as']} ({r['train_way']}-way)",
                r["steps"],
                r["population"] if r["population"] else "-",
                f"{r['width']} separable" if r.get("separable") else r["width"],
                f"{r['train_wall_s'] / 60:.1f} min",
                r["machine"],
            ]
            for r in rows
        ],
    )


# ----------------------------------------------------------------------------
# Training runs: metrics, curves, summary line.


def parse_metrics(text: str, *, path: str | Path = "metrics.jsonl") -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` text; a torn last line (a killed write) is dropped.

    Raises:
      ValueError: a line before the last is not a JSON object with a ``step`` (naming
        ``path`` and the line number).
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a JSON object with an integer step")
        except ValueError as e:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # torn last line: the write was cut off
            raise ValueError(f"{path} line {number} is not a metrics record ({e}).") from None
        rows.append(row)
    return rows


def trim_metrics(text: str, step: int, *, path: str | Path = "metrics.jsonl") -> str:
    """The ``metrics.jsonl`` text of a run resumed at ``step``: later records and a torn line go."""
    rows = parse_metrics(text, path=path)
    return "".join(json.dumps(row) + "\n" for row in rows if row["step"] <= step)


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """The run's ``metrics.jsonl`` as a list of dicts (a torn last line is left out)."""
    path = Path(workdir) / "metrics.jsonl"
    return parse_metrics(path.read_text(), path=path)


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start).

    Example:
      >>> smoothed([1.0, 3.0, 5.0, 7.0], 2).tolist()
      [1.0, 2.0, 4.0, 6.0]
    """
    values = np.asarray(values, float)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_learning_curve(workdirs: dict[str, str | Path], out: str | Path | None = None):
    """Training loss and accuracy against step for several runs; saves a PNG if ``out``."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, wd in workdirs.items():
        rows = read_metrics(wd)
        steps = np.array([r["step"] for r in rows])
        window = max(1, len(rows) // 20)
        ax_loss.plot(steps, smoothed([r["loss"] for r in rows], window), label=label)
        ax_acc.plot(steps, smoothed([r["accuracy"] for r in rows], window), label=label)
    ax_loss.set(xlabel="step", ylabel="training episode loss", yscale="log")
    ax_acc.set(xlabel="step", ylabel="training episode accuracy")
    ax_acc.legend()
    fig.tight_layout()
    if out is not None:
        fig.savefig(out, dpi=120)
    return fig


def summary_line(summary: dict[str, Any]) -> str:
    """The one line the main job ends with."""
    ((setting, result),) = summary["eval"].items()
    return (
        f"Test accuracy ({setting}, {result['episodes']} episodes, {summary['eval_split']} split): "
        f"{100 * result['accuracy']:.2f} % +- {100 * result['ci95']:.2f} (95 % CI)"
    )


# ----------------------------------------------------------------------------
# The README's tables from the committed result files.


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table.

    Example:
      >>> print(table(["a", "b"], [[1, 2]]))
      | a | b |
      | --- | --- |
      | 1 | 2 |
    """
    lines = [" | ".join(headers), " | ".join("---" for _ in headers)]
    lines += [" | ".join(str(cell) for cell in row) for row in rows]
    return "\n".join(f"| {line} |" for line in lines)


def _load_if_there(path: Path) -> dict[str, Any] | None:
    return load_json(path) if path.exists() else None


def results_tables(results: str | Path = "results") -> str:
    """Every table of the README, as Markdown, from the result files under ``results``.

    Sections whose result file is missing are left out.
    """
    results = Path(results)
    sections = [
        "## ProtoNet on Omniglot (results/protonet/*/summary.json, eval.json)\n\n"
        + markdown_table(run_rows(results / "protonet"))
    ]

    def add(name: str, title: Callable[[dict[str, Any]], str], headers, rows) -> None:
        data = _load_if_there(results / name)
        if data:
            sections.append(f"## {title(data)}\n\n" + table(headers, rows(data)))

    add(
        "protonet/population_sweep.json",
        lambda d: f"Population sweep ({d['budget']}; `{d['command']}`)",
        ["population", "steps", "5w5s accuracy", "train min"],
        lambda d: [
            [
                r["population"],
                r["steps"],
                f"{100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}",
                f"{r['train_wall_s'] / 60:.1f}",
            ]
            for r in d["rows"]
        ],
    )
    for name in ("protonet/capacity.json", "protonet/capacity-2000steps/capacity.json"):
        add(
            name,
            lambda d: (
                f"Backprop capacity by width ({d['config']['steps']} steps; `{d['command']}`)"
            ),
            ["width", "parameters", "5w5s accuracy", "train min"],
            lambda d: [
                [
                    f"{r['width']} separable" if r.get("separable") else r["width"],
                    f"{r['num_params']:,}",
                    f"{100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}",
                    f"{r['train_wall_s'] / 60:.1f}",
                ]
                for r in d["rows"]
            ],
        )
    add(
        "protonet/ablations.json",
        lambda d: f"ES ablations ({d['steps']} steps, two seeds per row; `{d['command']}`)",
        ["row", "changes", "accuracy per seed", "mean +- std"],
        lambda d: [
            [
                r["row"],
                ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-",
                ", ".join(f"{100 * s['accuracy']:.2f}" for s in r["seeds"]),
                f"{100 * r['mean']:.2f} +- {100 * r['std']:.2f}",
            ]
            for r in d["rows"]
        ],
    )
    add(
        "protonet/main_seeds.json",
        lambda d: f"Main preset over seeds (`{d['command']}`)",
        ["seed", "5w5s accuracy", "train wall time (s)"],
        lambda d: (
            [
                [
                    r["seed"],
                    f"{100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}",
                    r["train_wall_s"],
                ]
                for r in d["seeds"]
            ]
            + [["mean +- std", f"{100 * d['mean']:.2f} +- {100 * d['std']:.2f}", ""]]
        ),
    )

    def timing(t: dict[str, float]) -> str:
        return f"{t['median_s']} ({t['min_s']}-{t['max_s']})"

    add(
        "benchmarks/es_efficiency.json",
        lambda d: f"ES step time over forward time (`{d['command']}`)",
        ["N", "strategy", "ES step s, median (min-max)", "plain forward s", "ratio (range)"],
        lambda d: [
            [r["population"], r["strategy"], r["es_step_s"], r["plain_forward_s"], r["ratio"]]
            if "es_step" not in r  # a file from before issue 17: two repeats, no spread
            else [
                r["population"],
                r["strategy"],
                timing(r["es_step"]),
                timing(r["plain_forward"]),
                f"{r['ratio']} ({r['ratio_range'][0]}-{r['ratio_range'][1]})",
            ]
            for r in d["rows"]
        ],
    )
    add(
        "benchmarks/multihost_scaling.json",
        lambda d: f"ES steps/s over simulated devices and local processes (`{d['command']}`)",
        ["processes", "devices in all", "scheme", "steps/s, median (min-max)", "ratio to 1 device"],
        lambda d: [
            [
                r["processes"],
                r["devices"],
                r["scheme"],
                f"{r['steps_per_s_median']} ({r['steps_per_s_min']}-{r['steps_per_s_max']})",
                r["ratio_to_1_device"],
            ]
            for r in d["rows"]
        ],
    )
    add(
        "benchmarks/vs_evosax.json",
        lambda d: f"Against evosax OpenES (`{d['command']}`)",
        [
            "N",
            "esmeta step s, median (min-max)",
            "evosax step s, median (min-max)",
            "speed-up",
            "compiled MiB (esmeta / evosax)",
            "memory ratio",
            "peak RSS MiB (esmeta / evosax)",
            "RSS ratio",
        ],
        lambda d: [
            [
                r["population"],
                r["esmeta_step_s"] if "esmeta_step" not in r else timing(r["esmeta_step"]),
                r["evosax_step_s"] if "evosax_step" not in r else timing(r["evosax_step"]),
                f"{r['speedup']}x"
                + ("" if "speedup_range" not in r else " ({}-{})".format(*r["speedup_range"])),
                f"{r['esmeta_compiled_mib']} / {r['evosax_compiled_mib']}",
                f"{r['compiled_memory_ratio']}x",
                f"{r['esmeta_peak_rss_mib']} / {r['evosax_peak_rss_mib']}",
                f"{r['rss_ratio']}x",
            ]
            for r in d["rows"]
        ],
    )
    memory = _load_if_there(results / "benchmarks/memory_vs_backprop.json")
    if memory and "backprop_naive_mib" in memory["rows"][0]:
        small = next(k for k in memory["rows"][0] if k.startswith("es_chunk"))
        add(
            "benchmarks/memory_vs_backprop.json",
            lambda d: f"ES vs backprop memory (`{d['command']}`)",
            [
                "images per episode",
                "ES MiB",
                "ES MiB, smallest chunk",
                "backprop naive MiB",
                "backprop chunked + remat MiB",
                "ratio to naive",
                "ratio to chunked + remat",
            ],
            lambda d: [
                [
                    r["images"],
                    r["es_mib"],
                    r[small],
                    r["backprop_naive_mib"],
                    r["backprop_chunked_remat_mib"],
                    f"{r['ratio_naive']}x",
                    f"{r['ratio_chunked_remat']}x",
                ]
                for r in d["rows"]
            ],
        )
    else:  # a file from before issue 17: naive backprop only
        add(
            "benchmarks/memory_vs_backprop.json",
            lambda d: f"ES vs backprop memory (`{d['command']}`)",
            ["images per episode", "ES MiB", "backprop MiB", "ratio", "ES temporaries MiB"],
            lambda d: [
                [r["images"], r["es_mib"], r["backprop_mib"], f"{r['ratio']}x", r["es_temp_mib"]]
                for r in d["rows"]
            ],
        )
    programs = {
        "plain_gradient": "plain gradient step",
        "evograd": "EvoGrad (noise regenerated)",
        "evograd_materialised": "EvoGrad (copies stored)",
        "second_order": "second order",
    }
    add(
        "benchmarks/evograd_scaling.json",
        lambda d: f"EvoGrad vs second-order hypergradient (`{d['command']}`)",
        ["Conv4 width", "parameters", "program", "memory MiB", "GFLOP", "step s, median (min-max)"],
        lambda d: [
            [
                r["width"],
                f"{r['params']:,}",
                label,
                r[key]["mib"],
                r[key]["gflop"],
                f"{r[key]['step_s_median']} ({r[key]['step_s_min']}-{r[key]['step_s_max']})",
            ]
            for r in d["rows"]
            for key, label in programs.items()
            if key in r
        ],
    )
    add(
        "evograd/rotation.json",
        lambda d: f"EvoGrad rotation (`{d['command']}`)",
        ["training", "final angle", "test accuracy"],
        lambda d: [
            [
                k,
                f"{s['final_angle_mean']:.1f} +- {s['final_angle_std']:.1f}",
                f"{100 * s['test_accuracy_mean']:.1f} +- {100 * s['test_accuracy_std']:.1f} %",
            ]
            for k, s in d["summary"].items()
        ],
    )
    add(
        "evograd/mwn.json",
        lambda d: f"EvoGrad Meta-Weight-Net (`{d['command']}`)",
        ["noise", "method", "test accuracy"],
        lambda d: [
            [
                r["noise"],
                r["method"],
                f"{100 * r['test_accuracy_mean']:.1f} +- {100 * r['test_accuracy_std']:.1f} %",
            ]
            for r in d["rows"]
        ],
    )
    add(
        "vsml/generalisation.json",
        lambda d: (
            "VS-ML: meta-trained on Omniglot, tested on unseen digits "
            "(results/vsml/generalisation.json, gathered from results/vsml/parts/)"
        ),
        VSML_HEADERS,
        vsml_rows,
    )
    add(
        "vsml/long.json",
        lambda d: f"VS-ML, one long ES run (`{d['command']}`)",
        VSML_LONG_HEADERS,
        vsml_long_rows,
    )
    add(
        "vsml/invariance.json",
        lambda d: f"VS-ML cells unchanged on other tasks (`{d['command']}`)",
        VSML_INVARIANCE_HEADERS,
        vsml_invariance_rows,
    )
    return "\n\n".join(sections)


VSML_HEADERS = (
    "learner",
    "digits (unseen), last 10 of 50",
    "per seed",
    "digits, first 10",
    "Omniglot, last 10",
    "meta-training per seed",
)
VSML_INVARIANCE_HEADERS = (
    "setting", "inputs", "classes", "examples", "VS-ML (per seed)", "online SGD", "online Adam",
)  # fmt: skip


def vsml_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the VS-ML table from a gathered ``vsml/generalisation.json``: per learner,
    digits accuracy over the last 10 of 50 examples (mean +- std over seeds, each seed),
    over the first 10, Omniglot's, and the meta-training wall time per seed."""
    rows = []
    for r in result.get("learners", {}).values():
        if "digits_last10_per_seed" not in r:  # a file of the format before the parts
            continue
        per_seed = [100 * a for a in r["digits_last10_per_seed"]]
        spread = f" +- {np.std(per_seed):.1f}" if len(per_seed) > 1 else ""
        walls = r["train_wall_s_per_seed"]
        rows.append(
            [
                r["name"],
                f"{np.mean(per_seed):.1f}{spread} %",
                ", ".join(f"{a:.1f}" for a in per_seed),
                f"{100 * r['digits_first10']:.1f} %",
                f"{100 * r['omniglot_last10']:.1f} %",
                f"{np.mean(walls) / 60:.1f} min" if max(walls) > 1 else "-",
            ]
        )
    return rows


VSML_LONG_HEADERS = ("learner", "digits, first 10 of 50", "digits, last 10 of 50")


def vsml_long_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the long-run table from ``vsml/long.json``: VS-ML by ES against tuned SGD, Adam."""
    steps, minutes = result["config"]["steps"], result["train_wall_s"] / 60
    rows = [[f"VS-ML, ES from scratch, {steps} steps ({minutes:.0f} min)", "vsml"]]
    rows += [["online SGD (tuned lr)", "sgd"], ["online Adam (tuned lr)", "adam"]]
    return [
        [
            name,
            f"{100 * result[f'{key}_digits_first10']:.1f} %",
            f"{100 * result[f'{key}_digits_last10']:.1f} %",
        ]
        for name, key in rows
    ]


def vsml_invariance_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows of the invariance table from ``vsml/invariance.json`` (last 10 examples)."""
    rows = []
    for name, r in result["settings"].items():
        seeds = ", ".join(f"{100 * a:.1f}" for a in r["VS-ML"]["last10_per_seed"])
        rows.append(
            [
                name,
                str(r["n_in"]),
                str(r["way"]),
                str(r["length"]),
                f"{100 * r['VS-ML']['last10']:.1f} % ({seeds})",
                f"{100 * r['SGD']['last10']:.1f} %",
                f"{100 * r['Adam']['last10']:.1f} %",
            ]
        )
    return rows
