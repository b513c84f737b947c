"""The notebooks' set-up: what it installs where, and the one bootstrap cell of every chapter."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jupytext
import pytest

from esmeta_core import runtime

REQUIREMENTS = ("jax>=0.7.0", "flax>=0.10.0", "optax>=0.2.4", "tqdm>=4.66")
ALL = {"jax": "0.7.2", "flax": "0.11.0", "optax": "0.2.5", "tqdm": "4.67.0"}
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.md"))


def test_nothing_is_installed_when_everything_is_importable():
    assert runtime.plan_install(runtime.RuntimeInfo("cpu", ALL, REQUIREMENTS)) == []


@pytest.mark.parametrize("accelerator", ["tpu", "gpu", "cpu"])
def test_preinstalled_jax_is_pinned_never_replaced(accelerator):
    installed = {"jax": "0.7.1", "tqdm": "4.67.0"}  # an accelerator build of JAX, new enough
    (command,) = runtime.plan_install(runtime.RuntimeInfo(accelerator, installed, REQUIREMENTS))
    assert "jax==0.7.1" in command
    assert not any(c.startswith("jax[") or c.startswith("jax>") for c in command)
    assert {"flax>=0.10.0", "optax>=0.2.4"} <= set(command)


@pytest.mark.parametrize("accelerator", ["tpu", "gpu"])
def test_too_old_jax_on_an_accelerator_is_refused_in_one_line(accelerator):
    info = runtime.RuntimeInfo(accelerator, {**ALL, "jax": "0.5.3"}, REQUIREMENTS)
    with pytest.raises(runtime.RuntimeTooOld) as error:
        runtime.plan_install(info)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("this runtime's JAX is 0.5.3, older than the 0.7.0 that esmeta needs")


def test_too_old_jax_on_a_cpu_is_upgraded():
    info = runtime.RuntimeInfo("cpu", {**ALL, "jax": "0.5.3"}, REQUIREMENTS)
    assert runtime.plan_install(info) == [["-q", "jax>=0.7.0"]]
    assert runtime.install_notes(info) == ["jax 0.5.3 is older than jax>=0.7.0: upgrading it"]


def test_too_old_optax_is_upgraded_and_jax_kept():
    info = runtime.RuntimeInfo("tpu", {**ALL, "optax": "0.2.3"}, REQUIREMENTS)
    assert runtime.plan_install(info) == [["-q", "optax>=0.2.4", "jax==0.7.2"]]
    assert runtime.install_notes(info) == ["optax 0.2.3 is older than optax>=0.2.4: upgrading it"]


def test_pre_releases_names_and_markers_are_compared_as_pip_would():
    installed = {"jax": "0.8.0.dev20251001", "Flax": "0.11.0", "optax": "0.2.5", "tqdm": "4.67.0"}
    requirements = (*REQUIREMENTS, "tensorflow>=2.20; sys_platform == 'nowhere'")
    assert runtime.plan_install(runtime.RuntimeInfo("tpu", installed, requirements)) == []


def test_setup_refuses_a_too_old_accelerator_jax_before_installing(monkeypatch):
    info = runtime.RuntimeInfo("tpu", {"jax": "0.5.3"}, REQUIREMENTS)
    monkeypatch.setattr(runtime, "detect_runtime", lambda: info)
    monkeypatch.setattr(runtime.subprocess, "run", pytest.fail)  # never reaches pip
    with pytest.raises(runtime.RuntimeTooOld, match="older than the 0.7.0"):
        runtime.setup(install=True, verbose=False)


@pytest.mark.parametrize(
    ("accelerator", "jax"), [("tpu", "jax[tpu]"), ("gpu", "jax[cuda12]"), ("cpu", "jax")]
)
def test_missing_jax_is_installed_for_the_runtime_accelerator(accelerator, jax):
    (command,) = runtime.plan_install(runtime.RuntimeInfo(accelerator, {}, REQUIREMENTS))
    assert command[-1] == f"{jax}>=0.7.0"


def test_faked_tpu_runtime_is_detected_without_starting_jax(monkeypatch):
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-1")
    assert runtime.detect_runtime().accelerator == "tpu"


def test_this_checkout_needs_no_install():
    info = runtime.detect_runtime()
    assert info.requirements, "esmeta_core's own requirements are readable"
    assert runtime.plan_install(info) == []


def test_setup_reports_backend_devices_and_memory(capsys):
    report = runtime.setup(install=False)
    assert report["pip"] == []
    assert jax.config.jax_default_matmul_precision == "highest"  # exact f32 checks on TPU
    assert report["device_count"] >= 1 and report["backend"] in ("cpu", "gpu", "tpu")
    assert "backend" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_chapter_starts_with_the_same_bootstrap_cell(path):
    code = [c for c in jupytext.read(path).cells if c.cell_type == "code"]
    devices = re.search(r"setup\(cpu_devices=(\d+)\)", code[0].source)
    expected = runtime.bootstrap_cell(cpu_devices=int(devices.group(1)) if devices else None)
    assert code[0].source.strip() == expected, (
        f"{path.name}: run `python scripts/sync_launch_links.py` to rewrite its setup cell"
    )
