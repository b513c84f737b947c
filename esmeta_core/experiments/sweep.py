"""The one train-or-reload step of every sweep over ProtoNet training runs.

A sweep (widths, seeds, ablation rows, populations) trains one run per setting,
each into a workdir of its own. Run again, it reloads the runs that finished
(their ``summary.json`` is there), resumes the ones that were interrupted (a
workdir without it) and trains the rest, so a long sweep can be stopped and
restarted at any point without repeating work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esmeta_core import report
from esmeta_core.configs import TrainConfig
from esmeta_core.train import train_and_evaluate

SUMMARY = "summary.json"


def is_finished(workdir: str | Path) -> bool:
    """Whether the run in ``workdir`` has finished (it wrote its ``summary.json``)."""
    return (Path(workdir) / SUMMARY).exists()


def train_or_reload(config: TrainConfig, workdir: str | Path) -> dict[str, Any]:
    """Returns the summary of ``config``'s run in ``workdir``, training only what is missing.

    A finished run's ``summary.json`` is read back as it is; otherwise the run is
    trained (resumed from its last checkpoint if ``workdir`` holds a run's config) and tested
    by :func:`~esmeta_core.train.train_and_evaluate`, without progress bars.
    """
    workdir = Path(workdir)
    if is_finished(workdir):
        return report.load_json(workdir / SUMMARY)
    started = (workdir / "config.json").exists()  # not only its lock: a run that failed early
    return train_and_evaluate(config, workdir, resume=started, progress=False)
