"""The ``esmeta`` command on bad input: a non-zero exit, one clear line, no traceback.

Rows of the reliability issue (#15) covered here: ``esmeta eval --split nope`` /
``--episodes 0`` (and malformed ``--settings``), every bad-data row (npz of
float, all-NaN or inverted images, a small npz claiming 1500 characters, a zip
with a 300 MiB member, a PNG bomb, 50x50 PNGs) as met by ``esmeta train``, bad
config values and config files, ``--resume`` with no run, a workdir under a file,
and ``--sigma 1e30`` (training that diverges).
Most rows call ``cli.main`` in this process (the same code, without a Python and JAX
start per row); two run the real command in a subprocess. The in-process rows (huge ``--lr``,
backprop, resume overrides, read-only file systems) are in ``tests/test_train.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from bad_files import npz_with_header, png_header_only, png_of_size

from esmeta_core import cli, evaluation

ROOT = Path(__file__).resolve().parents[1]
SEED_RANGE = "seed must be a whole number >= 0 and <= 4294967295 (2**32 - 1)"


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def _esmeta_command(
    *args: str, data_dir: Path | None = None, timeout: float = 300, tfds: bool = False
) -> Result:
    """Runs the installed ``esmeta`` command (or ``python -m esmeta_core.cli``) on this checkout.

    ``tfds``: with ``ESMETA_DATA_SOURCE=tfds``.
    """
    script = Path(sys.executable).with_name("esmeta")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "esmeta_core.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    if data_dir is not None:
        env["ESMETA_DATA_DIR"] = str(data_dir)
    if tfds:
        env["ESMETA_DATA_SOURCE"] = "tfds"
    done = subprocess.run(
        [*command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def esmeta(capsys, monkeypatch):
    """``esmeta ARGS`` in this process (``cli.main``): the same code as the command, no JAX start.

    An uncaught exception propagates and fails the test, which is what "no traceback"
    asks of the real command; ``test_diverging_training_exits_non_zero_without_a_summary`` and
    ``test_a_bad_argument_of_the_real_command_exits_2`` run the command itself.
    """

    def run(*args: str, data_dir: Path | None = None, timeout: float = 300) -> Result:
        del timeout  # a subprocess option
        if data_dir is not None:
            monkeypatch.setenv("ESMETA_DATA_DIR", str(data_dir))
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as e:  # argparse errors
            code = e.code
        out = capsys.readouterr()
        return Result(code, out.out, out.err)

    return run


def _assert_clean_failure(result, *needles: str):
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for needle in needles:
        assert needle in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--split", "nope"], "invalid choice: 'nope'"),
        (["--episodes", "0"], "--episodes: must be >= 1"),
        (["--episodes", "-3"], "--episodes: must be >= 1"),
        (["--episodes", "ten"], "--episodes: expected a whole number"),
        (["--settings", "5w0s"], "1 <= shot <= 19"),
        (["--settings", "5x5"], "expected WAYwSHOTs"),
        (["--settings", ""], "expected WAYwSHOTs"),
        (["--settings", "5w1s,5w1s"], "listed twice"),
        (["--width", "0"], "--width: must be >= 1"),
    ],
)
def test_bad_eval_arguments_exit_2_naming_the_argument(esmeta, tmp_path, args, needle):
    result = esmeta("eval", "--workdir", str(tmp_path), *args, timeout=60)
    assert result.returncode == 2
    _assert_clean_failure(result, needle)


def test_a_bad_argument_of_the_real_command_exits_2(tmp_path):
    result = _esmeta_command("eval", "--workdir", str(tmp_path), "--episodes", "0", timeout=120)
    assert result.returncode == 2
    _assert_clean_failure(result, "--episodes: must be >= 1")


def test_evaluate_refuses_zero_episodes_with_a_clear_error():
    # The library path behind `esmeta eval`: no bare "need at least one array to concatenate".
    with pytest.raises(ValueError, match="episodes must be a positive integer, got 0"):
        evaluation.evaluate(
            None, None, np.zeros((5, 20, 28, 28), np.float32), way=5, shot=1, episodes=0
        )


def _bad_background(kind: str, path_npz: Path, path_zip: Path) -> None:
    """Writes the bad ``images_background`` file of one table row."""
    if kind == "float":
        np.savez_compressed(path_npz, images=np.ones((2, 20, 105, 105), np.float32))
    elif kind == "nan":
        np.savez_compressed(path_npz, images=np.full((2, 20, 105, 105), np.nan, np.float32))
    elif kind == "inverted":
        drawing = np.random.default_rng(0).random((1, 1, 105, 105)) < 0.92  # True = background
        np.savez_compressed(path_npz, images=np.tile(~drawing, (964, 20, 1, 1)))
    elif kind == "claims-1500":
        npz_with_header(path_npz, (1500, 20, 105, 105))
    elif kind == "zip-300-mib-member":
        with zipfile.ZipFile(path_zip, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            with z.open("images_background/A/character01/0001_01.png", "w", force_zip64=True) as f:
                for _ in range(38):
                    f.write(bytes(8 << 20))
    elif kind == "png-bomb":
        with zipfile.ZipFile(path_zip, "w") as z:
            z.writestr("images_background/A/character01/0001_01.png", png_header_only(20000, 20000))
    elif kind == "png-50x50":
        with zipfile.ZipFile(path_zip, "w") as z:
            for d in range(1, 21):
                z.writestr(f"images_background/A/character01/0001_{d:02d}.png", png_of_size(50))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("float", "dtype float32, expected bool"),
        ("nan", "dtype float32, expected bool"),
        ("inverted", "look inverted"),
        ("claims-1500", "holds 1500 characters, expected 964"),
        ("zip-300-mib-member", "unpacks to"),
        ("png-bomb", "DecompressionBombError"),
        ("png-50x50", "is 50x50, expected 105x105"),
    ],
)
def test_train_on_bad_data_exits_2_with_one_clear_line(
    esmeta, tmp_path, omniglot_dir, kind, needle
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images_evaluation.npz").symlink_to(omniglot_dir / "images_evaluation.npz")
    (data / "splits").symlink_to(omniglot_dir / "splits")
    _bad_background(kind, data / "images_background.npz", data / "images_background.zip")
    result = esmeta(
        "train", "--workdir", str(tmp_path / "run"), "--steps", "1", "--no-progress", data_dir=data
    )
    assert result.returncode == 2
    _assert_clean_failure(result, "esmeta: error:", "images_background", needle)


@pytest.mark.parametrize(
    ("args", "config_text", "needle"),
    [
        (["--lr", "inf"], None, "lr must be a finite number > 0, got inf"),
        (["--train-way", "-1"], None, "train_way must be a whole number >= 2"),
        (["--seed", "-1"], None, SEED_RANGE + ", got -1"),
        ([], '{"lr": null}', "lr must be a finite number > 0, got None"),
        ([], '{"train_way": "5"}', "train_way must be a whole number >= 2 or null, got '5'"),
        ([], '{"seed": 1.5}', SEED_RANGE + ", got 1.5"),
        ([], '{"steps": 0}', "steps must be a whole number >= 1, got 0"),
        ([], '{"population": -5}', "population must be a whole number >= 1"),
        ([], '{"query_chunk": 4}', "query_chunk=4: this option was removed from esmeta"),
        ([], "[1, 2]", "must be a JSON object of TrainConfig fields, got list"),
        ([], '{"lr": 0.1,', "is not valid JSON"),
    ],
    ids=[
        "lr-inf",
        "train-way-negative",
        "seed-negative",
        "file-lr-null",
        "file-train-way-string",
        "file-seed-float",
        "file-steps-0",
        "file-population-negative",
        "file-removed-field-set",
        "file-json-list",
        "file-bad-json",
    ],
)
def test_bad_train_config_exits_2_naming_the_field(esmeta, tmp_path, args, config_text, needle):
    if config_text is not None:
        (tmp_path / "bad.json").write_text(config_text)
        args = [*args, "--config", str(tmp_path / "bad.json")]
    result = esmeta("train", "--workdir", str(tmp_path / "run"), *args, timeout=60)
    assert result.returncode == 2
    _assert_clean_failure(result, "esmeta: error:", needle)
    if config_text is not None:
        assert str(tmp_path / "bad.json") in result.stderr  # the file is named
    assert not (tmp_path / "run").exists()


def test_resume_with_no_run_and_a_workdir_under_a_file_exit_2(esmeta, tmp_path, omniglot_dir):
    result = esmeta("train", "--workdir", str(tmp_path / "none"), "--resume", timeout=60)
    assert result.returncode == 2
    _assert_clean_failure(result, "holds no run to continue")
    (tmp_path / "file").write_text("")
    result = esmeta(
        "train",
        "--preset",
        "smoke",
        "--workdir",
        str(tmp_path / "file" / "run"),
        "--no-progress",
        data_dir=omniglot_dir,
    )
    assert result.returncode == 2
    _assert_clean_failure(result, "esmeta: error:", str(tmp_path / "file"))


def test_diverging_training_exits_non_zero_without_a_summary(tmp_path, omniglot_dir):
    workdir = tmp_path / "run"
    result = _esmeta_command(
        "train",
        "--preset",
        "smoke",
        "--sigma",
        "1e30",
        "--workdir",
        str(workdir),
        "--no-progress",
        data_dir=omniglot_dir,
    )
    assert result.returncode == 3
    _assert_clean_failure(result, "training stopped", "last good checkpoint")
    assert not (workdir / "summary.json").exists()


# A package missing after `pip install --no-deps` (as the notebooks install esmeta_core) or an
# extra not installed: one `esmeta: error:` line with the pip command, exit status 2.


def test_a_missing_dependency_is_one_line_with_the_install_command(esmeta, monkeypatch):
    monkeypatch.setitem(sys.modules, "optax", None)  # `import optax` now fails
    monkeypatch.delitem(sys.modules, "esmeta_core.experiments.evograd_rotation", raising=False)
    for args in (("experiment", "evograd-rotation", "--help"), ("experiment", "evograd-rotation")):
        result = esmeta(*args)
        assert result.returncode == 2, result
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("esmeta: error: ") and "optax" in line
        assert "install it with: pip install 'optax>=" in line or line.endswith("pip install optax")


def test_an_import_error_that_names_its_install_command_is_printed_as_is(esmeta, monkeypatch):
    from esmeta_core.data import tfds_source

    def config_needing_tfds(*_):
        raise ImportError(tfds_source.INSTALL_HINT, name="tensorflow")

    monkeypatch.setitem(cli.COMMANDS, "config", config_needing_tfds)
    result = esmeta("config", "--preset", "smoke")
    assert result.returncode == 2
    assert result.stderr.strip() == f"esmeta: error: {tfds_source.INSTALL_HINT}"


def test_an_import_error_inside_esmeta_keeps_its_traceback(esmeta, monkeypatch):
    def broken(*_):
        raise ModuleNotFoundError("No module named 'esmeta_core.gone'", name="esmeta_core.gone")

    monkeypatch.setitem(cli.COMMANDS, "config", broken)
    with pytest.raises(ModuleNotFoundError):
        esmeta("config", "--preset", "smoke")


@pytest.mark.parametrize(
    ("args", "config_text", "needle"),
    [
        (["--seed", str(2**63)], None, SEED_RANGE + f", got {2**63}"),
        (["--seed", str(2**32)], None, SEED_RANGE + f", got {2**32}"),
        ([], json.dumps({"seed": 2**63}), SEED_RANGE + f", got {2**63}"),
        ([], "[" * 200_000 + "]" * 200_000, "is nested too deeply to be a config"),
        (["--config", "/dev/zero"], None, "/dev/zero is larger than 1000000 bytes"),
    ],
    ids=["seed-2**63", "seed-2**32", "file-seed-2**63", "file-deep", "dev-zero"],
)
def test_big_seeds_deep_and_endless_config_files_exit_2(
    esmeta, tmp_path, args, config_text, needle
):
    """Seeds of 2**63 crashed in jax.random.key; deep JSON and /dev/zero crashed the reader."""
    if "/dev/zero" in args and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    if config_text is not None:
        (tmp_path / "bad.json").write_text(config_text)
        args = [*args, "--config", str(tmp_path / "bad.json")]
    result = esmeta("train", "--workdir", str(tmp_path / "run"), *args)
    assert result.returncode == 2
    _assert_clean_failure(result, "esmeta: error:", needle)
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_tfds_source_without_tensorflow_is_one_line_and_exit_2(tmp_path, omniglot_dir):
    """The real command, as a user meets it: the install hint, nothing else."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    args = ("train", "--preset", "smoke", "--workdir", str(tmp_path / "run"), "--no-progress")
    result = _esmeta_command(*args, data_dir=omniglot_dir, tfds=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    _assert_clean_failure(result, "esmeta: error:", "pip install 'esmeta_core[tfds]'")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]
