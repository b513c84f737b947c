"""Experiment configurations: one frozen dataclass and named presets.

A preset is a complete :class:`TrainConfig`; the command line overrides a few
fields of it (``esmeta train --preset es-5w5s --steps 100``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from esmeta_core.data.episodes import validate_episode_size
from esmeta_core.data.omniglot import SPLIT_CLASSES, SPLITS

METHODS = ("es", "backprop")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a meta-training run.

    Attributes:
      method: ``"es"`` (evolution strategies) or ``"backprop"``.
      split / eval_split: Omniglot splits to train and to test on.
      way, shot, query: the test-time episode (and the ES training episode).
      train_way: classes per *training* episode for backprop (Snell et al.
        used 60); ``None`` uses ``way``.
      width: Conv4 channels.
      steps: optimizer steps; ``batch`` episodes per step.
      lr, lr_halving_every: Adam learning rate, halved every so many steps.
      population, sigma, chunk_size, communication: the ES estimator.
      query_chunk: embed queries this many at a time (flat memory).
      eval_episodes: test episodes for the final accuracy.
      log_every, checkpoint_every: in steps.
      seed: the one seed of the run (initialisation, episodes and noise).
    """

    method: str = "es"
    split: str = "train"
    eval_split: str = "test"
    way: int = 5
    shot: int = 5
    query: int = 15
    train_way: int | None = None
    width: int = 64
    steps: int = 300
    batch: int = 1
    lr: float = 1e-3
    lr_halving_every: int = 2000
    population: int = 64
    sigma: float = 0.01
    chunk_size: int = 1
    communication: str = "psum"
    query_chunk: int | None = None
    eval_episodes: int = 1000
    log_every: int = 10
    checkpoint_every: int = 50
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown config fields {unknown}; known fields: {sorted(known)}.")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_json(json.loads(Path(path).read_text()))


PRESETS: dict[str, TrainConfig] = {
    # The README's main job: ES-ProtoNet 5-way 5-shot, about 10 minutes on a 2-core CPU.
    # Conv4-16 and 5 training queries per class: on a CPU, ES accuracy per hour is best
    # for a small model (results/tuning/README.md has the runs behind this choice).
    "main": TrainConfig(
        method="es", width=16, steps=1200, population=64, sigma=0.01, lr=3e-3, query=5
    ),
    # Longer runs (tens of minutes on a CPU; minutes on a TPU).
    "es-5w5s": TrainConfig(
        method="es", width=32, steps=600, population=128, sigma=0.01, lr=3e-3, query=5
    ),
    "es-5w5s-conv4-64": TrainConfig(
        method="es", steps=3000, population=256, sigma=0.01, lr=3e-3, query=5
    ),
    "backprop-5w5s": TrainConfig(method="backprop", steps=2000),
    "backprop-5w1s": TrainConfig(method="backprop", shot=1, steps=2000, train_way=20),
    "backprop-20w5s": TrainConfig(method="backprop", way=20, shot=5, steps=2000, train_way=30),
    "backprop-20w1s": TrainConfig(method="backprop", way=20, shot=1, steps=2000, train_way=30),
    # Seconds: for tests and CI.
    "smoke": TrainConfig(
        method="es",
        steps=4,
        width=8,
        population=8,
        query=5,
        eval_episodes=20,
        log_every=1,
        checkpoint_every=2,
    ),
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def _positive_int(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def validate_config(config: TrainConfig, num_devices: int = 1) -> None:
    """Checks a config before any compute; raises ``ValueError`` naming field and range."""
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config.method!r}.")
    for split_field in ("split", "eval_split"):
        if getattr(config, split_field) not in SPLITS:
            raise ValueError(
                f"{split_field} must be one of {SPLITS}, got {getattr(config, split_field)!r}."
            )
    for name in (
        "way",
        "shot",
        "query",
        "width",
        "steps",
        "batch",
        "population",
        "chunk_size",
        "eval_episodes",
        "log_every",
        "checkpoint_every",
    ):
        _positive_int(config, name)
    train_way = config.train_way or config.way
    for split_field, way_field, way in (
        ("split", "train_way" if config.train_way else "way", train_way),
        ("eval_split", "way", config.way),
    ):
        split = getattr(config, split_field)
        validate_episode_size(
            way=way,
            shot=config.shot,
            query=config.query,
            num_classes=SPLIT_CLASSES[split],
            way_name=way_field,
            split_name=f"{split_field}={split!r}",
        )
    if not config.lr > 0:
        raise ValueError(f"lr must be positive, got {config.lr!r}.")
    if config.query_chunk is not None and (config.query * config.way) % config.query_chunk:
        total = config.way * config.query
        raise ValueError(f"query_chunk={config.query_chunk} must divide way * query = {total}.")
    if config.method == "es":
        from esmeta_core import es

        es.validate_config(es_config(config), num_devices)


def es_config(config: TrainConfig):
    """The :class:`esmeta_core.es.ESConfig` of a training config."""
    from esmeta_core import es

    return es.ESConfig(
        population=config.population,
        sigma=config.sigma,
        chunk_size=config.chunk_size,
        communication=config.communication,
    )
