"""Result files: provenance and the one writer; experiment configs from the command line."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from esmeta_core import cli, report

ROOT = Path(__file__).resolve().parents[1]


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
    assert written["provenance"]["esmeta_version"] == importlib.metadata.version("esmeta_core")


def _repo(root, pyproject_name):
    """A git repository at ``root`` with a pyproject.toml naming ``pyproject_name``; its HEAD."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(f'[project]\nname = "{pyproject_name}"\n')
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=root, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    )
    return head.stdout.strip()


def _package(folder):
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    return folder


def test_a_wheel_installed_in_a_venv_inside_a_user_repository_records_no_commit(tmp_path):
    """The user's own commit says nothing about the esmeta code that ran."""
    user_head = _repo(tmp_path / "user", "their-project")
    installed = _package(tmp_path / "user/.venv/lib/python3.11/site-packages/esmeta_core")
    assert len(user_head) == 40
    assert report.own_checkout(installed) is None
    assert report.git_commit(installed) is None


def test_a_wheel_in_a_venv_inside_an_esmeta_clone_records_no_commit(tmp_path):
    """Even a clone of esmeta: the code that ran is the installed copy, not the clone's."""
    _package(tmp_path / "clone/esmeta_core")
    _repo(tmp_path / "clone", "esmeta_core")
    installed = _package(tmp_path / "clone/.venv/lib/python3.11/site-packages/esmeta_core")
    assert report.git_commit(installed) is None


def test_a_folder_named_esmeta_core_in_another_project_records_no_commit(tmp_path):
    package = _package(tmp_path / "other/esmeta_core")
    _repo(tmp_path / "other", "other-project")
    assert report.git_commit(package) is None


def test_esmeta_own_checkout_records_its_head(tmp_path):
    package = _package(tmp_path / "esmeta/esmeta_core")
    head = _repo(tmp_path / "esmeta", "esmeta_core")
    assert report.own_checkout(package) == (tmp_path / "esmeta").resolve()
    assert report.git_commit(package) == head


def test_outside_any_git_repository_no_commit_is_recorded(tmp_path):
    assert report.git_commit(_package(tmp_path / "site-packages/esmeta_core")) is None


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


def _report_script():
    """scripts/report.py as a module (scripts/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    if "scripts_report" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "scripts" / "report.py"
        spec = importlib.util.spec_from_file_location("scripts_report", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["scripts_report"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules["scripts_report"]


def test_docs_results_md_is_what_scripts_report_writes():
    script = _report_script()
    page = script.results_page()
    assert script.PAGE.read_text() == page, (
        "docs/results.md is out of date with the files under results/: run python scripts/report.py"
    )


def test_results_page_has_every_table_with_its_file_and_command():
    script = _report_script()
    page = script.results_page()
    assert page.startswith("<!-- Generated by `python scripts/report.py`")
    for s in script.SECTIONS:
        assert f"## {s.title}" in page
        assert f"File: `results/{s.path}`. Command: `" in page
    capacity = page.split("## ProtoNet: backprop capacity, separable")[1].split("\n## ")[0]
    assert "| width | first layer | parameters |" in capacity and "32 separable | 16 |" in capacity
    # One convention for spreads over seeds, stated once at the top.
    assert "*sample* standard deviation" in page and "population standard" not in page


def test_every_spread_over_seeds_in_the_result_files_is_the_sample_std():
    """The stored per-seed values give the stored spreads with n - 1 (not n)."""
    results = ROOT / "results"
    rotation = json.loads((results / "evograd/rotation.json").read_text())
    angles = [r["final_angle"] for r in rotation["runs"]["evograd"]]
    assert rotation["summary"]["evograd"]["final_angle_std"] == pytest.approx(
        np.std(angles, ddof=1)
    )
    for row in json.loads((results / "evograd/mwn.json").read_text())["rows"]:
        accuracy = [r["test_accuracy"] for r in row["runs"]]
        assert row["test_accuracy_std"] == pytest.approx(np.std(accuracy, ddof=1)), row["method"]
    for name in ("fwt.json", "fwt-tseng-init/fwt.json", "fwt-tseng-init-pretrained/fwt.json"):
        for row in json.loads((results / "evograd" / name).read_text())["rows"]:
            for setting in row["test"].values():
                per_seed = [s["accuracy"] for s in setting["per_seed"]]
                assert setting["seed_std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_sample_std_divides_by_n_minus_1():
    assert report.sample_std([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))
    assert report.sample_std([0.5]) == 0.0


def test_a_changed_result_file_changes_the_page(tmp_path):
    import shutil

    script = _report_script()
    results = tmp_path / "results"
    shutil.copytree(script.ROOT / "results", results, ignore=shutil.ignore_patterns("*.png"))
    data = json.loads((results / "protonet/main_seeds.json").read_text())
    data["mean"] = 0.5
    (results / "protonet/main_seeds.json").write_text(json.dumps(data))
    page = script.results_page(results)
    assert page != script.results_page() and "| mean +- std | 50.00 +-" in page


def test_training_way_follows_the_config_rule():
    from esmeta_core import configs, evaluation

    for method, way, train_way in [("backprop", 5, 20), ("backprop", 5, None), ("es", 5, 20)]:
        saved = {"method": method, "way": way, "train_way": train_way, "removed_field": 1}
        rule = configs.TrainConfig(method=method, way=way, train_way=train_way).training_way
        assert evaluation.training_way(saved) == rule
    assert evaluation.training_way({"method": "es", "way": 5, "train_way": 20}) == 5
