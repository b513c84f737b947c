"""The ``esmeta`` command: a thin layer over :mod:`esmeta_core.train`.

esmeta train --preset main --workdir runs/main       # ES-ProtoNet 5-way 5-shot
esmeta train --preset backprop-5w5s --steps 2000     # a preset with overrides
esmeta train --workdir runs/main --resume            # continue an interrupted run
esmeta eval --workdir runs/main                      # 5w1s/5w5s/20w1s/20w5s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from esmeta_core.configs import PRESETS, TrainConfig, get_preset

# name -> (module under esmeta_core.experiments, default output folder)
EXPERIMENTS = {
    "evograd-1d": ("evograd_toy", "results/evograd"),
    "evograd-rotation": ("evograd_rotation", "results/evograd"),
    "evograd-mwn": ("evograd_mwn", "results/evograd"),
    "population-sweep": ("population_sweep", "results/protonet"),
    "vsml": ("vsml_generalisation", "results/vsml"),
    "vsml-invariance": ("vsml_invariance", "results/vsml"),
    "vsml-long": ("vsml_long", "results/vsml"),
}
OVERRIDES = (
    "method",
    "way",
    "shot",
    "query",
    "population",
    "sigma",
    "lr",
    "steps",
    "seed",
    "width",
    "eval_episodes",
    "chunk_size",
    "communication",
    "train_way",
    "batch",
)


def _parse_settings(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in text.split(","):
        way, shot = item.strip().rstrip("s").split("w")
        out.append((int(way), int(shot)))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esmeta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="meta-train a ProtoNet on Omniglot")
    train.add_argument("--preset", default="main", help=f"one of {sorted(PRESETS)}")
    train.add_argument("--config", help="a JSON file of TrainConfig fields (instead of a preset)")
    train.add_argument("--workdir", default="runs/main")
    train.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    train.add_argument("--no-progress", action="store_true")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in OVERRIDES:
        kind = {"method": str, "communication": str, "sigma": float, "lr": float}.get(name, int)
        train.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"override {name} (preset default: see esmeta_core/configs.py)",
        )
    del fields
    ev = sub.add_parser("eval", help="test a checkpoint on 5w1s, 5w5s, 20w1s, 20w5s")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--episodes", type=int, default=1000)
    ev.add_argument("--settings", default="5w1s,5w5s,20w1s,20w5s")
    ev.add_argument("--split", default=None)
    ev.add_argument("--width", type=int, default=None, help="fail unless the checkpoint has it")
    ev.add_argument("--no-progress", action="store_true")
    exp = sub.add_parser("experiment", help="run a named experiment, writing under results/")
    exp.add_argument("name", choices=sorted(EXPERIMENTS))
    exp.add_argument("--out", default=None, help="output folder (default: results/<group>)")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig.load(args.config) if args.config else get_preset(args.preset)
    changes = {n: getattr(args, n) for n in OVERRIDES if getattr(args, n) is not None}
    return dataclasses.replace(config, **changes)


def _experiment_config(config_cls: type, extra: list[str]) -> object:
    """``--field value`` pairs over the defaults of an experiment's ``Config`` dataclass."""
    config = config_cls()
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(config_cls)}
    changes = {}
    for flag, text in zip(extra[::2], extra[1::2], strict=True):
        field = fields.get(flag.removeprefix("--"))
        if field is None:
            raise ValueError(f"unknown option {flag}; the experiment has {sorted(fields)}")
        default = getattr(config, field.name)
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            value = tuple(kind(item) for item in text.split(",") if item)
        elif isinstance(default, bool):
            value = text.lower() in ("1", "true", "yes")
        else:
            value = type(default)(text)
        changes[field.name] = value
    return dataclasses.replace(config, **changes)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "experiment":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from esmeta_core import train  # imports JAX; after argument errors are reported

    try:
        if args.command == "train":
            config = config_from_args(args)
            summary = train.train_and_evaluate(
                config, args.workdir, resume=args.resume, progress=not args.no_progress
            )
            print(
                f"Wrote {args.workdir}/summary.json (train wall time {summary['train_wall_s']} s)"
            )
            print(train.summary_line(summary))
        elif args.command == "experiment":
            import importlib

            module_name, default_out = EXPERIMENTS[args.name]
            module = importlib.import_module(f"esmeta_core.experiments.{module_name}")
            if hasattr(module, "Config"):
                module.run(_experiment_config(module.Config, extra), args.out or default_out)
            else:
                module.run(args.out or default_out)
            print(f"Wrote results of {args.name} to {args.out or default_out}")
        else:
            results = train.evaluate_checkpoint(
                args.workdir,
                settings=_parse_settings(args.settings),
                episodes=args.episodes,
                split=args.split,
                width=args.width,
                progress=not args.no_progress,
            )
            for setting, r in results.items():
                print(
                    f"{setting}: {100 * r['accuracy']:.2f} % +- {100 * r['ci95']:.2f} "
                    f"(95 % CI, {r['episodes']} episodes)"
                )
            print(json.dumps({"eval_json": f"{args.workdir}/eval.json"}))
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"esmeta: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command != "train":
            raise
        print(
            f"\nesmeta: interrupted. Continue from the last checkpoint with:\n"
            f"  esmeta train --workdir {args.workdir} --resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
