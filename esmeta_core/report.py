"""Reading committed result files into tables (for the README and the book)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Published Omniglot accuracies (Vinyals split, 28x28, Conv4-64), in percent.
SNELL_2017 = {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0, "20w5s": 98.9}
SHENG_HE_2022 = {"es_5w5s": 98.4, "backprop_5w5s": 99.6, "es_5w5s_large_population": 99.1}
SETTINGS = ("5w1s", "5w5s", "20w1s", "20w5s")


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


# ----------------------------------------------------------------------------
# Provenance and the one result writer (the experiments protocol). Provisional
# copy on the vsml branch with the protocol's signatures; main's version wins.


def provenance() -> dict[str, Any]:
    """Commit, JAX version, backend, devices, processes, machine and date."""
    import datetime
    import os
    import platform
    import subprocess

    import jax

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "git_commit": commit,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "processes": jax.process_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(
    path: str | Path,
    payload: dict[str, Any],
    *,
    config: Any = None,
    command: str,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """Writes ``{"command", "config", "provenance", "wall_s", **payload}`` as JSON."""
    import dataclasses

    record = {
        "command": command,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config,
        "provenance": provenance(),
        "wall_s": None if wall_s is None else round(wall_s, 1),
        **payload,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    return record
