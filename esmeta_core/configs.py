"""Experiment configurations: one frozen dataclass and named presets.

A preset is a complete :class:`TrainConfig`; the command line overrides a few
fields of it (``esmeta train --preset es-5w5s --steps 100``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from esmeta_core.data.omniglot import SPLITS

# Classes per split (4 rotations per character); checked by the data tests.
SPLIT_CLASSES = {
    "train": 4112,
    "val": 688,
    "trainval": 4800,
    "test": 1692,
    "background": 3856,
    "evaluation": 2636,
}
METHODS = ("es", "backprop")
IMAGES_PER_CLASS = 20


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
      max_nonfinite_steps: stop when every ES member's loss is non-finite this many
        steps in a row (a non-finite loss or parameter stops the run at once).
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
    max_nonfinite_steps: int = 3
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> TrainConfig:
        """The config of a JSON object (missing fields keep their defaults), checked.

        Raises:
          ConfigError: ``data`` is not an object, names an unknown field, or a field
            has a wrong type or range.
        """
        if not isinstance(data, dict):
            raise ConfigError(
                f"a config must be a JSON object of TrainConfig fields, got {type(data).__name__}."
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"Unknown config fields {unknown}; known fields: {sorted(known)}.")
        # JSON writes 0.001 but also 1 for a float field: floats stay floats.
        floats = {k: float(v) for k, v in data.items() if known[k].type == "float" and _is_int(v)}
        config = cls(**{**data, **floats})
        check_fields(config)
        return config

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Reads a JSON config file; every error names the file.

        Raises:
          ConfigError: not JSON, not an object, or a bad field.
          OSError: the file cannot be read.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}).") from None
        try:
            return cls.from_json(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}", field=e.field) from None


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
        raise ConfigError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


class ConfigError(ValueError):
    """A bad :class:`TrainConfig` value; ``field`` names it (``None`` for a whole file)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(minimum: int, *, optional: bool = False) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        if optional and value is None:
            return None
        if not _is_int(value) or value < minimum:
            kind = f"a whole number >= {minimum}" + (" or null" if optional else "")
            return f"must be {kind}"
        return None

    return rule


def _positive_finite(value: Any) -> str | None:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        return "must be a finite number > 0"
    return None


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def rule(value: Any) -> str | None:
        return None if isinstance(value, str) and value in options else f"must be one of {options}"

    return rule


COMMUNICATIONS = ("psum", "regenerate")  # esmeta_core.es.COMMUNICATIONS (checked by a test)

# One rule per TrainConfig field: value -> None, or what is wrong with it. A test fails
# if a field has no rule, so a field added later must get one here.
RULES: dict[str, Callable[[Any], str | None]] = {
    "method": _one_of(METHODS),
    "split": _one_of(SPLITS),
    "eval_split": _one_of(SPLITS),
    "way": _integer(2),
    "shot": _integer(1),
    "query": _integer(1),
    "train_way": _integer(2, optional=True),
    "width": _integer(1),
    "steps": _integer(1),
    "batch": _integer(1),
    "lr": _positive_finite,
    "lr_halving_every": _integer(1),
    "population": _integer(1),
    "sigma": _positive_finite,
    "chunk_size": _integer(1),
    "communication": _one_of(COMMUNICATIONS),
    "query_chunk": _integer(1, optional=True),
    "eval_episodes": _integer(1),
    "log_every": _integer(1),
    "checkpoint_every": _integer(1),
    "max_nonfinite_steps": _integer(1),
    "seed": _integer(0),
}


def check_fields(config: TrainConfig) -> None:
    """Checks every field on its own (type and range) against :data:`RULES`.

    Raises:
      ConfigError: naming the first bad field, its value and what it must be.
    """
    for field in dataclasses.fields(config):
        rule = RULES.get(field.name)
        if rule is None:
            raise ConfigError(f"{field.name} has no validation rule.", field=field.name)
        value = getattr(config, field.name)
        problem = rule(value)
        if problem:
            raise ConfigError(f"{field.name} {problem}, got {value!r}.", field=field.name)


def validate(config: TrainConfig, num_devices: int = 1) -> None:
    """Checks a config before any compute: every field, then the fields together.

    The one validation path of a run, whether the config comes from a preset, the
    command line, a config file or a saved workdir.

    Raises:
      ConfigError: (a ``ValueError``) naming the field and the allowed range.
    """
    check_fields(config)
    train_way = config.train_way or config.way
    for split_field, way_field, way in (
        ("split", "train_way" if config.train_way else "way", train_way),
        ("eval_split", "way", config.way),
    ):
        classes = SPLIT_CLASSES[getattr(config, split_field)]
        if way > classes:
            raise ConfigError(
                f"{way_field}={way} is larger than the {classes} classes of "
                f"{split_field}={getattr(config, split_field)!r}: choose {way_field} <= {classes}.",
                field=way_field,
            )
    if config.shot + config.query > IMAGES_PER_CLASS:
        raise ConfigError(
            f"shot + query = {config.shot + config.query}, but each class has only "
            f"{IMAGES_PER_CLASS} images: choose shot + query <= {IMAGES_PER_CLASS}.",
            field="query",
        )
    if config.query_chunk is not None and (config.query * config.way) % config.query_chunk:
        total = config.way * config.query
        raise ConfigError(
            f"query_chunk={config.query_chunk} must divide way * query = {total}.",
            field="query_chunk",
        )
    if config.method == "es":
        from esmeta_core import es

        try:
            es.validate_config(es_config(config), num_devices)
        except ValueError as e:
            field = str(e).split("=")[0].split(" ")[0]
            raise ConfigError(str(e), field=field if field in RULES else None) from None


# Fields that a resumed run may change: they do not change what is trained.
RESUMABLE = ("steps", "eval_episodes", "log_every", "checkpoint_every", "max_nonfinite_steps")


def config_hash(config: TrainConfig) -> str:
    """A short SHA-256 of the fields that define what is trained (not :data:`RESUMABLE`)."""
    fields = {k: v for k, v in config.to_json().items() if k not in RESUMABLE}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def differences(saved: TrainConfig, asked: TrainConfig) -> list[str]:
    """``"field: saved -> asked"`` for each field where two configs differ."""
    return [
        f"{f.name}={getattr(saved, f.name)!r} (saved) vs {getattr(asked, f.name)!r} (asked)"
        for f in dataclasses.fields(saved)
        if getattr(saved, f.name) != getattr(asked, f.name)
    ]


def es_config(config: TrainConfig):
    """The :class:`esmeta_core.es.ESConfig` of a training config."""
    from esmeta_core import es

    return es.ESConfig(
        population=config.population,
        sigma=config.sigma,
        chunk_size=config.chunk_size,
        communication=config.communication,
    )
