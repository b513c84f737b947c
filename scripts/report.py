"""Prints the README's result tables from the committed files under results/.

python scripts/report.py
"""

from __future__ import annotations

import json
from pathlib import Path

from esmeta_core import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    print("## ProtoNet on Omniglot (results/protonet/*/summary.json, eval.json)\n")
    print(report.markdown_table(report.run_rows(RESULTS / "protonet")))
    sweep = _load("protonet/population_sweep.json")
    if sweep:
        print(f"\n## Population sweep ({sweep['budget']}; `{sweep['command']}`)\n")
        print("| population | steps | 5w5s accuracy | train min |\n| --- | --- | --- | --- |")
        for r in sweep["rows"]:
            print(
                f"| {r['population']} | {r['steps']} | {100 * r['accuracy']:.2f} +- "
                f"{100 * r['ci95']:.2f} | {r['train_wall_s'] / 60:.1f} |"
            )
    capacity = _load("protonet/capacity.json")
    if capacity:
        steps = capacity["config"]["steps"]
        print(f"\n## Backprop capacity by width ({steps} steps; `{capacity['command']}`)\n")
        print("| width | parameters | 5w5s accuracy | train min |\n| --- | --- | --- | --- |")
        for r in capacity["rows"]:
            print(
                f"| {r['width']} | {r['num_params']:,} | {100 * r['accuracy']:.2f} +- "
                f"{100 * r['ci95']:.2f} | {r['train_wall_s'] / 60:.1f} |"
            )
    ablations = _load("protonet/ablations.json")
    if ablations:
        print(
            f"\n## ES ablations ({ablations['steps']} steps, main preset otherwise; "
            f"`{ablations['command']}`)\n"
        )
        print("| row | changes | accuracy per seed | mean +- std |\n| --- | --- | --- | --- |")
        for r in ablations["rows"]:
            seeds = ", ".join(f"{100 * s['accuracy']:.2f}" for s in r["seeds"])
            changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
            print(
                f"| {r['row']} | {changes} | {seeds} | {100 * r['mean']:.2f} +- "
                f"{100 * r['std']:.2f} |"
            )
    seeds = _load("protonet/main_seeds.json")
    if seeds:
        print(f"\n## Main preset over seeds (`{seeds['command']}`)\n")
        print("| seed | 5w5s accuracy | train wall time (s) |\n| --- | --- | --- |")
        for r in seeds["seeds"]:
            print(
                f"| {r['seed']} | {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f} | "
                f"{r['train_wall_s']} |"
            )
        print(f"| mean +- std | {100 * seeds['mean']:.2f} +- {100 * seeds['std']:.2f} | |")
    bench = _load("benchmarks/es_efficiency.json")
    if bench:
        print(f"\n## ES step time over forward time (`{bench['command']}`)\n")
        print(
            "| N | strategy | ES step s, median (min-max) | plain forward s, median (min-max) "
            "| ratio of medians (range) |"
        )
        print("| --- | --- | --- | --- | --- |")
        for r in bench["rows"]:
            if "es_step" not in r:  # an old file: two repeats, no spread
                print(
                    f"| {r['population']} | {r['strategy']} | {r['es_step_s']} | "
                    f"{r['plain_forward_s']} | {r['ratio']} |"
                )
                continue
            e, f = r["es_step"], r["plain_forward"]
            print(
                f"| {r['population']} | {r['strategy']} | {e['median_s']} ({e['min_s']}-"
                f"{e['max_s']}) | {f['median_s']} ({f['min_s']}-{f['max_s']}) | {r['ratio']} "
                f"({r['ratio_range'][0]}-{r['ratio_range'][1]}) |"
            )
    bench = _load("benchmarks/vs_evosax.json")
    if bench:
        print(f"\n## Against evosax OpenES (`{bench['command']}`)\n")
        print(
            "| N | esmeta step (s) | evosax step (s) | speed-up | compiled MiB (esmeta / evosax) "
            "| memory ratio | peak RSS MiB (esmeta / evosax) | RSS ratio |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in bench["rows"]:
            print(
                f"| {r['population']} | {r['esmeta_step_s']} | {r['evosax_step_s']} | "
                f"{r['speedup']}x | {r['esmeta_compiled_mib']} / {r['evosax_compiled_mib']} | "
                f"{r['compiled_memory_ratio']}x | {r['esmeta_peak_rss_mib']} / "
                f"{r['evosax_peak_rss_mib']} | {r['rss_ratio']}x |"
            )
    bench = _load("benchmarks/memory_vs_backprop.json")
    if bench:
        print(f"\n## ES vs backprop memory (`{bench['command']}`)\n")
        if "backprop_naive_mib" in bench["rows"][0]:
            small = next(k for k in bench["rows"][0] if k.startswith("es_chunk"))
            print(
                "| images per episode | ES MiB | ES MiB, smallest chunk | backprop naive MiB "
                "| backprop chunked + remat MiB | ratio to naive | ratio to chunked + remat |"
            )
            print("| --- | --- | --- | --- | --- | --- | --- |")
            for r in bench["rows"]:
                print(
                    f"| {r['images']} | {r['es_mib']} | {r[small]} | {r['backprop_naive_mib']} "
                    f"| {r['backprop_chunked_remat_mib']} | {r['ratio_naive']}x | "
                    f"{r['ratio_chunked_remat']}x |"
                )
        else:
            print("| images per episode | ES MiB | backprop MiB | ratio | ES temporaries MiB |")
            print("| --- | --- | --- | --- | --- |")
            for r in bench["rows"]:
                print(
                    f"| {r['images']} | {r['es_mib']} | {r['backprop_mib']} | {r['ratio']}x | "
                    f"{r['es_temp_mib']} |"
                )
    bench = _load("benchmarks/evograd_scaling.json")
    if bench:
        print(f"\n## EvoGrad vs second-order hypergradient (`{bench['command']}`)\n")
        print(
            "| Conv4 width | parameters | memory MiB (EvoGrad / 2nd order) | memory ratio | "
            "step s (EvoGrad / 2nd order) | time ratio |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for r in bench["rows"]:
            print(
                f"| {r['width']} | {r['params']:,} | {r['evograd_mib']} / "
                f"{r['second_order_mib']} | {r['memory_ratio']}x | {r['evograd_step_s']} / "
                f"{r['second_order_step_s']} | {r['time_ratio']}x |"
            )
    for name, title in (
        ("evograd/rotation.json", "EvoGrad rotation"),
        ("evograd/mwn.json", "EvoGrad Meta-Weight-Net"),
    ):
        data = _load(name)
        if not data:
            continue
        print(f"\n## {title} (`{data['command']}`)\n")
        if "summary" in data:
            print("| training | final angle | test accuracy |\n| --- | --- | --- |")
            for k, s in data["summary"].items():
                print(
                    f"| {k} | {s['final_angle_mean']:.1f} +- {s['final_angle_std']:.1f} | "
                    f"{100 * s['test_accuracy_mean']:.1f} +- {100 * s['test_accuracy_std']:.1f} % |"
                )
        else:
            print("| noise | method | test accuracy | ms per step | compiled temp KiB |")
            print("| --- | --- | --- | --- | --- |")
            for r in data["rows"]:
                print(
                    f"| {r['noise']} | {r['method']} | {100 * r['test_accuracy_mean']:.1f} +- "
                    f"{100 * r['test_accuracy_std']:.1f} % | {r['step_ms']:.2f} | "
                    f"{r['compiled_temp_kib']:.0f} |"
                )

    vsml = _load("vsml/generalisation.json")
    if vsml and "imitation_loss" in vsml:
        print(
            f"\n## VS-ML: meta-trained on Omniglot, tested on unseen digits (`{vsml['command']}`, "
            f"{vsml['seeds']} seeds, {vsml['wall_s'] / 60:.1f} min)\n"
        )
        print("| learner | digits (unseen), last 10 of 50 | Omniglot, last 10 of 50 |")
        print("| --- | --- | --- |")
        for name, r in vsml["learners"].items():
            per_seed = r["digits_final_accuracy_per_seed"]
            spread = f" +- {100 * _std(per_seed):.1f}" if len(per_seed) > 1 else ""
            print(
                f"| {name} | {100 * r['digits_final_accuracy']:.1f}{spread} % | "
                f"{100 * r['omniglot_final_accuracy']:.1f} % |"
            )


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5


if __name__ == "__main__":
    main()
