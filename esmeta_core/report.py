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
from pathlib import Path
from typing import Any

# Published Omniglot accuracies (Vinyals split, 28x28, Conv4-64), in percent.
SNELL_2017 = {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9}
SHENG_HE_2022 = {"es_5w5s": 98.4, "backprop_5w5s": 99.6, "es_5w5s_large_population": 99.1}
SETTINGS = ("5w1s", "5w5s", "20w1s", "20w5s")


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    return result


def command_line() -> str:
    """This process's command line as a user would type it (``esmeta ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("esmeta", "cli.py", "__main__.py"):
        argv[0] = "esmeta"
    return " ".join(argv)


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
                    "train_way": config.get("train_way") or config["way"],
                    "trained_as": f"{config['way']}w{config['shot']}s",
                    "train_wall_s": summary["train_wall_s"],
                    "machine": summary["machine"],
                    "devices": summary["num_devices"],
                }
            )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's results table: our rows beside Snell et al. and Sheng & He."""
    lines = [
        "| run | method | test | accuracy (95 % CI) | Snell et al. | trained as | steps | "
        "population | width | train wall time | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        population = r["population"] if r["population"] else "-"
        lines.append(
            f"| `{r['run']}` | {r['method']} | {r['setting']} | "
            f"{r['accuracy']:.2f} +- {r['ci95']:.2f} | {SNELL_2017.get(r['setting'], '-')} | "
            f"{r['trained_as']} ({r['train_way']}-way) | {r['steps']} | {population} | "
            f"{r['width']} | {r['train_wall_s'] / 60:.1f} min | {r['machine']} |"
        )
    return "\n".join(lines)
