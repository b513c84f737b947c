"""The ``esmeta`` command's help, ``--version`` and ``config``, and the flag generator.

Flags come from the config dataclasses (``cli.add_field_flags``), so these tests name no
field: they read ``dataclasses.fields(TrainConfig)`` and each experiment's ``Config``.
Everything runs ``cli.main`` in this process.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from esmeta_core import cli, configs
from esmeta_core.configs import PRESETS, RESUMABLE, TrainConfig

ROOT = Path(__file__).resolve().parents[1]

# reST markup that must not reach a terminal: roles, literals, directives.
MARKUP = re.compile(r"``|:(func|class|mod|data|meth|attr|math|obj|ref):`|^\s*\.\. \w+::", re.M)


@pytest.fixture
def esmeta(capsys, monkeypatch):
    """``esmeta ARGS`` in this process: (exit status, stdout, stderr), help unwrapped."""
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps help at the terminal's width

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # --help, --version and argument errors
            code = e.code
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def _train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_train_help_shows_every_trainconfig_field_with_its_default(esmeta):
    code, out, _ = esmeta("train", "--help")
    assert code == 0
    actions = _actions(_train_parser())
    printed = " ".join(out.split())
    for field in dataclasses.fields(TrainConfig):
        action = actions[field.name]
        assert f"default {cli.show_value(cli.field_default(field))}" in action.help, field.name
        shown = f"{_flag(field.name)} {action.metavar} {action.help.replace('%%', '%')}"
        assert shown in printed, field.name
        main = getattr(PRESETS["main"], field.name)
        if main != cli.field_default(field):
            assert f"main preset: {cli.show_value(main)}" in action.help, field.name


def test_train_help_states_each_fields_allowed_values_from_its_rule():
    actions = _actions(_train_parser())
    for field in dataclasses.fields(TrainConfig):
        message = configs.RULES[field.name](object())  # what the rule asks of anything
        assert message, field.name
        assert message[1:] in actions[field.name].help, field.name
    assert "one of ('es', 'backprop')" in actions["method"].help
    assert "presets" not in actions["method"].help  # no "see esmeta_core/configs.py"


def test_every_trainconfig_field_is_a_flag_and_a_flag_only_sets_what_is_given():
    args = cli.build_parser().parse_args(["train", "--workdir", "w"])
    assert cli.config_from_args(args) == PRESETS["main"]
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(names) <= set(_actions(_train_parser()))
    assert not hasattr(cli, "OVERRIDES")  # no hand-kept list beside the dataclass


def test_version_is_the_installed_packages(esmeta):
    code, out, _ = esmeta("--version")
    assert code == 0
    assert out.strip() == f"esmeta {importlib.metadata.version('esmeta_core')}"
    assert cli.package_version() == importlib.metadata.version("esmeta_core")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], PRESETS["main"]),
        (["--preset", "long", "--steps", "7", "--seed", "3"], None),
        (["--preset", "backprop-5w1s", "--separable", "yes", "--train-way", "none"], None),
    ],
    ids=["default-main", "long-with-overrides", "smoke-bool-and-optional"],
)
def test_config_prints_the_resolved_preset_as_json(esmeta, args, expected):
    code, out, err = esmeta("config", *args)
    assert code == 0, err
    if expected is None:
        parsed = cli.build_parser().parse_args(["config", *args])
        changes = {k: v for k, v in vars(parsed).items() if k in configs.RULES}
        expected = dataclasses.replace(PRESETS[parsed.preset], **changes)
        assert changes
    assert json.loads(out) == expected.to_json()


def test_config_reads_a_config_file(esmeta, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"width": 8, "steps": 9}))
    code, out, _ = esmeta("config", "--config", str(tmp_path / "c.json"), "--seed", "2")
    assert code == 0
    assert json.loads(out) == TrainConfig(width=8, steps=9, seed=2).to_json()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps", "0"], "esmeta: error: steps must be a whole number >= 1, got 0."),
        (["--preset", "nope"], "esmeta: error: Unknown preset 'nope'"),
        (["--method", "sgd"], "esmeta: error: method must be one of"),
        (["--way", "2000"], "esmeta: error: way=2000 is larger than"),
        (["--steps", "ten"], "argument --steps: expected a whole number, got 'ten'"),
        (["--separable", "maybe"], "argument --separable: expected true or false"),
        (["--stpes", "3"], "unrecognized arguments: --stpes 3"),
    ],
    ids=[
        "zero-steps",
        "unknown-preset",
        "bad-method",
        "way-too-large",
        "steps-text",
        "bool",
        "typo",
    ],
)
def test_config_with_bad_input_exits_2_with_one_line(esmeta, args, needle):
    code, out, err = esmeta("config", *args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and not out
    if "esmeta: error:" in needle:
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", sorted(cli.EXPERIMENTS))
def test_experiment_help_lists_its_settings_with_defaults(esmeta, name):
    code, out, _ = esmeta("experiment", name, "--help")
    assert code == 0
    module = cli._experiment_module(name)
    assert f"usage: esmeta experiment {name}" in out
    assert not MARKUP.search(out), MARKUP.search(out)
    printed = " ".join(out.split())
    actions = _actions(cli.experiment_parser(name))
    for field in dataclasses.fields(module.Config):
        action = actions[field.name]
        default = cli.show_value(cli.field_default(field))
        assert action.help.endswith(f"Default {default}."), field.name
        shown = f"{_flag(field.name)} {action.metavar} {action.help.replace('%%', '%')}"
        assert shown in printed, field.name


def test_experiment_help_without_a_name_lists_the_experiments(esmeta):
    code, out, _ = esmeta("experiment", "--help")
    assert code == 0
    for name in cli.EXPERIMENTS:
        assert re.search(rf"^  {re.escape(name)}\s+\S", out, re.M), name
    code, _, err = esmeta("experiment")
    assert code == 2
    assert "required: NAME" in err


def test_no_help_text_holds_sphinx_markup(esmeta):
    texts = [esmeta(*args, "--help")[1] for args in ([], ["train"], ["eval"], ["config"])]
    texts.append(esmeta("experiment", "--help")[1])
    for text in texts:
        assert text.startswith("usage: esmeta")
        assert not MARKUP.search(text), MARKUP.search(text)
    assert cli.plain(cli.__doc__) == cli.__doc__


def test_plain_strips_roles_literals_directives_and_emphasis():
    text = (
        "See :func:`esmeta_core.optim.lr_schedule` and :class:`~a.B`, ``x = 1``, *train*\n"
        ".. math::  a = b\n"
        "a * b * c stays::"
    )
    assert cli.plain(text) == (
        "See esmeta_core.optim.lr_schedule and a.B, x = 1, train\na = b\na * b * c stays:"
    )


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Settings of a test.

    Attributes:
      seeds: how many ``seeds``.
      lr / meta_lr: the two rates (see
        :func:`optax.adam`).
      copies, noise: one text for two.
    """

    seeds: int = 3
    lr: float = 0.1
    meta_lr: float = 0.01
    copies: tuple[int, ...] = (2, 10)
    noise: str = "uniform"
    fixed: bool = True  # a comment on the line
    # a comment above
    budget: int | None = None
    chunk: int | str = "auto"
    scales: tuple[float, ...] = ()
    names: tuple[str, ...] = dataclasses.field(default_factory=lambda: ("a", "b"))


def test_field_descriptions_come_from_the_attributes_section_and_comments():
    assert cli.field_docs(_Settings) == {
        "seeds": "how many seeds.",
        "lr": "the two rates (see optax.adam).",
        "meta_lr": "the two rates (see optax.adam).",
        "copies": "one text for two.",
        "noise": "one text for two.",
        "fixed": "a comment on the line",
        "budget": "a comment above",
    }


def test_each_flags_help_is_its_description_and_default():
    parser = argparse.ArgumentParser()
    cli.add_field_flags(parser, _Settings)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["seeds"] == "how many seeds. Default 3."
    assert helps["names"] == "Default a,b."  # from the default factory
    assert helps["scales"] == "Default ''."
    assert helps["budget"] == "a comment above. Default none."
    assert [a.metavar for a in parser._actions if a.dest in ("copies", "budget", "chunk")] == [
        "INT,...",
        "INT|none",
        "INT|STR",
    ]


def test_one_type_mapper_reads_every_field_type():
    config = cli.experiment_config(
        _Settings,
        "--seeds 1 --lr 0.5 --copies 2,100 --fixed off --budget 7 --chunk 4 --scales".split()
        + [""],
        "esmeta experiment x",
    )
    assert config == _Settings(seeds=1, lr=0.5, copies=(2, 100), fixed=False, budget=7, chunk=4)
    assert cli.experiment_config(_Settings, ["--budget", "None"], "x").budget is None
    assert cli.experiment_config(_Settings, ["--chunk", "auto"], "x").chunk == "auto"
    assert cli.experiment_config(_Settings, [], "x") == _Settings()
    assert cli.experiment_config(_Settings, ["--names", "c"], "x").names == ("c",)
    for true, false in [("true", "false"), ("Yes", "No"), ("on", "off"), ("1", "0")]:
        assert cli.parse_bool(true) is True and cli.parse_bool(false) is False
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        cli.parse_bool("maybe")
    assert cli.field_type(str | Callable).parse("rank") == "rank"  # a callable is left out
    with pytest.raises(TypeError, match="no command-line form"):
        cli.field_type(dict[str, int])


def test_help_text_with_a_percent_sign_is_printed_as_is(capsys, monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class Percent:
        rate: float = 0.3  # 30 % of the peak

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        cli.experiment_config(Percent, ["--help"], "x")
    assert "30 % of the peak. Default 0.3." in capsys.readouterr().out


def test_the_cli_guide_names_every_preset_experiment_and_resumable_field():
    guide = (ROOT / "docs" / "cli.md").read_text()
    for name in [*PRESETS, *cli.EXPERIMENTS]:
        assert f"| `{name}` |" in guide, name
    resume = guide.split("## Resume")[1].split("##")[0]
    for name in RESUMABLE:
        assert f"`{name}`" in resume, name
    for command in ("esmeta train", "esmeta eval", "esmeta config", "esmeta experiment"):
        assert f"**`{command}" in guide, command
    assert "esmeta --version" in guide
