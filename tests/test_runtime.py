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
    installed = {"jax": "0.6.2", "tqdm": "4.67.0"}  # an older accelerator build of JAX
    (command,) = runtime.plan_install(runtime.RuntimeInfo(accelerator, installed, REQUIREMENTS))
    assert "jax==0.6.2" in command
    assert not any(c.startswith("jax[") or c.startswith("jax>") for c in command)
    assert {"flax>=0.10.0", "optax>=0.2.4"} <= set(command)


@pytest.mark.parametrize(
    ("accelerator", "jax"), [("tpu", "jax[tpu]"), ("gpu", "jax[cuda12]"), ("cpu", "jax")]
)
def test_missing_jax_is_installed_for_the_runtime_accelerator(accelerator, jax):
    (command,) = runtime.plan_install(runtime.RuntimeInfo(accelerator, {}, REQUIREMENTS))
    assert command[-1] == jax


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
