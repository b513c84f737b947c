"""TrainConfig validation: one rule per field, config files, JSON round trip (hypothesis)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmeta_core import configs, es, report
from esmeta_core.configs import ConfigError, TrainConfig

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def test_every_config_field_has_a_validation_rule():
    missing = [name for name in FIELDS if name not in configs.RULES]
    assert not missing, f"add a rule to configs.RULES for {missing}"
    assert set(configs.RULES) == set(FIELDS)  # and no rule for a field that is gone


def test_communication_choices_match_the_es_module():
    assert configs.COMMUNICATIONS == es.COMMUNICATIONS


def test_shaping_and_schedule_choices_match_their_modules():
    from esmeta_core import optim

    assert configs.SHAPINGS == es.SHAPINGS
    assert configs.LR_SCHEDULES == optim.LR_SCHEDULES


@pytest.mark.parametrize("name", sorted(configs.PRESETS))
def test_every_preset_passes_validation(name):
    configs.validate_config(configs.PRESETS[name])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"lr": float("inf")}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": -0.003}, "lr"),
        ({"lr": None}, "lr"),
        ({"sigma": float("inf")}, "sigma"),
        ({"train_way": "5"}, "train_way"),
        ({"train_way": -1}, "train_way"),
        ({"seed": 1.5}, "seed"),
        ({"seed": -1}, "seed"),
        ({"query_chunk": 0}, "query_chunk"),
        ({"query_chunk": -5}, "query_chunk"),
        ({"query_chunk": 7}, "query_chunk"),
        ({"lr_halving_every": 0}, "lr_halving_every"),
        ({"steps": True}, "steps"),
        ({"max_nonfinite_steps": 0}, "max_nonfinite_steps"),
        ({"communication": "mpi"}, "communication"),
        ({"population": 7}, "population"),
        ({"way": 2000}, "way"),
        ({"guide_fraction": 1.0}, "guide_fraction"),
        ({"guide_fraction": -0.1}, "guide_fraction"),
        ({"guide_fraction": float("nan")}, "guide_fraction"),
        ({"guide_fraction": "0.5"}, "guide_fraction"),
        ({"subspace_dim": -1}, "subspace_dim"),
        ({"subspace_dim": 8.5}, "subspace_dim"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_bad_field_raises_config_error_naming_it(changes, field):
    config = dataclasses.replace(configs.PRESETS["smoke"], **changes)
    with pytest.raises(ConfigError, match=field) as info:
        configs.validate_config(config)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"lr": null}', "lr must be a finite number > 0, got None"),
        ('{"train_way": "5"}', "train_way must be a whole number >= 2 or null, got '5'"),
        ('{"seed": 1.5}', "seed must be a whole number >= 0, got 1.5"),
        ('{"query_chunk": 0}', "query_chunk must be a whole number >= 1 or null, got 0"),
        ("[1, 2]", "must be a JSON object of TrainConfig fields, got list"),
        ('{"lr": 0.1,}', "is not valid JSON"),
        ('{"learning_rate": 0.1}', "Unknown config fields \\['learning_rate'\\]"),
    ],
    ids=["lr-null", "train-way-string", "seed-float", "query-chunk-0", "list", "bad-json", "typo"],
)
def test_bad_config_file_raises_config_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value)


def test_a_whole_number_in_a_float_field_reads_as_a_float():
    config = TrainConfig.from_json({"lr": 1, "sigma": 2})
    assert config.lr == 1.0 and isinstance(config.lr, float) and isinstance(config.sigma, float)


def test_config_hash_ignores_only_the_resumable_fields():
    base = configs.PRESETS["smoke"]
    assert configs.config_hash(dataclasses.replace(base, steps=99)) == configs.config_hash(base)
    assert configs.config_hash(dataclasses.replace(base, lr=0.5)) != configs.config_hash(base)


def test_a_field_added_later_changes_the_hash_only_when_set():
    """Runs saved before ``guide_fraction`` existed keep their hash, so they still resume."""
    import hashlib
    import json

    base = configs.PRESETS["main"]
    before = {
        k: v
        for k, v in base.to_json().items()
        if k not in configs.RESUMABLE and k not in configs.HASHED_ONLY_WHEN_SET
    }
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert configs.config_hash(base) == digest
    guided = dataclasses.replace(base, guide_fraction=0.5)
    assert configs.config_hash(guided) != configs.config_hash(base)
    in_subspace = dataclasses.replace(base, subspace_dim=256)
    assert configs.config_hash(in_subspace) != configs.config_hash(base)


# Values of every kind a config file or a careless caller can produce.
any_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_subnormal=False),
    st.text(max_size=12),
    st.sampled_from(["es", "backprop", "psum", "regenerate", "train", "test", "val"]),
    st.lists(st.integers(), max_size=3),
)


@BOUNDED
@given(changes=st.dictionaries(st.sampled_from(FIELDS), any_value, min_size=1, max_size=4))
def test_validation_raises_only_config_error_for_random_field_values(changes):
    config = dataclasses.replace(configs.PRESETS["smoke"], **changes)
    try:
        configs.validate_config(config)
    except ConfigError as e:
        assert e.field is None or e.field in FIELDS
        return
    # Accepted: then every field passed its own rule.
    for name in FIELDS:
        assert configs.RULES[name](getattr(config, name)) is None


@st.composite
def valid_configs(draw):
    way = draw(st.integers(2, 30))
    shot = draw(st.integers(1, 10))
    query = draw(st.integers(1, 20 - shot))
    return TrainConfig(
        method=draw(st.sampled_from(configs.METHODS)),
        way=way,
        shot=shot,
        query=query,
        train_way=draw(st.one_of(st.none(), st.integers(2, 60))),
        width=draw(st.integers(1, 128)),
        steps=draw(st.integers(1, 10**6)),
        lr=draw(st.floats(1e-8, 10.0)),
        population=2 * draw(st.integers(1, 512)),
        sigma=draw(st.floats(1e-8, 10.0)),
        query_chunk=draw(st.one_of(st.none(), st.sampled_from([1, way, query]))),
        max_nonfinite_steps=draw(st.integers(1, 100)),
        seed=draw(st.integers(0, 2**31)),
    )


@BOUNDED
@given(config=valid_configs())
def test_train_config_json_round_trip(config):
    configs.validate_config(config)
    again = TrainConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert again == config
    assert configs.config_hash(again) == configs.config_hash(config)


@st.composite
def metrics_files(draw):
    steps = sorted(draw(st.sets(st.integers(1, 200), max_size=12)))
    rows = [{"step": s, "loss": draw(st.floats(0, 10))} for s in steps]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    torn = draw(st.booleans())
    if torn:
        cut = draw(st.integers(1, 20))
        text += json.dumps({"step": 201, "loss": 1.0})[:cut]  # a write cut short
    return rows, text, torn


@BOUNDED
@given(problem=metrics_files(), resume_at=st.integers(0, 210))
def test_metrics_trimming_keeps_exactly_the_records_up_to_the_resumed_step(problem, resume_at):
    rows, text, _ = problem
    trimmed = report.trim_metrics(text, resume_at)
    kept = report.parse_metrics(trimmed)
    assert kept == [r for r in rows if r["step"] <= resume_at]
    assert trimmed == "" or trimmed.endswith("\n")
    assert report.trim_metrics(trimmed, resume_at) == trimmed  # idempotent


def test_a_bad_metrics_line_before_the_last_names_the_file():
    text = '{"step": 1}\nnot json\n{"step": 3}\n'
    with pytest.raises(ValueError, match="runs/x/metrics.jsonl line 2"):
        report.parse_metrics(text, path="runs/x/metrics.jsonl")


def test_finite_rule_rejects_huge_overflowing_values_only_when_not_finite():
    assert configs.RULES["lr"](1e30) is None  # finite: the run itself stops if it diverges
    assert configs.RULES["lr"](math.inf) is not None
