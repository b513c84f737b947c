"""Multi-process `esmeta train`: detection order, same result as one process, resume, failure.

The CLI tests run the real ``esmeta`` command (``python -m esmeta_core.cli``) in
local processes joined over 127.0.0.1 with gloo, on a small preset (``smoke``) and
real Omniglot.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from esmeta_core import checkpoint, distributed, protonet, sharding, train
from esmeta_core.checkpoint import TrainState
from esmeta_core.distributed import free_port as _free_port

ROOT = Path(__file__).resolve().parents[1]
FLAGS = dict(coordinator="10.0.0.1:1234", num_processes=4, process_id=2)
ENV = {
    "ESMETA_COORDINATOR": "10.0.0.9:99",
    "ESMETA_NUM_PROCESSES": "2",
    "ESMETA_PROCESS_ID": "1",
}


def _never() -> None:
    return None


# ---------------------------------------------------------------------------
# Detection order (faked environments; nothing is started).


def test_explicit_flags_win_over_environment_and_cluster():
    cluster = distributed.detect(**FLAGS, environ=ENV, auto_detect=lambda: "SlurmCluster")
    assert cluster == distributed.Cluster("flags", "10.0.0.1:1234", 4, 2)


def test_environment_variables_win_over_a_detected_cluster():
    cluster = distributed.detect(environ=ENV, auto_detect=lambda: "SlurmCluster")
    assert cluster == distributed.Cluster("environment", "10.0.0.9:99", 2, 1)


def test_a_flag_completes_the_environment():
    env = {k: v for k, v in ENV.items() if k != "ESMETA_PROCESS_ID"}
    cluster = distributed.detect(process_id=0, environ=env, auto_detect=_never)
    assert cluster == distributed.Cluster("flags", "10.0.0.9:99", 2, 0)


def test_a_detected_cluster_is_used_when_nothing_is_explicit():
    cluster = distributed.detect(environ={}, auto_detect=lambda: "SlurmCluster")
    assert cluster == distributed.Cluster("SlurmCluster")
    assert cluster.is_multi_process


def test_one_process_when_nothing_is_explicit_or_detected():
    cluster = distributed.detect(environ={}, auto_detect=_never)
    assert cluster == distributed.Cluster(distributed.SINGLE)
    assert not cluster.is_multi_process
    distributed.start(cluster)  # starts nothing
    assert jax.process_count() == 1


def test_jax_auto_detection_finds_slurm_from_its_environment(monkeypatch):
    for name, value in {
        "SLURM_JOB_ID": "1",
        "SLURM_STEP_NODELIST": "node1",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
    }.items():
        monkeypatch.setenv(name, value)
    assert distributed.jax_cluster() == "SlurmCluster"
    assert distributed.detect(environ={}).source == "SlurmCluster"


def test_jax_auto_detection_finds_nothing_on_a_plain_machine(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "TPU_", "KUBERNETES_")):
            monkeypatch.delenv(name)
    assert distributed.jax_cluster() is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coordinator": "10.0.0.1:1234"}, "missing: --num-processes"),
        ({"coordinator": "10.0.0.1", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
        ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "process-id < "),
        ({"coordinator": "h:1", "num_processes": 0, "process_id": 0}, "num-processes >= 1"),
    ],
)
def test_incomplete_or_bad_settings_are_refused_with_the_flag_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.detect(**kwargs, environ={}, auto_detect=_never)


def test_bad_environment_value_is_refused():
    env = dict(ENV, ESMETA_NUM_PROCESSES="two")
    with pytest.raises(ValueError, match="whole number"):
        distributed.detect(environ=env, auto_detect=_never)


def test_cli_refuses_incomplete_process_flags_with_exit_2(capsys):
    from esmeta_core import cli

    code = cli.main(["train", "--preset", "smoke", "--coordinator", "127.0.0.1:1"])
    assert code == 2
    assert "missing: --num-processes" in capsys.readouterr().err


def test_experiment_takes_the_process_flags_too(capsys):
    from esmeta_core import cli

    code = cli.main(["experiment", "population-sweep", "--num-processes", "2"])
    assert code == 2
    assert "missing: --coordinator" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The real command in local processes.

STEPS = 20
TIMEOUT_S = 600  # a loaded 2-core CI machine compiles slowly; normally ~1-2 min


def _esmeta(args, *, devices: int, rank: int | None = None, port: int = 0, nproc: int = 2):
    data_dir = str(ROOT.parent / "shared" / "data" / "omniglot")
    env = {} if "ESMETA_DATA_DIR" in os.environ else {"ESMETA_DATA_DIR": data_dir}
    cmd = ["-m", "esmeta_core.cli", *args]
    if rank is not None:
        cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", nproc]
        cmd += ["--process-id", rank]
    return distributed.launch(cmd, devices=devices, env=env, cwd=ROOT, merge_stderr=False)


def _wait(procs, timeout=TIMEOUT_S):
    return distributed.wait_all(procs, timeout=timeout)


def _train(workdir, *, processes: int, devices: int, steps: int = STEPS, extra=()):
    args = ["train", "--preset", "smoke", "--steps", steps, "--workdir", workdir, "--no-progress"]
    args += list(extra)
    if processes == 1:
        return _wait([_esmeta(args, devices=devices)])
    port = _free_port()
    return _wait([_esmeta(args, devices=devices, rank=r, port=port) for r in range(processes)])


def _final_params(workdir):
    config = checkpoint.saved_config(workdir)
    template = train.init_state(config, protonet.Conv4(config.width))
    state = checkpoint.restore(workdir, TrainState(0, template.params, None))
    return state.step, state.params


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory, omniglot_dir):
    workdir = tmp_path_factory.mktemp("one") / "run"
    _train(workdir, processes=1, devices=4)
    return workdir


def _assert_same_params(a, b):
    (step_a, pa), (step_b, pb) = _final_params(a), _final_params(b)
    assert step_a == step_b == STEPS
    flat_a, flat_b = jax.tree.leaves(pa), jax.tree.leaves(pb)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_two_processes_of_two_devices_end_with_the_parameters_of_one_process_of_four(
    one_process_run, tmp_path
):
    workdir = tmp_path / "run"
    outs = _train(workdir, processes=2, devices=2)
    _assert_same_params(workdir, one_process_run)
    # The params moved: the comparison is not between two initialisations.
    init = train.init_state(checkpoint.saved_config(workdir), protonet.Conv4(8)).params
    final = jax.tree.leaves(_final_params(workdir)[1])
    moved = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(final, jax.tree.leaves(init), strict=True)
    )
    assert moved > 1e-3
    # One set of files; process 0 alone prints.
    assert "Wrote" in outs[0][0] and "Test accuracy" in outs[0][0]
    assert [line for line in outs[1][0].splitlines() if not line.startswith("[Gloo]")] == []
    assert sorted(p.name for p in workdir.iterdir()) == [
        ".lock",  # process 0's one-writer lock (checkpoint.lock), left in place
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "summary.json",
    ]
    steps = [line for line in (workdir / "metrics.jsonl").read_text().splitlines() if line]
    assert len(steps) == STEPS  # written once, not once per process


def test_a_two_process_run_resumes_in_one_process_with_the_same_result(one_process_run, tmp_path):
    # orbax restores the replicated arrays onto whatever mesh the resuming run has, and the
    # estimate does not depend on the device count, so the process count may change.
    workdir = tmp_path / "run"
    _train(workdir, processes=2, devices=2, steps=STEPS // 2)
    assert checkpoint.latest_step(workdir) == STEPS // 2
    _train(workdir, processes=1, devices=4, extra=["--resume"])
    _assert_same_params(workdir, one_process_run)


def test_a_killed_process_makes_the_other_exit_nonzero_within_the_bound_and_keeps_checkpoints(
    tmp_path, omniglot_dir
):
    workdir, port = tmp_path / "run", _free_port()
    args = ["train", "--preset", "smoke", "--steps", 100000, "--workdir", workdir]
    args += ["--no-progress"]
    procs = [_esmeta(args, devices=2, rank=r, port=port) for r in range(2)]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while (checkpoint.latest_step(workdir) or 0) < 4:
            assert time.monotonic() < deadline, "no checkpoint written in time"
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
            time.sleep(1)
        procs[1].kill()
        killed_at = time.monotonic()
        try:
            procs[0].wait(timeout=sharding.FAILURE_BOUND_S + 10)  # slack: a loaded CI machine
        except subprocess.TimeoutExpired:
            pytest.fail(f"process 0 still running {sharding.FAILURE_BOUND_S + 10} s after")
        took = time.monotonic() - killed_at
        assert procs[0].returncode != 0
        assert took <= sharding.FAILURE_BOUND_S + 10
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    step, params = _final_params(workdir)  # the last checkpoint is readable
    assert step >= 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
