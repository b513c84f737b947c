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
    bench = _load("benchmarks/es_efficiency.json")
    if bench:
        print(f"\n## ES step time over forward time (`{bench['command']}`)\n")
        print("| N | strategy | ES step (s) | plain forward (s) | ratio |")
        print("| --- | --- | --- | --- | --- |")
        for r in bench["rows"]:
            print(
                f"| {r['population']} | {r['strategy']} | {r['es_step_s']} | "
                f"{r['plain_forward_s']} | {r['ratio']} |"
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
    if vsml and "learners" in vsml:
        from esmeta_core.experiments import vsml_generalisation, vsml_invariance, vsml_long

        print(
            "\n## VS-ML: meta-trained on Omniglot, tested on unseen digits "
            "(results/vsml/generalisation.json, from results/vsml/parts/*/seed*.json)\n"
        )
        print(vsml_generalisation.markdown_table(vsml))
        invariance = _load("vsml/invariance.json")
        if invariance:
            print(f"\n## VS-ML cells unchanged on other tasks (`{invariance['command']}`)\n")
            print(vsml_invariance.markdown_table(invariance))
        long_run = _load("vsml/long.json")
        if long_run:
            print(f"\n## VS-ML, one long ES run (`{long_run['command']}`)\n")
            print(vsml_long.markdown_table(long_run))


if __name__ == "__main__":
    main()
