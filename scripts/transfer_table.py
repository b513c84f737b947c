"""Backprop and ES on the same networks in the four Omniglot settings (transfer.json).

Does the ES embedding's gap to backprop, small at 5-way 5-shot, grow at 20-way 1-shot because
of the network (capacity) or because of what ES learns? Backprop trains exactly the network of
each ES preset (``main``: Conv4-16; ``long``: separable Conv4-32) with the same 5-way 5-shot
episodes (5 queries per class), for 2000 steps at lr 0.002 (the capacity protocol of
``results/protonet/capacity-2000steps``), and every run is tested on 1000 episodes per setting:

  esmeta train --preset backprop-5w5s --query 5 --lr 0.002 --steps 2000 \\
      --workdir results/protonet/transfer/backprop-conv4-16 --width 16
  esmeta train --preset backprop-5w5s --query 5 --lr 0.002 --steps 2000 \\
      --workdir results/protonet/transfer/backprop-sep32 --width 32 --separable true
  esmeta eval --workdir DIR --split val     # then copied to DIR/eval-val.json
  esmeta eval --workdir DIR --split test    # then copied to DIR/eval-test.json
  python scripts/transfer_table.py          # this file: transfer.json and the table

The ES rows are the committed ``main`` and ``long`` runs' test evaluations (their checkpoints
were not kept, so they have no validation scores yet).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from esmeta_core import report

ROOT = Path(__file__).resolve().parents[1]
OUT = "results/protonet/transfer.json"
SETTINGS = ("5w5s", "5w1s", "20w5s", "20w1s")
# (network, method, file per split)
RUNS = (
    ("Conv4-16 (main's)", "backprop", "results/protonet/transfer/backprop-conv4-16/eval-{}.json"),
    ("Conv4-16 (main's)", "es", "results/protonet/main/eval.json"),
    (
        "separable Conv4-32 (long's)",
        "backprop",
        "results/protonet/transfer/backprop-sep32/eval-{}.json",
    ),
    ("separable Conv4-32 (long's)", "es", "results/protonet/long/eval.json"),
)


def accuracies(path: str) -> dict[str, float] | None:
    """``{setting: accuracy %}`` of an ``eval.json``, or ``None`` if the file is missing."""
    file = ROOT / path
    if not file.exists():
        return None
    results = json.loads(file.read_text())["results"]
    return {s: round(100 * results[s]["accuracy"], 2) for s in SETTINGS}


def rows() -> list[dict]:
    out = []
    for network, method, pattern in RUNS:
        splits = (
            {s: pattern.format(s) for s in ("val", "test")}
            if "{}" in pattern
            else {"test": pattern}
        )
        out.append(
            {
                "network": network,
                "method": method,
                "files": splits,
                **{split: accuracies(path) for split, path in splits.items()},
            }
        )
    return out


def gaps(table: list[dict]) -> list[dict]:
    """Backprop minus ES on the test split, per network and setting (points)."""
    out = []
    for network in dict.fromkeys(r["network"] for r in table):
        bp, es = (
            next(r for r in table if r["network"] == network and r["method"] == m)
            for m in ("backprop", "es")
        )
        out.append(
            {"network": network, **{s: round(bp["test"][s] - es["test"][s], 2) for s in SETTINGS}}
        )
    return out


def markdown_table(result: dict) -> str:
    lines = [["network", "method", "split", *SETTINGS]]
    for r in result["rows"]:
        for split in ("val", "test"):
            if r.get(split):
                lines.append(
                    [r["network"], r["method"], split, *(f"{r[split][s]:.2f}" for s in SETTINGS)]
                )
    for g in result["test_gap_backprop_minus_es"]:
        lines.append([g["network"], "gap (points)", "test", *(f"{g[s]:.2f}" for s in SETTINGS)])
    return report.table(lines[0], lines[1:])


def main() -> None:
    wall0 = time.perf_counter()
    table = rows()
    result = report.write_result(
        ROOT / OUT,
        {"rows": table, "test_gap_backprop_minus_es": gaps(table)},
        config={
            "settings": SETTINGS,
            "episodes": 1000,
            "backprop_steps": 2000,
            "backprop_lr": 0.002,
        },
        command="python scripts/transfer_table.py",
        wall_s=round(
            time.perf_counter() - wall0, 3
        ),  # this assembly; the runs' own times are in their summary.json
    )
    print(markdown_table(result))


if __name__ == "__main__":
    main()
