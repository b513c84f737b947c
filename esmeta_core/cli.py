"""The esmeta command: meta-train, test, print a config, run an experiment.

  esmeta train --preset main --workdir runs/main     # ES-ProtoNet 5-way 5-shot
  esmeta train --preset backprop-5w5s --steps 2000   # a preset with overrides
  esmeta train --workdir runs/main --resume          # continue a run (its own config)
  esmeta eval --workdir runs/main                    # 5w1s, 5w5s, 20w1s, 20w5s
  esmeta config --preset long --steps 100            # the resolved config, as JSON
  esmeta experiment vsml --help                      # an experiment and its settings

Every TrainConfig field is a flag of train and config (--field-name VALUE), every
field of an experiment's Config a flag of that experiment. Guide: docs/cli.md.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import json
import os
import re
import shlex
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

from esmeta_core import configs
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
DEFAULT_PRESET = "main"
MAX_SHOT = IMAGES_PER_CHARACTER - 1  # at least one drawing is left for the query

# ---------------------------------------------------------------------------
# Flags from dataclass fields: one type mapper, one help builder.


class FieldType(NamedTuple):
    """How a flag reads a field's value: ``parse(text)`` and the ``metavar`` in the help."""

    parse: Callable[[str], Any]
    metavar: str


def parse_bool(text: str) -> bool:
    """``true/yes/on/1`` or ``false/no/off/0``, any case."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


_SCALARS = {
    bool: FieldType(parse_bool, "BOOL"),
    int: FieldType(_parse_int, "INT"),
    float: FieldType(_parse_float, "FLOAT"),
    str: FieldType(str, "STR"),
}


def _tuple_type(element: FieldType) -> FieldType:
    """Comma-separated items (``"8,16"``; ``""`` is the empty tuple)."""

    def parse(text: str) -> tuple[Any, ...]:
        return tuple(element.parse(t.strip()) for t in text.split(",") if t.strip())

    return FieldType(parse, f"{element.metavar},...")


def _union_type(members: tuple[Any, ...], *, optional: bool) -> FieldType:
    """The first member whose parser takes the text; ``none`` (or ``null``) for ``None``.

    Members the command line cannot spell (a callable, say) are left out.
    """
    kinds = []
    for member in members:
        try:
            kinds.append(field_type(member))
        except TypeError:
            continue
    if not kinds:
        raise TypeError(f"no command-line form for any of {members!r}")
    metavar = "|".join([k.metavar for k in kinds] + (["none"] if optional else []))

    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        for kind in kinds:
            try:
                return kind.parse(text)
            except (argparse.ArgumentTypeError, ValueError):
                continue
        raise argparse.ArgumentTypeError(f"expected {metavar}, got {text!r}")

    return FieldType(parse, metavar)


def field_type(annotation: Any) -> FieldType:
    """The parser of a field's resolved type: bool, int, float, str, ``X | Y``, ``tuple[X, ...]``.

    Raises:
      TypeError: a type the command line cannot spell.
    """
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and args:
        return _tuple_type(field_type(args[0]))
    if origin in (typing.Union, types.UnionType):
        return _union_type(
            tuple(a for a in args if a is not type(None)), optional=type(None) in args
        )
    raise TypeError(f"no command-line form for the type {annotation!r}")


def field_default(field: dataclasses.Field) -> Any:
    """A field's default (from its factory, if it has one); ``MISSING`` if it has none."""
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def show_value(value: Any) -> str:
    """A value as the command line spells it: ``none``, ``true``, ``8,16``."""
    if value is None:
        return "none"
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(show_value, value)) or "''"
    return str(value)


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)\s*(?:<[^>]*>)?`")
_DIRECTIVE = re.compile(r"^(\s*)\.\. [a-z-]+::\s*", re.MULTILINE)
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}(?=\S)([^*]+?)(?<=\S)\*{1,2}(?![\w*])")


def plain(text: str) -> str:
    """``text`` without reStructuredText markup (roles, literals, directives, emphasis)."""
    text = _ROLE.sub(r"\1", text)
    text = text.replace("``", "")
    text = re.sub(r"`([^`]+)`", r"\1", text)
    text = _DIRECTIVE.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return re.sub(r"::$", ":", text, flags=re.MULTILINE)


_ENTRY = re.compile(r"([A-Za-z_]\w*(?:\s*[,/]\s*[A-Za-z_]\w*)*)\s*:(?:\s+(.*))?")


def attribute_docs(cls: type) -> dict[str, str]:
    """Field descriptions from the ``Attributes:`` section of a class docstring.

    An entry is ``name: text``, or one text for several fields: ``a / b: text`` or
    ``a, b, c: text``; more indented lines continue it. Markup is stripped.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Attributes:"]
    if not starts:
        return {}
    indent = lambda line: len(line) - len(line.lstrip())  # noqa: E731
    base, entry_indent = indent(lines[starts[0]]), None
    entries: list[tuple[list[str], list[str]]] = []
    for line in lines[starts[0] + 1 :]:
        if not line.strip():
            continue
        if indent(line) <= base:
            break
        entry_indent = indent(line) if entry_indent is None else entry_indent
        match = _ENTRY.fullmatch(line.strip()) if indent(line) == entry_indent else None
        if match:
            names = [n.strip() for n in re.split(r"[,/]", match.group(1))]
            entries.append((names, [match.group(2) or ""]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: plain(" ".join(text).strip()) for names, text in entries for name in names}


def comment_docs(cls: type) -> dict[str, str]:
    """Field descriptions from comments: on a field's line, or on the lines just above it."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    inline, block = {}, {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = token.line.lstrip().startswith("#")
            (block if alone else inline)[token.start[0]] = token.string.lstrip("#").strip()
    docs = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, line = [], node.lineno - 1
            while line in block:
                above.insert(0, block[line])
                line -= 1
            text = " ".join([*above, inline.get(node.end_lineno, "")]).strip()
            if text:
                docs[node.target.id] = plain(text)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description: its docstring ``Attributes:`` entry, else its comment."""
    return {**comment_docs(cls), **attribute_docs(cls)}


def allowed_values(name: str) -> str | None:
    """What ``configs.RULES[name]`` asks of a value: its message on a value no rule takes."""
    rule = getattr(configs, "RULES", {}).get(name)
    try:
        return (rule(object()) or None) if rule else None
    except Exception:  # a rule that cannot judge a foreign value says nothing here
        return None


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "?", "!")) else text + "."


def _describe(name: str, docs: dict[str, str]) -> str:
    """A field's description; an undescribed field points to the one whose text names it."""
    if docs.get(name):
        return _sentence(docs[name])
    mentions = [other for other, text in docs.items() if re.search(rf"\b{name}\b", text)]
    return f"See --{mentions[0].replace('_', '-')}." if mentions else ""


def add_field_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    *,
    notes: Callable[[dataclasses.Field], str] | None = None,
) -> None:
    """One ``--field-name`` flag per dataclass field, its help from the class itself.

    The help is the field's description (:func:`field_docs`), then ``notes(field)``
    (default: ``Default VALUE.``). A flag left out sets nothing (``argparse.SUPPRESS``),
    so ``vars(args)`` holds only the fields given.
    """
    hints = typing.get_type_hints(config_class)
    docs = field_docs(config_class)
    for field in dataclasses.fields(config_class):
        kind = field_type(hints[field.name])
        note = notes(field) if notes else f"Default {show_value(field_default(field))}."
        text = f"{_describe(field.name, docs)} {note}".strip()
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=kind.parse,
            metavar=kind.metavar,
            default=argparse.SUPPRESS,
            help=text.replace("%", "%%"),
        )


def _train_field_note(field: dataclasses.Field) -> str:
    """``Must be ...; default X (main preset: Y).`` for a TrainConfig field."""
    default = field_default(field)
    note = f"default {show_value(default)}"
    preset = getattr(PRESETS.get(DEFAULT_PRESET), field.name, default)
    if preset != default:
        note += f" ({DEFAULT_PRESET} preset: {show_value(preset)})"
    allowed = allowed_values(field.name)
    text = f"{allowed}; {note}." if allowed else f"{note}."
    return text[0].upper() + text[1:]


def experiment_config(config_class: type, argv: list[str], prog: str) -> Any:
    """The experiment's default ``Config`` with ``--field value`` overrides from ``argv``.

    Raises:
      SystemExit: (status 2) an unknown flag or a value of the wrong type.
    """
    parser = argparse.ArgumentParser(prog=prog)
    add_field_flags(parser, config_class)
    return dataclasses.replace(config_class(), **vars(parser.parse_args(argv)))


# ---------------------------------------------------------------------------
# Argument types of the fixed flags.


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


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ---------------------------------------------------------------------------
# The parser.


def package_version() -> str:
    """The installed ``esmeta_core``'s version, else the source tree's ``__version__``."""
    try:
        return importlib.metadata.version("esmeta_core")
    except importlib.metadata.PackageNotFoundError:
        import esmeta_core

        return getattr(esmeta_core, "__version__", "unknown")


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
    """``--coordinator/--num-processes/--process-id`` (see esmeta_core.distributed)."""
    group = parser.add_argument_group(
        "multi-process (default: ESMETA_* environment variables, then a cluster JAX "
        "detects, else one process)"
    )
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=_positive_int, default=None)
    group.add_argument("--process-id", type=int, default=None, help="0 .. num-processes - 1")


def _add_config_flags(parser: argparse.ArgumentParser, *, resume: bool) -> None:
    """``--preset``, ``--config`` and one flag per TrainConfig field."""
    on_resume = "; on --resume the saved run's config" if resume else ""
    parser.add_argument(
        "--preset",
        default=None,
        help=f"one of {', '.join(PRESETS)} (default: {DEFAULT_PRESET}{on_resume})",
    )
    parser.add_argument("--config", help="a JSON file of TrainConfig fields (instead of a preset)")
    group = parser.add_argument_group(
        "TrainConfig fields",
        "Each sets one field of the preset's (or --config file's) config. The defaults "
        "shown are TrainConfig's and the main preset's; esmeta config --preset NAME prints "
        "another preset's. An optional field takes none.",
    )
    add_field_flags(group, TrainConfig, notes=_train_field_note)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="meta-train a ProtoNet on Omniglot",
        description="Meta-trains a ProtoNet on Omniglot into --workdir, then tests it.",
    )
    _add_config_flags(train, resume=True)
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


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="test a checkpoint on 5w1s, 5w5s, 20w1s, 20w5s")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--episodes", type=_positive_int, default=1000)
    ev.add_argument("--settings", type=_parse_settings, default="5w1s,5w5s,20w1s,20w5s")
    ev.add_argument("--split", choices=SPLITS, default=None, help="default: the run's eval split")
    ev.add_argument(
        "--width", type=_positive_int, default=None, help="fail unless the checkpoint has it"
    )
    ev.add_argument("--no-progress", action="store_true")


def _add_config_parser(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser(
        "config",
        help="print the resolved, validated TrainConfig as JSON",
        description="Prints the TrainConfig that esmeta train would run with these flags, "
        "as JSON, after the same checks; bad input exits 2.",
    )
    _add_config_flags(config, resume=False)


def _add_experiment_flags(
    parser: argparse.ArgumentParser, *, name: str = "NAME", config_class: type | None = None
) -> None:
    """``--out``, then ``config_class``'s fields (if given), then the process flags."""
    parser.add_argument(
        "--out", default=None, help=f"output folder (default: runs/experiments/{name})"
    )
    if config_class is not None:
        where = f"{config_class.__module__}.{config_class.__qualname__}"
        add_field_flags(
            parser.add_argument_group(f"settings (the fields of {where})"), config_class
        )
    _add_process_flags(parser)


def _add_experiment_parser(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser(
        "experiment",
        add_help=False,
        help="run a named experiment (esmeta experiment NAME --help: its settings)",
        description="Runs a named experiment. Every field of the experiment's Config is a\n"
        "flag: esmeta experiment evograd-mwn --seeds 1 --steps 200.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    exp.add_argument(
        "-h", "--help", action="store_true", help="show this help (with NAME: its settings)"
    )
    exp.add_argument("name", nargs="?", choices=sorted(EXPERIMENTS), metavar="NAME")
    _add_experiment_flags(exp)
    exp.set_defaults(experiment_parser=exp)


def build_parser() -> argparse.ArgumentParser:
    """The ``esmeta`` parser: train, eval, config and experiment."""
    parser = argparse.ArgumentParser(
        prog="esmeta",
        description=plain(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"esmeta {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_config_parser(sub)
    _add_experiment_parser(sub)
    return parser


def _experiment_module(name: str) -> types.ModuleType:
    return importlib.import_module(f"esmeta_core.experiments.{EXPERIMENTS[name]}")


def _summary_line(module_name: str) -> str:
    """The first line of a module's docstring, read without importing it."""
    spec = importlib.util.find_spec(module_name)
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    return plain(doc.split("\n\n")[0].replace("\n", " "))


def experiment_parser(name: str) -> argparse.ArgumentParser:
    """The parser behind ``esmeta experiment NAME --help``: --out, processes, settings."""
    module = _experiment_module(name)
    doc = module.Config.__doc__ or ""
    generated = doc.startswith(f"{module.Config.__name__}(")  # dataclass's own signature
    parts = [_summary_line(module.__name__), "" if generated else plain(inspect.cleandoc(doc))]
    parser = argparse.ArgumentParser(
        prog=f"esmeta experiment {name}",
        description="\n\n".join(p for p in parts if p),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_experiment_flags(parser, name=name, config_class=module.Config)
    return parser


def _experiment_help(args: argparse.Namespace) -> int:
    """Prints one experiment's help (with NAME) or the list of experiments."""
    if args.name:
        experiment_parser(args.name).print_help()
        return 0
    names = {n: _summary_line(f"esmeta_core.experiments.{m}") for n, m in EXPERIMENTS.items()}
    width = max(map(len, names))
    listing = "\n".join(f"  {n:<{width}}  {line}" for n, line in sorted(names.items()))
    args.experiment_parser.epilog = f"experiments:\n{listing}"
    args.experiment_parser.print_help()
    return 0


# ---------------------------------------------------------------------------
# The commands.


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config: a preset, a config file or (on ``--resume``) the saved run, then overrides.

    Raises:
      ConfigError: a bad config file, field or override (naming it).
      FileNotFoundError: ``--resume`` where the workdir holds no run.
    """
    from esmeta_core import checkpoint

    resume = getattr(args, "resume", False)
    if args.preset is not None and args.config is not None:
        raise ConfigError("--preset and --config exclude each other: give one.")
    if args.config is not None:
        config = TrainConfig.load(args.config)
    elif args.preset is not None or not resume:
        config = get_preset(DEFAULT_PRESET if args.preset is None else args.preset)
    else:
        config = checkpoint.saved_config(args.workdir)
        if config is None:
            raise FileNotFoundError(
                f"--resume: {args.workdir} holds no run to continue (no config.json). "
                "Start one without --resume."
            )
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    config = dataclasses.replace(config, **{n: getattr(args, n) for n in names if n in args})
    validate_config(config)
    return config


def _train(args: argparse.Namespace, rest: list[str], command: str) -> None:
    from esmeta_core import report, train

    summary = train.train_and_evaluate(
        config_from_args(args),
        args.workdir,
        resume=args.resume,
        allow_changes=args.allow_config_change,
        progress=not args.no_progress,
        command=command,
    )
    print(f"Wrote {args.workdir}/summary.json (train wall time {summary['train_wall_s']} s)")
    print(report.summary_line(summary))


def _eval(args: argparse.Namespace, rest: list[str], command: str) -> None:
    from esmeta_core import evaluation

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


def _config(args: argparse.Namespace, rest: list[str], command: str) -> None:
    print(json.dumps(config_from_args(args).to_json(), indent=2))


def experiment_settings(name: str, argv: list[str]) -> Any:
    """Experiment ``name``'s ``Config`` from the flags in ``argv``, checked before any compute
    by :func:`esmeta_core.configs.validate_settings` with the module's ``RULES``.

    Raises:
      SystemExit: (status 2) an unknown flag or a value of the wrong type.
      ConfigError: a value out of its range, an unknown preset or option, an empty list.
    """
    module = _experiment_module(name)
    config = experiment_config(module.Config, argv, f"esmeta experiment {name}")
    configs.validate_settings(config, getattr(module, "RULES", None))
    for train_config in getattr(module, "train_configs", lambda _: [])(config):
        try:  # the ProtoNet runs it will train, all checked before the first starts
            validate_config(train_config)
        except ConfigError as e:
            raise ConfigError(f"these settings give a run whose {e}", field=e.field) from None
    return config


def _experiment(args: argparse.Namespace, rest: list[str], command: str) -> None:
    module = _experiment_module(args.name)
    out = args.out if args.out is not None else f"runs/experiments/{args.name}"
    module.run(args.settings, out)
    print(f"Wrote results of {args.name} to {out}")


# Flags that name a file, folder or preset: an empty or blank value is refused.
NAME_FLAGS = ("workdir", "out", "preset", "config")


def check_names(args: argparse.Namespace) -> None:
    """Refuses an empty or blank ``--workdir``, ``--out``, ``--preset`` or ``--config``.

    Raises:
      ConfigError: naming the flag (``--workdir ''`` would write into the current folder).
    """
    for name in NAME_FLAGS:
        value = getattr(args, name, None)
        if value is not None and not value.strip():
            raise ConfigError(f"--{name} must be a non-empty name, got {value!r}.")


COMMANDS = {"train": _train, "eval": _eval, "config": _config, "experiment": _experiment}


def _start_processes(args: argparse.Namespace) -> int | None:
    """Joins the multi-process job the flags or environment describe; 2 on bad flags."""
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
    if not distributed.is_main_process():  # process 0 alone prints and shows progress bars
        os.environ["TQDM_DISABLE"] = "1"
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's prints and native logs alike
        args.no_progress = True
    return None


def _run_command(args: argparse.Namespace, rest: list[str], command: str) -> int:
    """Runs the command; a bad input is one ``esmeta: error:`` line and exit status 2."""
    from esmeta_core import train  # JAX; after argument errors

    try:
        COMMANDS[args.command](args, rest, command)
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


def _import_error_line(error: ImportError) -> str:
    """``esmeta: error:`` and what is missing, with the pip command that installs it."""
    message = " ".join(str(error).split())
    if "pip install" in message or not error.name:  # the message names the command already
        return f"esmeta: error: {message}"
    from esmeta_core import runtime

    return f"esmeta: error: {message}; install it with: {runtime.install_command(error.name)}"


def main(argv: list[str] | None = None) -> int:
    """``esmeta ARGS``: 0 done, 2 bad input or a missing package, 3 diverged, 130 interrupted."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        return _dispatch(parser, args, rest, argv)
    except ImportError as e:  # installed with --no-deps, or an extra's package
        if (e.name or "").partition(".")[0] == "esmeta_core":
            raise  # a bug in esmeta itself: keep the traceback
        print(_import_error_line(e), file=sys.stderr)
        return 2


def _dispatch(
    parser: argparse.ArgumentParser, args: argparse.Namespace, rest: list[str], argv: list[str]
) -> int:
    """The help of an experiment, or the processes and the command (see :func:`main`)."""
    if args.command == "experiment":
        if args.help:
            return _experiment_help(args)
        if args.name is None:
            args.experiment_parser.error("the following arguments are required: NAME")
    elif rest:
        parser.parse_args(argv)  # reports the unknown arguments and exits 2
    try:  # before the processes start and before any compute
        check_names(args)
        if args.command == "experiment":
            args.settings = experiment_settings(args.name, rest)
    except ConfigError as e:
        print(f"esmeta: error: {e}", file=sys.stderr)
        return 2
    if args.command in ("train", "experiment"):
        code = _start_processes(args)
        if code is not None:
            return code
    return _run_command(args, rest, "esmeta " + shlex.join(argv))  # the command for result files


if __name__ == "__main__":
    sys.exit(main())
