"""Result files: provenance, one writer, metrics, and the pieces of the result tables.

Every result file of the project is written by :func:`write_result`, which
records the command that made it, its config, its wall time and its
provenance (esmeta version, commit, JAX version, devices, machine, date), so any number in the
README or the book can be traced to the code and the run that produced it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esmeta_core.plotting import save_figure

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(args: list[str], cwd: Path) -> str | None:
    """``git ARGS`` run in ``cwd``: its stripped output, or ``None`` if git fails."""
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def own_checkout(package_dir: str | Path = PACKAGE_DIR) -> Path | None:
    """The root of the esmeta checkout that ``package_dir`` lives in, else ``None``.

    The git top-level of ``package_dir``'s folder counts only if it is esmeta's own
    checkout: its ``esmeta_core/`` is ``package_dir`` itself and its ``pyproject.toml``
    names ``esmeta_core``. A wheel installed into a virtual environment inside some
    other repository therefore has no checkout (that repository's commit says nothing
    about the code that ran).
    """
    package_dir = Path(package_dir).resolve()
    top = _git(["rev-parse", "--show-toplevel"], package_dir.parent)
    if not top:
        return None
    root = Path(top).resolve()
    pyproject = root / "pyproject.toml"
    if (root / "esmeta_core").resolve() != package_dir or not pyproject.is_file():
        return None
    if not re.search(r'^name\s*=\s*"esmeta[_-]core"', pyproject.read_text(), re.MULTILINE):
        return None
    return root


def git_commit(package_dir: str | Path = PACKAGE_DIR) -> str | None:
    """``HEAD`` of esmeta's own checkout (:func:`own_checkout`), else ``None``."""
    root = own_checkout(package_dir)
    return None if root is None else _git(["rev-parse", "HEAD"], root)


def esmeta_version() -> str:
    """The installed ``esmeta_core``'s version, else the one its own checkout's
    ``pyproject.toml`` declares, else ``"unknown"``."""
    try:
        return importlib.metadata.version("esmeta_core")
    except importlib.metadata.PackageNotFoundError:
        root = own_checkout()
        text = "" if root is None else (root / "pyproject.toml").read_text()
        found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return found.group(1) if found else "unknown"


def provenance() -> dict[str, Any]:
    """esmeta version, commit, JAX version, backend, devices, processes, machine and date.

    ``git_commit`` is ``None`` unless the code runs from esmeta's own git checkout
    (an installed wheel records its ``esmeta_version`` alone).
    """
    import jax

    return {
        "esmeta_version": esmeta_version(),
        "git_commit": git_commit(),
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _as_json(config: Any) -> Any:
    if config is None or isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if hasattr(config, "_asdict"):
        return config._asdict()
    raise TypeError(f"config must be a dataclass, a NamedTuple or a dict, got {type(config)}")


def write_result(
    path: str | Path,
    payload: dict[str, Any],
    *,
    config: Any = None,
    command: str,
    wall_s: float | None = None,
) -> dict[str, Any]:
    """Writes one result file: command, config, provenance and wall time, then ``payload``.

    Args:
      path: the JSON file to write (its folder is created).
      payload: the results; its keys must not clash with the recorded ones.
      config: the run's settings (a dataclass, NamedTuple or dict).
      command: the command line that reproduces the file, e.g.
        ``"esmeta experiment evograd-mwn --out results/evograd"``.
      wall_s: the run's wall time in seconds.

    Returns:
      The dict written.

    Example:
      >>> import tempfile, pathlib
      >>> out = pathlib.Path(tempfile.mkdtemp()) / "r.json"
      >>> r = write_result(out, {"accuracy": 0.9}, command="esmeta experiment x", wall_s=1.0)
      >>> sorted(r)
      ['accuracy', 'command', 'config', 'provenance', 'wall_s']
    """
    recorded = {
        "command": command,
        "config": _as_json(config),
        "provenance": provenance(),
        "wall_s": None if wall_s is None else round(float(wall_s), 2),
    }
    clash = sorted(set(recorded) & set(payload))
    if clash:
        raise ValueError(f"payload keys {clash} clash with the recorded fields of a result file.")
    result = {**recorded, **payload}
    import jax

    if jax.process_index() != 0:  # a multi-process run: process 0 alone writes
        return result
    write_text_atomic(path, json.dumps(result, indent=1))
    return result


def _umask() -> int:
    """This process's umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` (UTF-8, parents created) so that a reader sees all or nothing.

    The text goes to a new temporary file of a random name in the same folder
    (``tempfile.mkstemp``: created exclusively, never through a symlink planted
    there), is flushed and fsynced, then renamed over ``path`` with ``os.replace``.
    A symlink at ``path`` itself is replaced, not followed.

    Example:
      >>> import tempfile, pathlib
      >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
      >>> write_text_atomic(out, "hi")
      >>> out.read_text()
      'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


RECORDED_FIELDS = ("command", "config", "provenance", "wall_s")
PROVENANCE_FIELDS = ("git_commit", "jax_version", "machine")


def result_files(root: str | Path = "results") -> list[Path]:
    """Every JSON result file under ``root``, sorted.

    A training run's ``config.json`` is left out: it is the run's input (the
    :class:`~esmeta_core.configs.TrainConfig` that its ``summary.json`` records),
    not a result.
    """
    return sorted(
        p
        for p in Path(root).rglob("*.json")
        if not (p.name == "config.json" and (p.parent / "summary.json").exists())
    )


def provenance_problems(result: dict[str, Any]) -> list[str]:
    """What a result file lacks of the fields :func:`write_result` records.

    A file whose provenance is marked ``reconstructed_from`` (written before the
    writer existed, see ``scripts/backfill_provenance.py``) may hold ``None``
    where the value was never recorded; any other file must hold every value.

    Example:
      >>> provenance_problems({"command": "x", "config": {}, "wall_s": 1.0})
      ['provenance']
      >>> provenance_problems({"command": None, "config": None, "wall_s": None,
      ...     "provenance": {"reconstructed_from": "git log", "git_commit": "abc",
      ...                    "jax_version": None, "machine": None}})
      []
    """
    problems = [k for k in RECORDED_FIELDS if k not in result]
    provenance = result.get("provenance")
    if not isinstance(provenance, dict):
        return problems
    problems += [f"provenance.{k}" for k in PROVENANCE_FIELDS if k not in provenance]
    if "reconstructed_from" not in provenance:
        problems += [
            f"{k} is None" for k in ("command", "wall_s") if k in result and result[k] is None
        ]
        problems += [
            f"provenance.{k} is None"
            for k in PROVENANCE_FIELDS
            if k in provenance and provenance[k] is None
        ]
    return problems


def command_line() -> str:
    """This process's command line as a user would type it (``esmeta ...``)."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("esmeta", "cli.py", "__main__.py"):
        argv[0] = "esmeta"
    return " ".join(argv)


def experiment_command(name: str, config: Any, out_dir: str | Path) -> str:
    """The ``esmeta experiment <name>`` call that gives ``config``: its fields off default.

    Example:
      >>> @dataclasses.dataclass(frozen=True)
      ... class C:
      ...     seeds: int = 3
      ...     sizes: tuple[int, ...] = (2, 10)
      >>> experiment_command("x", C(seeds=1, sizes=(4,)), "out")
      'esmeta experiment x --out out --seeds 1 --sizes 4'
    """
    parts = [f"esmeta experiment {name} --out {out_dir}"]
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value != field.default:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            parts.append(f"--{field.name.replace('_', '-')} {text}")
    return " ".join(parts)


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------
# Training runs: metrics, curves, summary line.


def parse_metrics(text: str, *, path: str | Path = "metrics.jsonl") -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` text; a torn last line (a killed write) is dropped.

    Raises:
      ValueError: a line before the last is not a JSON object with a ``step`` (naming
        ``path`` and the line number).
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a JSON object with an integer step")
        except ValueError as e:
            if i == len(lines) - 1 and not text.endswith("\n"):
                break  # torn last line: the write was cut off
            raise ValueError(f"{path} line {number} is not a metrics record ({e}).") from None
        rows.append(row)
    return rows


def trim_metrics(text: str, step: int, *, path: str | Path = "metrics.jsonl") -> str:
    """The ``metrics.jsonl`` text of a run resumed at ``step``: later records and a torn line go."""
    rows = parse_metrics(text, path=path)
    return "".join(json.dumps(row) + "\n" for row in rows if row["step"] <= step)


def read_metrics(workdir: str | Path) -> list[dict[str, float]]:
    """The run's ``metrics.jsonl`` as a list of dicts (a torn last line is left out)."""
    path = Path(workdir) / "metrics.jsonl"
    return parse_metrics(path.read_text(), path=path)


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start).

    Example:
      >>> smoothed([1.0, 3.0, 5.0, 7.0], 2).tolist()
      [1.0, 2.0, 4.0, 6.0]
    """
    values = np.asarray(values, float)
    csum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (csum[idx] - csum[lo]) / (idx - lo)


def plot_learning_curve(workdirs: dict[str, str | Path], out: str | Path | None = None):
    """Training loss and accuracy against step for several runs; saves a PNG if ``out``."""
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, wd in workdirs.items():
        rows = read_metrics(wd)
        steps = np.array([r["step"] for r in rows])
        window = max(1, len(rows) // 20)
        ax_loss.plot(steps, smoothed([r["loss"] for r in rows], window), label=label)
        ax_acc.plot(steps, smoothed([r["accuracy"] for r in rows], window), label=label)
    ax_loss.set(xlabel="step", ylabel="training episode loss", yscale="log")
    ax_acc.set(xlabel="step", ylabel="training episode accuracy")
    ax_acc.legend()
    return save_figure(fig, out)


def summary_line(summary: dict[str, Any]) -> str:
    """The one line the main job ends with."""
    ((setting, result),) = summary["eval"].items()
    return (
        f"Test accuracy ({setting}, {result['episodes']} episodes, {summary['eval_split']} split): "
        f"{100 * result['accuracy']:.2f} % +- {100 * result['ci95']:.2f} (95 % CI)"
    )


# ----------------------------------------------------------------------------
# Small pieces of the result tables (each experiment and benchmark formats its own
# file; scripts/report.py assembles them into docs/results.md).


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table.

    Example:
      >>> print(table(["a", "b"], [[1, 2]]))
      | a | b |
      | --- | --- |
      | 1 | 2 |
    """
    lines = [" | ".join(headers), " | ".join("---" for _ in headers)]
    lines += [" | ".join(str(cell) for cell in row) for row in rows]
    return "\n".join(f"| {line} |" for line in lines)


def sample_std(values: Sequence[float]) -> float:
    """The sample standard deviation (ddof = 1) of per-seed values; 0.0 for a single value.

    Every spread over seeds in the result files and tables is this one, the convention
    docs/results.md states: ``sqrt(sum((x - mean)^2) / (n - 1))``.

    Example:
      >>> sample_std([1.0, 2.0, 3.0]), sample_std([5.0])
      (1.0, 0.0)
    """
    values = np.asarray(values, float)
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


def pm(mean: float, spread: float, *, digits: int = 2, scale: float = 100.0) -> str:
    """``mean +- spread``, both scaled (fractions to percent by default).

    Example:
      >>> pm(0.9156, 0.0070)
      '91.56 +- 0.70'
      >>> pm(32.21, 2.6, digits=1, scale=1)
      '32.2 +- 2.6'
    """
    return f"{scale * mean:.{digits}f} +- {scale * spread:.{digits}f}"


def median_range(median: float, low: float, high: float) -> str:
    """A timing as ``median (min-max)``.

    Example:
      >>> median_range(0.2, 0.1, 0.3)
      '0.2 (0.1-0.3)'
    """
    return f"{median} ({low}-{high})"
