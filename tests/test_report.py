"""Result files: provenance and the one writer; experiment configs from the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from esmeta_core import cli, report


def test_result_file_records_command_config_provenance_and_wall_time(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Config:
        seeds: int = 2

    path = tmp_path / "sub" / "result.json"
    report.write_result(path, {"accuracy": 0.5}, config=Config(), command="esmeta x", wall_s=1.234)
    written = json.loads(path.read_text())
    assert written["command"] == "esmeta x"
    assert written["config"] == {"seeds": 2}
    assert written["wall_s"] == 1.23
    assert written["accuracy"] == 0.5
    assert {"git_commit", "jax_version", "machine", "num_devices", "date"} <= set(
        written["provenance"]
    )
    assert not list(tmp_path.rglob("*.tmp"))


def test_result_payload_cannot_overwrite_the_recorded_fields(tmp_path):
    with pytest.raises(ValueError, match="clash"):
        report.write_result(tmp_path / "r.json", {"command": "forged"}, command="esmeta x")


@dataclasses.dataclass(frozen=True)
class _ExperimentConfig:
    seeds: int = 3
    lr: float = 0.1
    copies: tuple[int, ...] = (2, 10)
    noise: str = "uniform"
    fixed_input: bool = True
    budget: int | None = None


def test_experiment_fields_are_command_line_overrides():
    config = cli.experiment_config(
        _ExperimentConfig,
        ["--seeds", "1", "--copies", "2,100", "--fixed-input", "false", "--budget", "7"],
        "esmeta experiment x",
    )
    assert config == _ExperimentConfig(seeds=1, copies=(2, 100), fixed_input=False, budget=7)


def test_unknown_or_mistyped_experiment_override_exits_2():
    with pytest.raises(SystemExit) as e:
        cli.experiment_config(_ExperimentConfig, ["--sedes", "1"], "esmeta experiment x")
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.experiment_config(_ExperimentConfig, ["--seeds", "one"], "esmeta experiment x")
    assert e.value.code == 2
