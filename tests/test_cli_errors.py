"""The real ``esmeta`` command on bad input: a non-zero exit, one clear line, no traceback.

Rows of the reliability issue (#15) covered here: ``esmeta eval --split nope`` /
``--episodes 0`` (and malformed ``--settings``), and every bad-data row (npz of
float, all-NaN or inverted images, a small npz claiming 1500 characters, a zip
with a 300 MiB member, a PNG bomb, 50x50 PNGs) as met by ``esmeta train``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_files import npz_with_header, png_header_only, png_of_size

from esmeta_core import evaluation

ROOT = Path(__file__).resolve().parents[1]


def _esmeta(*args: str, data_dir: Path | None = None, timeout: float = 300):
    """Runs the installed ``esmeta`` command (or ``python -m esmeta_core.cli``) on this checkout."""
    script = Path(sys.executable).with_name("esmeta")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "esmeta_core.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    if data_dir is not None:
        env["ESMETA_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*command, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


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
def test_bad_eval_arguments_exit_2_naming_the_argument(tmp_path, args, needle):
    result = _esmeta("eval", "--workdir", str(tmp_path), *args, timeout=60)
    assert result.returncode == 2
    _assert_clean_failure(result, needle)


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
def test_train_on_bad_data_exits_2_with_one_clear_line(tmp_path, omniglot_dir, kind, needle):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images_evaluation.npz").symlink_to(omniglot_dir / "images_evaluation.npz")
    (data / "splits").symlink_to(omniglot_dir / "splits")
    _bad_background(kind, data / "images_background.npz", data / "images_background.zip")
    result = _esmeta(
        "train", "--workdir", str(tmp_path / "run"), "--steps", "1", "--no-progress", data_dir=data
    )
    assert result.returncode == 2
    _assert_clean_failure(result, "esmeta: error:", "images_background", needle)
