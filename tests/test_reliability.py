"""The workdir's guarantees: one writer per run, no mixing of runs, safe temp files, UTF-8 names.

The lock tests use real processes: the kernel's ``flock`` is what makes a second run wait
for nothing and a killed run block nothing, and only another process shows it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import pytest

from esmeta_core import checkpoint, cli, configs, report, train
from esmeta_core.checkpoint import TrainState

ROOT = Path(__file__).resolve().parents[1]
SMOKE = configs.PRESETS["smoke"]


@pytest.fixture(autouse=True)
def _data_env(omniglot_dir, monkeypatch):
    monkeypatch.setenv("ESMETA_DATA_DIR", str(omniglot_dir))


def _env(omniglot_dir: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), ESMETA_DATA_DIR=str(omniglot_dir))
    env.pop("XLA_FLAGS", None)
    return env


def _wait_for(condition, *, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _lock_holder(path: Path, omniglot_dir: Path) -> subprocess.Popen:
    """A process that holds ``path``'s lock until killed (as a run would)."""
    code = (
        "import sys, time\nfrom esmeta_core import checkpoint\n"
        "with checkpoint.lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        env=_env(omniglot_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    return holder


# ----------------------------------------------------------------------------
# Temporary files never follow a symlink planted at a predictable name.


def test_config_and_result_writers_leave_a_planted_symlinks_target_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / ".config.json.tmp").symlink_to(outside)  # the old fixed temp names
    (workdir / "summary.json.tmp").symlink_to(outside)
    checkpoint.write_config(workdir, SMOKE)
    report.write_result(workdir / "summary.json", {"accuracy": 0.5}, command="esmeta x")
    assert outside.read_text() == "precious"
    assert configs.TrainConfig.load(workdir / "config.json") == SMOKE
    assert json.loads((workdir / "summary.json").read_text())["accuracy"] == 0.5
    left = sorted(p.name for p in workdir.iterdir())
    assert left == [".config.json.tmp", "config.json", "summary.json", "summary.json.tmp"]


def test_atomic_write_replaces_a_symlink_at_the_path_and_keeps_the_umask_mode(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "out.json").symlink_to(outside)
    report.write_text_atomic(tmp_path / "out.json", "{}")
    assert outside.read_text() == "precious" and not (tmp_path / "out.json").is_symlink()
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~mask


# ----------------------------------------------------------------------------
# One writer per run.


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused_at_once_and_the_first_finishes(
    tmp_path, omniglot_dir
):
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "esmeta_core.cli", "train", "--preset", "smoke"]
    flags = ["--workdir", str(workdir), "--no-progress", "--steps", "100"]
    flags += ["--checkpoint-every", "50"]
    first = subprocess.Popen(
        [*command, *flags],
        env=_env(omniglot_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: (workdir / "metrics.jsonl").is_file() or first.poll() is not None)
        for argv in ([], ["--resume"]):  # a fresh run and a resumed one alike
            second = subprocess.run(
                [*command, *flags, *argv],
                env=_env(omniglot_dir),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert first.poll() is None, "the first run ended before the test could race it"
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1, second.stderr
            assert "is in use by another run (lock" in second.stderr
            assert f"process {first.pid}" in second.stderr
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert [r["step"] for r in report.read_metrics(workdir)] == list(range(1, 101))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["100", "50"]


def test_a_held_lock_refuses_train_and_eval_and_a_killed_holder_blocks_nothing(
    tmp_path, omniglot_dir, capsys
):
    workdir = tmp_path / "run"
    train.train_and_evaluate(SMOKE, workdir, progress=False)
    holder = _lock_holder(workdir, omniglot_dir)
    try:
        for argv in (
            ["train", "--workdir", str(workdir), "--resume", "--steps", "6", "--no-progress"],
            ["eval", "--workdir", str(workdir), "--episodes", "2", "--no-progress"],
        ):
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert err == (
                f"esmeta: error: {workdir} is in use by another run (lock {workdir / '.lock'} "
                f"held by process {holder.pid}); wait for it to end, or choose another "
                "--workdir.\n"
            )
        assert report.read_metrics(workdir)[-1]["step"] == 4  # nothing was written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with checkpoint.lock(workdir):  # a dead holder's lock is gone with it
        pass
    assert cli.main(["eval", "--workdir", str(workdir), "--episodes", "2", "--no-progress"]) == 0


def test_the_lock_file_is_never_followed_through_a_symlink(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(outside)
    with pytest.raises(OSError), checkpoint.lock(tmp_path / "run"):
        pass
    assert outside.read_text() == "precious"


# ----------------------------------------------------------------------------
# A new run never mixes with the files of another.


@pytest.mark.parametrize(
    "files,named",
    [
        (["metrics.jsonl"], "metrics.jsonl"),
        (["checkpoints/4/x"], "checkpoints/4"),
        (["checkpoints/2.orbax-checkpoint-tmp/x"], "checkpoints/2.orbax-checkpoint-tmp"),
    ],
)
def test_a_new_run_refuses_a_workdir_with_any_run_file_even_without_config(tmp_path, files, named):
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    with pytest.raises(FileExistsError, match=f"already holds a run.*{named}.*--resume"):
        checkpoint.resume_config(tmp_path, SMOKE, resume=False)


def test_a_new_run_in_a_finished_run_without_config_exits_2_and_keeps_its_files(tmp_path, capsys):
    workdir = tmp_path / "run"
    train.train_and_evaluate(SMOKE, workdir, progress=False)
    (workdir / "config.json").unlink()
    before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    argv = ["train", "--preset", "smoke", "--seed", "1", "--workdir", str(workdir)]
    assert cli.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl, checkpoints/2, 4" in err, err
    assert not (workdir / "config.json").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_a_checkpoint_save_that_orbax_skips_is_an_error(tmp_path):
    def state(step):
        return TrainState(step, {"w": jnp.full(2, step, jnp.float32)}, {"m": jnp.zeros(2)})

    with checkpoint.manager(tmp_path) as checkpoints:
        checkpoint.save(checkpoints, state(4))
        with pytest.raises(FileExistsError, match="step 2 was not saved.*holds step 4"):
            checkpoint.save(checkpoints, state(2))


# ----------------------------------------------------------------------------
# A workdir name must be UTF-8, checked before anything is written.


def test_a_non_utf8_workdir_name_is_one_line_before_anything_is_written(tmp_path, capsys):
    workdir = os.fsdecode(os.fsencode(tmp_path) + b"/run-\xff")
    argv = ["train", "--preset", "smoke", "--workdir", workdir, "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a valid UTF-8 name" in err and "\\xff" in err, err
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# Resume: say when there is nothing to resume from; never go backwards.


def test_resume_with_a_config_but_no_checkpoint_says_it_starts_at_step_0(tmp_path, capsys):
    checkpoint.write_config(tmp_path, SMOKE)
    summary = train.train_and_evaluate(SMOKE, tmp_path, resume=True, progress=False)
    assert summary["resumed_from_step"] == 0
    err = capsys.readouterr().err
    assert f"{tmp_path} holds no checkpoint yet: starting at step 0" in err, err


def test_resume_with_fewer_steps_than_the_saved_run_is_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    train.train_and_evaluate(SMOKE, workdir, progress=False)
    argv = ["train", "--workdir", str(workdir), "--resume", "--steps", "2", "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--steps 2 is below the 4 steps" in err, err
    fewer = dataclasses.replace(SMOKE, steps=3)
    with pytest.raises(configs.ConfigError, match="below the 4 steps"):
        checkpoint.resume_config(workdir, fewer, resume=True)
