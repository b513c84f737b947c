"""The ``esmeta`` command: a thin layer over :mod:`esmeta_core.train`.

esmeta train --preset main --workdir runs/main       # ES-ProtoNet 5-way 5-shot
esmeta train --preset backprop-5w5s --steps 2000     # a preset with overrides
esmeta train --workdir runs/main --resume            # continue an interrupted run (its own config)
esmeta eval --workdir runs/main                      # 5w1s/5w5s/20w1s/20w5s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Callable
from typing import Any

from esmeta_core.configs import (
    PRESETS,
    RESUMABLE,
    ConfigError,
    TrainConfig,
    get_preset,
    validate_config,
)
from esmeta_core.data.omniglot import IMAGES_PER_CHARACTER, SPLITS

# name -> module under esmeta_core.experiments. Each module has a frozen dataclass
# `Config` and `run(config, out_dir)`; its fields are `esmeta experiment NAME --field v`
# overrides. Output goes to runs/experiments/NAME unless --out names a folder (the
# committed results were written with --out results/<group>).
EXPERIMENTS = {
    "evograd-1d": "evograd_toy",
    "evograd-rotation": "evograd_rotation",
    "evograd-mwn": "evograd_mwn",
    "evograd-fwt": "evograd_fwt",
    "population-sweep": "population_sweep",
    "capacity": "capacity",
    "es-ablations": "es_ablations",
    "main-seeds": "main_seeds",
    "scaling": "scaling",
    "vsml": "vsml_generalisation",
    "vsml-invariance": "vsml_invariance",
    "vsml-long": "vsml_long",
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
    "separable",
    "first_width",
    "eval_episodes",
    "chunk_size",
    "communication",
    "train_way",
    "batch",
    "lr_schedule",
    "lr_final_fraction",
    "adam_b1",
    "weight_decay",
    "unit_kernels",
    "shaping",
    "relative_sigma",
    "perturb_conv_bias",
    "guide_fraction",
    "subspace_dim",
)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


MAX_SHOT = IMAGES_PER_CHARACTER - 1  # at least one drawing is left for the query


def _parse_settings(text: str) -> tuple[tuple[int, int], ...]:
    """Parses ``"5w1s,20w5s"`` into ``((5, 1), (20, 5))``.

    Every item is ``<way>w<shot>s`` (the trailing ``s`` optional) with
    ``way >= 2`` and ``1 <= shot <= 19``; items may not repeat.

    Raises:
      argparse.ArgumentTypeError: naming the bad item and the expected form
        (argparse turns it into a usage error, exit status 2).
    """
    out: list[tuple[int, int]] = []
    for item in text.split(","):
        spec = item.strip().lower()
        body = spec[:-1] if spec.endswith("s") else spec
        way_text, sep, shot_text = body.partition("w")
        if not (sep and way_text.isdigit() and shot_text.isdigit()):
            raise argparse.ArgumentTypeError(
                f"bad setting {item!r}: expected WAYwSHOTs items separated by commas, "
                "e.g. 5w1s,20w5s"
            )
        way, shot = int(way_text), int(shot_text)
        if way < 2 or not 1 <= shot <= MAX_SHOT:
            raise argparse.ArgumentTypeError(
                f"bad setting {item!r}: need way >= 2 and 1 <= shot <= {MAX_SHOT}"
            )
        if (way, shot) in out:
            raise argparse.ArgumentTypeError(f"setting {item.strip()!r} is listed twice")
        out.append((way, shot))
    return tuple(out)


def _int_or_auto(text: str) -> int | str:
    """An argparse type: ``auto`` or a whole number (the config check says which range)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number or 'auto', got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
    """``--coordinator/--num-processes/--process-id``: see :mod:`esmeta_core.distributed`."""
    group = parser.add_argument_group(
        "multi-process (default: ESMETA_* environment variables, then a cluster JAX "
        "detects, else one process)"
    )
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=_positive_int, default=None)
    group.add_argument("--process-id", type=int, default=None, help="0 .. num-processes - 1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esmeta", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="meta-train a ProtoNet on Omniglot")
    train.add_argument(
        "--preset",
        default=None,
        help=f"one of {sorted(PRESETS)} (default: main; on --resume the saved run's config)",
    )
    train.add_argument("--config", help="a JSON file of TrainConfig fields (instead of a preset)")
    train.add_argument("--workdir", default="runs/main")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir with its saved config (overrides other than "
        f"{', '.join(RESUMABLE)} are refused)",
    )
    train.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: let overrides change any field of the saved run",
    )
    train.add_argument("--no-progress", action="store_true")
    _add_process_flags(train)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in OVERRIDES:
        annotation = str(fields[name].type)
        kind = _bool if annotation == "bool" else float if annotation == "float" else int
        kind = str if annotation == "str" else kind
        kind = _int_or_auto if annotation == "int | str" else kind
        train.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"override {name} (preset default: see esmeta_core/configs.py)",
        )
    ev = sub.add_parser("eval", help="test a checkpoint on 5w1s, 5w5s, 20w1s, 20w5s")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--episodes", type=_positive_int, default=1000)
    ev.add_argument("--settings", type=_parse_settings, default="5w1s,5w5s,20w1s,20w5s")
    ev.add_argument("--split", choices=SPLITS, default=None, help="default: the run's eval split")
    ev.add_argument(
        "--width", type=_positive_int, default=None, help="fail unless the checkpoint has it"
    )
    ev.add_argument("--no-progress", action="store_true")
    exp = sub.add_parser(
        "experiment",
        help="run a named experiment (its Config fields are --field overrides)",
        description="Runs a named experiment. Every field of the experiment's Config is an "
        "override: esmeta experiment evograd-mwn --seeds 1 --steps 200.",
    )
    exp.add_argument("name", choices=sorted(EXPERIMENTS))
    exp.add_argument("--out", default=None, help="output folder (default: runs/experiments/<name>)")
    _add_process_flags(exp)
    return parser


def _field_parser(field: dataclasses.Field) -> Callable[[str], Any]:
    """A parser for a dataclass field's type: int, float, str, bool, or a tuple of one."""
    kind = field.type if isinstance(field.type, str) else str(field.type)
    kind = field.type.__name__ if isinstance(field.type, type) else kind
    kind = kind.replace(" ", "").replace("|None", "").replace("Optional[", "").rstrip("]")
    scalars: dict[str, Callable[[str], Any]] = {
        "int": int,
        "float": float,
        "str": str,
        "bool": _parse_bool,
    }
    if kind.startswith("tuple["):
        parse = scalars.get(kind[len("tuple[") :].split(",")[0], str)
        return lambda text: tuple(parse(t) for t in text.split(",") if t)
    return scalars.get(kind, str)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def experiment_config(config_class: type, argv: list[str], prog: str) -> Any:
    """The experiment's default ``Config`` with ``--field value`` overrides from ``argv``."""
    parser = argparse.ArgumentParser(prog=prog)
    for field in dataclasses.fields(config_class):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=_field_parser(field),
            default=None,
            help=f"default: {field.default!r}",
        )
    args = parser.parse_args(argv)
    changes = {k: v for k, v in vars(args).items() if v is not None}
    return dataclasses.replace(config_class(), **changes)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: a preset, a config file or (on ``--resume``) the saved run, then overrides.

    Raises:
      ConfigError: a bad config file, field or override (naming it).
      FileNotFoundError: ``--resume`` where the workdir holds no run.
    """
    from esmeta_core import checkpoint

    if args.preset and args.config:
        raise ConfigError("--preset and --config exclude each other: give one.")
    if args.config:
        config = TrainConfig.load(args.config)
    elif args.preset or not args.resume:
        config = get_preset(args.preset or "main")
    else:
        config = checkpoint.saved_config(args.workdir)
        if config is None:
            raise FileNotFoundError(
                f"--resume: {args.workdir} holds no run to continue (no config.json). "
                "Start one without --resume."
            )
    changes = {n: getattr(args, n) for n in OVERRIDES if getattr(args, n) is not None}
    config = dataclasses.replace(config, **changes)
    validate_config(config)
    return config


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command != "experiment":
        build_parser().parse_args(argv)  # reports the unknown arguments and exits 2
    main_process = True
    if args.command in ("train", "experiment"):
        from esmeta_core import distributed

        try:
            cluster = distributed.detect(
                coordinator=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
            )
        except ValueError as e:
            print(f"esmeta: error: {e}", file=sys.stderr)
            return 2
        distributed.start(cluster)  # before any other JAX call
        main_process = distributed.is_main_process()
        if not main_process:  # process 0 alone prints and shows progress bars
            os.environ["TQDM_DISABLE"] = "1"
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's prints and native logs alike
            args.no_progress = True
    from esmeta_core import evaluation, report, train  # JAX; after argument errors

    command = "esmeta " + shlex.join(sys.argv[1:] if argv is None else argv)  # for result files

    try:
        if args.command == "train":
            config = config_from_args(args)
            summary = train.train_and_evaluate(
                config,
                args.workdir,
                resume=args.resume,
                allow_changes=args.allow_config_change,
                progress=not args.no_progress,
                command=command,
            )
            print(
                f"Wrote {args.workdir}/summary.json (train wall time {summary['train_wall_s']} s)"
            )
            print(report.summary_line(summary))
        elif args.command == "experiment":
            import importlib

            module = importlib.import_module(f"esmeta_core.experiments.{EXPERIMENTS[args.name]}")
            out = args.out or f"runs/experiments/{args.name}"
            if hasattr(module, "Config"):
                config = experiment_config(module.Config, rest, f"esmeta experiment {args.name}")
                module.run(config, out)
            else:  # not yet converted to Config + run(config, out_dir)
                if rest:
                    build_parser().parse_args(argv)
                module.run(out)
            print(f"Wrote results of {args.name} to {out}")
        else:
            results = evaluation.evaluate_checkpoint(
                args.workdir,
                settings=args.settings,
                episodes=args.episodes,
                split=args.split,
                width=args.width,
                progress=not args.no_progress,
                command=command,
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
    except OSError as e:  # a workdir under a file, a read-only file system, a full disk
        where = e.filename or "a file"
        print(f"esmeta: error: cannot use {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except train.TrainingDiverged as e:
        print(f"esmeta: error: {e}", file=sys.stderr)
        return 3
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
