"""The README's figure and headline table, from the committed result files.

    python scripts/readme_figure.py            # writes both
    python scripts/readme_figure.py --check    # exit 1 if the README's table is out of date

The figure, ``docs/figures/es_vs_backprop.png``: 5-way 5-shot accuracy against training
wall time for ES (``main``, ``long``) and backprop on the same 2-core CPU; lines are the
training episodes' accuracy (a running mean of ``metrics.jsonl``), markers the test
accuracy on 1000 episodes (``eval.json``) at the run's training time. The table is written
between the ``headline-table`` markers of ``README.md``; ``tests/test_readme.py``
regenerates it and fails when the README's copy differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIGURE = ROOT / "docs" / "figures" / "es_vs_backprop.png"

# The result files, relative to the repository root (one place to change if runs move).
BACKPROP_RUN = "results/protonet/backprop-5w5s"
MAIN_RUN = "results/protonet/main"
LONG_RUN = "results/protonet/long"
MAIN_SEEDS = "results/protonet/main_seeds.json"
EVOGRAD_MWN = "results/evograd/mwn.json"
EVOGRAD_ROTATION = "results/evograd/rotation.json"
VSML_GENERALISATION = "results/vsml/generalisation.json"
MEMORY_VS_BACKPROP = "results/benchmarks/memory_vs_backprop.json"
VS_EVOSAX = "results/benchmarks/vs_evosax.json"

START, END = "<!-- headline-table: start -->", "<!-- headline-table: end -->"


def load(relative: str, root: Path = ROOT) -> Any:
    """The JSON file at ``root / relative``."""
    return json.loads((root / relative).read_text())


def run_accuracy(run: str, root: Path = ROOT, setting: str = "5w5s") -> tuple[float, float]:
    """``(accuracy %, 95 % CI half-width %)`` of a run for one setting: from its
    ``eval.json``, or from ``summary.json`` (the training-time test) where it has none."""
    if (root / run / "eval.json").is_file():
        result = load(f"{run}/eval.json", root)["results"][setting]
    else:
        result = load(f"{run}/summary.json", root)["eval"][setting]
    return 100 * result["accuracy"], 100 * result["ci95"]


def train_minutes(run: str, root: Path = ROOT) -> float:
    """Training wall time of a run (``summary.json``), in minutes."""
    return load(f"{run}/summary.json", root)["train_wall_s"] / 60


def _mwn_row(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    return next(r for r in rows if r["noise"].startswith("uniform") and r["method"] == method)


def headline_rows(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """``(what, result, files)`` per headline result, every number read from ``files``."""
    rows = []
    acc, ci = run_accuracy(BACKPROP_RUN, root)
    config = load(f"{BACKPROP_RUN}/summary.json", root)["config"]
    rows.append(
        (
            f"ProtoNet by backprop (Conv4-{config['width']}, {config['steps']} steps)",
            f"{acc:.2f} +- {ci:.2f} % 5w5s (95 % CI) in "
            f"{train_minutes(BACKPROP_RUN, root):.1f} min",
            f"`{BACKPROP_RUN}/`",
        )
    )
    seeds = load(MAIN_SEEDS, root)
    config = seeds["train_config"]
    walls = [s["train_wall_s"] / 60 for s in seeds["seeds"]]
    accs = " / ".join(f"{100 * s['accuracy']:.2f}" for s in seeds["seeds"])
    rows.append(
        (
            f"ES `main` (Conv4-{config['width']}, population {config['population']}, "
            f"{config['steps']} steps)",
            f"{100 * seeds['mean']:.2f} +- {100 * seeds['std']:.2f} % 5w5s (mean +- std of "
            f"{len(walls)} seeds: {accs}) in {min(walls):.1f}-{max(walls):.1f} min each",
            f"`{MAIN_SEEDS}`",
        )
    )
    acc, ci = run_accuracy(LONG_RUN, root)
    config = load(f"{LONG_RUN}/summary.json", root)["config"]
    rows.append(
        (
            f"ES `long` ({'separable ' if config['separable'] else ''}Conv4-{config['width']}, "
            f"population {config['population']}, {config['steps']} steps)",
            f"{acc:.2f} +- {ci:.2f} % 5w5s (95 % CI) in "
            f"{train_minutes(LONG_RUN, root):.1f} min (seed {config['seed']})",
            f"`{LONG_RUN}/`",
        )
    )
    mwn_file = load(EVOGRAD_MWN, root)
    mwn = mwn_file["rows"]
    k2 = _mwn_row(mwn, "EvoGrad, unperturbed input, K=2")
    k10 = _mwn_row(mwn, "EvoGrad, unperturbed input, K=10")
    second, plain = _mwn_row(mwn, "second order"), _mwn_row(mwn, "plain")
    rows.append(
        (
            "EvoGrad, Meta-Weight-Net (40 % uniform label noise)",
            f"{100 * k2['test_accuracy_mean']:.1f} % (K = 2), "
            f"{100 * k10['test_accuracy_mean']:.1f} % (K = 10) test; second order "
            f"{100 * second['test_accuracy_mean']:.1f} %, no meta-learning "
            f"{100 * plain['test_accuracy_mean']:.1f} % ({mwn_file['config']['seeds']} seeds)",
            f"`{EVOGRAD_MWN}`",
        )
    )
    rotation = load(EVOGRAD_ROTATION, root)
    summary = rotation["summary"]
    evograd = summary["evograd"]
    rows.append(
        (
            f"EvoGrad, learned rotation ({rotation['shift_degrees']:.0f} degree shift)",
            f"{evograd['final_angle_mean']:.1f} +- {evograd['final_angle_std']:.1f} degrees, "
            f"{100 * evograd['test_accuracy_mean']:.1f} % test (true angle "
            f"{100 * summary['oracle (angle 30)']['test_accuracy_mean']:.1f} %, none "
            f"{100 * summary['no meta-learning (angle 0)']['test_accuracy_mean']:.1f} %)",
            f"`{EVOGRAD_ROTATION}`",
        )
    )
    learners = load(VSML_GENERALISATION, root)["learners"]
    per_seed = [100 * a for a in learners["vsml-es"]["digits_last10_per_seed"]]
    rows.append(
        (
            "VS-ML learning rule by ES, tested on unseen digits",
            f"{statistics.fmean(per_seed):.1f} +- {statistics.stdev(per_seed):.1f} % "
            f"(tuned online SGD {100 * learners['sgd']['digits_last10']:.1f} %, "
            f"chance 20 %)",
            f"`{VSML_GENERALISATION}`",
        )
    )
    memory = load(MEMORY_VS_BACKPROP, root)["rows"]
    first, last = memory[0], memory[-1]
    rows.append(
        (
            "Compiled memory of one ES step against backprop (Conv4-64)",
            f"{first['ratio_naive']:g}x less than naive backprop, "
            f"{first['ratio_chunked_remat']:g}x less than chunked + remat "
            f"({first['images']} images per episode); {last['ratio_naive']:g}x and "
            f"{last['ratio_chunked_remat']:g}x at {last['images']:,}",
            f"`{MEMORY_VS_BACKPROP}`",
        )
    )
    evosax = load(VS_EVOSAX, root)["rows"]
    speed = [r["speedup"] for r in evosax]
    mem = [r["compiled_memory_ratio"] for r in evosax]
    pops = [r["population"] for r in evosax]
    rows.append(
        (
            "Against evosax OpenES (same fitness)",
            f"{min(speed):g}-{max(speed):g}x the speed (inside the noise), "
            f"{min(mem):g}-{max(mem):g}x less compiled memory, population "
            f"{min(pops)}-{max(pops)}",
            f"`{VS_EVOSAX}`",
        )
    )
    return rows


def headline_table(root: Path = ROOT) -> str:
    """The headline table as Markdown (no trailing newline)."""
    lines = ["| what | result | file |", "| --- | --- | --- |"]
    lines += [f"| {what} | {result} | {files} |" for what, result, files in headline_rows(root)]
    return "\n".join(lines)


def with_table(readme: str, table: str) -> str:
    """``readme`` with the text between the headline-table markers replaced by ``table``."""
    head, rest = readme.split(START, maxsplit=1)
    _, tail = rest.split(END, maxsplit=1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def _running_mean(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def write_figure(path: Path = FIGURE, root: Path = ROOT) -> None:
    """ES against backprop: 5w5s accuracy against training wall time (see the docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [
        (BACKPROP_RUN, "backprop, Conv4-64", "tab:gray"),
        (MAIN_RUN, "ES main, Conv4-16", "tab:blue"),
        (LONG_RUN, "ES long, separable Conv4-32", "tab:orange"),
    ]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for run, label, color in runs:
        metrics = [json.loads(x) for x in (root / run / "metrics.jsonl").read_text().splitlines()]
        minutes = [m["wall_s"] / 60 for m in metrics]
        smooth = _running_mean([100 * m["accuracy"] for m in metrics], max(5, len(metrics) // 10))
        acc, ci = run_accuracy(run, root)
        ax.plot(
            minutes, smooth, color=color, lw=1.5, alpha=0.8, label=f"{label} (test {acc:.1f} %)"
        )
        ax.errorbar(
            [train_minutes(run, root)], [acc], yerr=[ci], fmt="o", color=color, ms=6, capsize=3
        )
    ax.plot([], [], "o", color="black", label="test accuracy, 1000 episodes (95 % CI)")
    ax.plot([], [], "-", color="black", label="training episodes (running mean)")
    ax.set_xlabel("training wall time (minutes, 2-core CPU)")
    ax.set_ylabel("5-way 5-shot accuracy (%)")
    ax.set_ylim(50, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("ES against backprop on Omniglot (ProtoNet)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the README's table")
    args = parser.parse_args(argv)
    text = README.read_text()
    updated = with_table(text, headline_table())
    if args.check:
        if updated != text:
            print("README.md: headline table out of date; run python scripts/readme_figure.py")
            return 1
        return 0
    README.write_text(updated)
    write_figure()
    print(f"wrote {README.relative_to(ROOT)} (headline table) and {FIGURE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
