"""``esmeta experiment NAME`` settings: every field checked before any compute.

Each experiment's ``Config`` goes through :func:`esmeta_core.configs.validate_settings`
(the module's ``RULES``, else the rule of the field's type) when the command reads its
flags, before the processes start. A bad value is one ``esmeta: error:`` line naming
the flag, exit status 2, no traceback; nothing trains (``run`` and the process start
are replaced by failures here, so these tests take no compute).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from pathlib import Path

import pytest

from esmeta_core import cli, configs
from esmeta_core.experiments import scaling

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    return importlib.import_module(f"esmeta_core.experiments.{cli.EXPERIMENTS[name]}")


def bad_value(annotation: typing.Any) -> str | None:
    """A command-line value that the field's type parses but its rule must refuse."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        item = bad_value(args[0])
        return None if item is None else item
    if args:  # X | None
        return bad_value(args[0])
    return {int: "-1", float: "nan", str: ""}.get(annotation)


def _fields() -> list[tuple[str, str, str]]:
    """(experiment, field, bad value) for every numeric, tuple and string field."""
    rows = []
    for name in sorted(cli.EXPERIMENTS):
        config_class = _module(name).Config
        hints = typing.get_type_hints(config_class)
        for field in dataclasses.fields(config_class):
            value = bad_value(hints[field.name])
            if value is not None:
                rows.append((name, field.name, value))
    return rows


FIELDS = _fields()


@pytest.fixture
def esmeta(capsys, monkeypatch):
    """``esmeta ARGS`` in this process, failing the test if anything would start or train."""

    def no_compute(*args, **kwargs):
        raise AssertionError("validation let a bad setting through to the run")

    monkeypatch.setattr(cli, "_start_processes", no_compute)
    for name in cli.EXPERIMENTS:
        monkeypatch.setattr(_module(name), "run", no_compute)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err

    return run


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("esmeta: error: "), err
    for needle in needles:
        assert needle in lines[0], err


def test_every_field_of_every_experiment_has_a_rule():
    for name in cli.EXPERIMENTS:
        module = _module(name)
        rules = configs.settings_rules(module.Config, getattr(module, "RULES", None))
        assert set(rules) == {f.name for f in dataclasses.fields(module.Config)}, name
        assert cli.experiment_settings(name, []) == module.Config()  # the defaults pass


def test_every_experiment_has_fields_to_check():
    assert {name for name, _, _ in FIELDS} == set(cli.EXPERIMENTS)


@pytest.mark.parametrize(("name", "field", "value"), FIELDS, ids=lambda v: str(v) or "empty")
def test_a_bad_value_of_any_setting_is_one_line_and_exit_2(esmeta, tmp_path, name, field, value):
    flag = f"--{field.replace('_', '-')}"
    code, err = esmeta("experiment", name, "--out", str(tmp_path / "out"), flag, value)
    _assert_one_line(code, err, flag)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "args", "needle"),
    [
        ("main-seeds", ["--preset", "nope"], "--preset must be one of"),
        ("scaling", ["--preset", "nope"], "--preset must be one of"),
        ("population-sweep", ["--populations", "0"], "--populations must be a whole number"),
        ("scaling", ["--utilisation", "0"], "--utilisation must be a number in (0.0, 1.0]"),
        ("evograd-rotation", ["--batch", "0"], "--batch must be a whole number >= 1"),
        ("evograd-1d", ["--seeds", "-3"], "--seeds must be a whole number >= 1"),
        ("evograd-1d", ["--seeds", "0"], "--seeds must be a whole number >= 1, got 0"),
        ("evograd-1d", ["--trajectory-steps", "-5"], "--trajectory-steps must be"),
        ("main-seeds", ["--seeds", ""], "--seeds must be a non-empty list"),
        ("main-seeds", ["--seeds", str(2**63)], "--seeds must be a whole number >= 0 and <="),
        ("es-ablations", ["--seeds", ""], "--seeds must be a non-empty list"),
        ("scaling", ["--target", "1.5"], "--target must be a number in (0.0, 1.0)"),
        ("scaling", ["--target", "1"], "--target must be a number in (0.0, 1.0)"),
        ("scaling", ["--results", "no/such/folder"], "--results must be folders"),
        ("main-seeds", ["--shaping", "nope"], "--shaping must be one of"),
        ("es-ablations", ["--rows", "nope"], "--rows must be one of"),
        ("vsml", ["--learners", "nope"], "--learners must be one of"),
        ("vsml-long", ["--seed", str(2**63)], "--seed must be a whole number >= 0 and <="),
        ("capacity", ["--separable-widths", "0"], "--separable-widths must be"),
        # the runs an experiment trains, all checked before the first starts
        ("population-sweep", ["--budget", "10"], "give a run whose steps must be"),
        ("population-sweep", ["--populations", "64,7"], "give a run whose population"),
        ("capacity", ["--query", "16"], "give a run whose shot + query"),
        ("main-seeds", ["--preset", "smoke", "--lr", "1e400"], "--lr must be"),
    ],
)
def test_the_reported_experiment_settings_are_refused(esmeta, tmp_path, name, args, needle):
    code, err = esmeta("experiment", name, "--out", str(tmp_path / "out"), *args)
    _assert_one_line(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_an_empty_separable_widths_and_mlp_hidden_are_allowed():
    assert cli.experiment_settings("capacity", ["--separable-widths", ""]).separable_widths == ()
    assert cli.experiment_settings("vsml", ["--mlp-hidden", ""]).mlp_hidden == ()


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--preset", "smoke", "--workdir", ""],
        ["train", "--preset", "smoke", "--workdir", "  "],
        ["train", "--preset", "", "--workdir", "w"],
        ["config", "--preset", ""],
        ["config", "--config", ""],
        ["experiment", "scaling", "--out", ""],
    ],
    ids=["workdir", "workdir-blank", "train-preset", "config-preset", "config-file", "out"],
)
def test_an_empty_name_is_refused(esmeta, tmp_path, monkeypatch, args):
    """``--workdir ''`` trained into the current folder; ``--preset ''`` meant main."""
    monkeypatch.chdir(tmp_path)
    code, err = esmeta(*args)
    flag = next(a for a in args if a.startswith("--") and args[args.index(a) + 1].strip() == "")
    _assert_one_line(code, err, f"{flag} must be a non-empty name")
    assert list(tmp_path.iterdir()) == []


def test_scaling_finds_the_committed_results_from_any_folder(tmp_path, monkeypatch, capsys):
    """Its default ``results/...`` folders were read relative to the current folder."""
    monkeypatch.chdir(tmp_path)
    config = cli.experiment_settings("scaling", [])
    roots = [scaling.results_root(r) for r in config.results]
    assert all(root.is_dir() and root.is_absolute() for root in roots), roots
    monkeypatch.setattr(scaling, "member_flops", lambda width, **kw: 1e6)  # no XLA compile
    monkeypatch.setattr(cli, "_start_processes", lambda args: None)
    assert cli.main(["experiment", "scaling", "--out", "out"]) == 0
    result = json.loads((tmp_path / "out" / "scaling.json").read_text())
    runs = [p["run"] for p in result["points"]]
    assert runs and all(
        r.startswith(("results/protonet/", "results/archive/tuning/")) for r in runs
    )
    monkeypatch.chdir(ROOT)  # the same runs, under the same names, as from the checkout
    assert [p["run"] for r in config.results for p in scaling.es_points(Path(r))] == runs
