"""The one figure tail, the one train-or-reload sweep step and the one process launcher."""

from __future__ import annotations

import json
import os
import sys

import pytest

from esmeta_core import distributed, plotting
from esmeta_core.configs import PRESETS
from esmeta_core.experiments import sweep

# ---------------------------------------------------------------------------
# plotting.save_figure


def test_save_figure_lays_out_writes_a_png_at_the_project_dpi_and_returns_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    assert plotting.save_figure(fig, tmp_path / "a.png") is fig
    with Image.open(tmp_path / "a.png") as im:
        assert im.size == (2 * plotting.DPI, 1 * plotting.DPI)
    assert plotting.save_figure(fig) is fig  # no file: only the layout
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    plt.close(fig)


# ---------------------------------------------------------------------------
# experiments.sweep.train_or_reload


def test_a_finished_run_is_read_back_without_training(tmp_path, monkeypatch):
    (tmp_path / "summary.json").write_text(json.dumps({"eval": {"5w5s": {"accuracy": 0.5}}}))
    monkeypatch.setattr(sweep, "train_and_evaluate", lambda *a, **k: pytest.fail("trained"))
    assert sweep.is_finished(tmp_path)
    assert sweep.train_or_reload(PRESETS["smoke"], tmp_path)["eval"]["5w5s"]["accuracy"] == 0.5


@pytest.mark.parametrize(
    "files,started",
    [(None, False), ([".lock"], False), ([".lock", "config.json"], True)],
    ids=["new", "failed-before-its-config", "interrupted"],
)
def test_an_unfinished_run_is_trained_and_resumed_only_if_it_wrote_its_config(
    tmp_path, monkeypatch, files, started
):
    workdir = tmp_path / "run"
    if files is not None:  # a run that failed before its config leaves only its lock
        workdir.mkdir()
        for name in files:
            (workdir / name).write_text("")
    calls = []
    monkeypatch.setattr(
        sweep, "train_and_evaluate", lambda config, wd, **kw: calls.append((config, wd, kw)) or {}
    )
    assert not sweep.is_finished(workdir)
    assert sweep.train_or_reload(PRESETS["smoke"], workdir) == {}
    assert calls == [(PRESETS["smoke"], workdir, {"resume": started, "progress": False})]


# ---------------------------------------------------------------------------
# distributed.launch / wait_all / free_port

_SHOW_ENV = (
    "import json, os, sys; print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}));"
    "print('to stderr', file=sys.stderr)"
)


def test_launch_gives_the_child_this_code_the_devices_and_no_cluster_settings(monkeypatch):
    monkeypatch.setenv("ESMETA_COORDINATOR", "10.0.0.1:1")
    monkeypatch.setenv("XLA_FLAGS", "--from-the-parent")
    names = ["PYTHONPATH", "XLA_FLAGS", "ESMETA_COORDINATOR", "EXTRA"]
    procs = [
        distributed.launch(["-c", _SHOW_ENV, *names], devices=3, env={"EXTRA": "1"}),
        distributed.launch(["-c", _SHOW_ENV, *names], merge_stderr=False),
    ]
    (merged, none), (out, err) = distributed.wait_all(procs, timeout=60)
    seen = json.loads(merged.splitlines()[0])
    assert seen == {
        "PYTHONPATH": str(distributed.PACKAGE_PARENT),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=3",
        "ESMETA_COORDINATOR": None,
        "EXTRA": "1",
    }
    assert "to stderr" in merged and none is None
    assert json.loads(out)["XLA_FLAGS"] is None and err.strip() == "to stderr"


def test_wait_all_raises_with_the_output_of_a_failed_process_and_kills_the_rest():
    failing = distributed.launch(["-c", "print('why it failed'); raise SystemExit(3)"])
    sleeper = distributed.launch(["-c", "import time; time.sleep(60)"])
    with pytest.raises(distributed.LaunchError, match="(?s)exited with 3.*why it failed"):
        distributed.wait_all([failing, sleeper], timeout=60)
    assert sleeper.poll() is not None


def test_wait_all_raises_when_a_process_outlives_the_timeout_and_kills_it():
    sleeper = distributed.launch(["-c", "import time; time.sleep(60)"])
    with pytest.raises(TimeoutError, match="within 0.5 s"):
        distributed.wait_all([sleeper], timeout=0.5)
    assert sleeper.poll() is not None


def test_free_port_can_be_bound():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", distributed.free_port()))


def test_the_child_runs_this_interpreter():
    ((out, _),) = distributed.wait_all(
        [distributed.launch(["-c", "import sys; print(sys.executable)"])], timeout=60
    )
    assert os.path.samefile(out.strip(), sys.executable)
