"""TrainConfig validation: one rule per field, config files, JSON round trip (hypothesis)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esmeta_core import configs, es, report
from esmeta_core.configs import ConfigError, TrainConfig

BOUNDED = settings(max_examples=60, deadline=None, derandomize=True)
FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
SEED_RANGE = "seed must be a whole number >= 0 and <= 4294967295 (2**32 - 1)"
RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_every_config_field_has_a_validation_rule():
    missing = [name for name in FIELDS if name not in configs.RULES]
    assert not missing, f"add a rule to configs.RULES for {missing}"
    assert set(configs.RULES) == set(FIELDS)  # and no rule for a field that is gone


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
        ({"steps": True}, "steps"),
        ({"max_nonfinite_steps": 0}, "max_nonfinite_steps"),
        ({"population": 7}, "population"),
        ({"way": 2000}, "way"),
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
        ('{"seed": 1.5}', re.escape(SEED_RANGE + ", got 1.5")),
        ('{"shot": 0}', "shot must be a whole number >= 1, got 0"),
        ("[1, 2]", "must be a JSON object of TrainConfig fields, got list"),
        ('{"lr": 0.1,}', "is not valid JSON"),
        ('{"learning_rate": 0.1}', "Unknown config fields \\['learning_rate'\\]"),
    ],
    ids=["lr-null", "train-way-string", "seed-float", "shot-0", "list", "bad-json", "typo"],
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


# Fields that were removed, each with its "off" value and a value that meant "on".
REMOVED = {
    "guide_fraction": (0.0, 0.5),
    "subspace_dim": (0, 256),
    "relative_sigma": (False, True),
    "weight_decay": (0.0, 0.1),
    "first_width": (None, 16),
    "batch": (1, 4),
    "lr_halving_every": (2000, 500),
    "query_chunk": (None, 25),
    "communication": ("psum", "regenerate"),
}


def test_the_removed_fields_are_exactly_the_ones_listed():
    assert set(configs.REMOVED_FIELDS) == set(REMOVED)
    assert not set(REMOVED) & set(FIELDS)


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_field_at_its_off_value_still_loads(name):
    off, _ = REMOVED[name]
    assert TrainConfig.from_json({"lr": 0.5, name: off}) == TrainConfig(lr=0.5)


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_field_at_another_value_is_refused_in_one_line_naming_it(name, tmp_path):
    _, on = REMOVED[name]
    with pytest.raises(ConfigError, match=f"{name}=.*removed.*de88ab2") as info:
        TrainConfig.from_json({name: on})
    assert info.value.field == name and "\n" not in str(info.value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({name: on}))
    with pytest.raises(ConfigError, match=f"{path}: {name}="):
        TrainConfig.load(path)


def test_false_and_zero_are_not_each_others_off_value():
    with pytest.raises(ConfigError, match="relative_sigma"):
        TrainConfig.from_json({"relative_sigma": 0})
    with pytest.raises(ConfigError, match="subspace_dim"):
        TrainConfig.from_json({"subspace_dim": False})


def test_every_committed_run_config_loads_unless_it_used_a_removed_option():
    root = RESULTS
    saved = [(p, json.loads(p.read_text())) for p in root.rglob("config.json")]
    saved += [(p, json.loads(p.read_text()).get("config")) for p in root.rglob("summary.json")]
    saved = [(p, c) for p, c in saved if isinstance(c, dict) and "method" in c]
    assert len(saved) > 50
    refused = set()
    for path, data in saved:
        on = [k for k in REMOVED if k in data and data[k] != REMOVED[k][0]]
        if on:
            with pytest.raises(ConfigError, match="removed"):
                TrainConfig.from_json(data)
            refused.add(path.relative_to(root).parts[1])
        else:
            TrainConfig.from_json(data)
    # Only the ablation rows, Guided ES, subspace ES and first_width runs used them.
    assert refused <= {"ablations", "main-guided-0.01", "subspace", "capacity-2000steps"}, refused


def _sha16(fields: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def test_the_hash_covers_only_the_fields_that_differ_from_their_defaults():
    """``results/protonet/main/config.json`` was saved before ``separable`` existed."""
    path = RESULTS / "protonet" / "main" / "config.json"
    saved = json.loads(path.read_text())
    assert "separable" not in saved
    config = TrainConfig.from_json(saved)
    # The main preset's fields away from their defaults, written out by hand.
    expected = _sha16(
        {
            "query": 5,
            "width": 16,
            "lr": 0.006,
            "lr_schedule": "cosine",
            "lr_final_fraction": 0.1,
            "adam_b1": 0.99,
            "unit_kernels": True,
            "shaping": "pair_z_score",
            "perturb_conv_bias": False,
        }
    )
    assert configs.config_hash(config) == expected
    assert configs.config_hash(configs.PRESETS["main"]) == expected


def test_a_field_added_later_at_its_default_leaves_the_hash_unchanged():
    later = dataclasses.make_dataclass(
        "Later",
        [("new_option", float, dataclasses.field(default=0.0))],
        bases=(TrainConfig,),
        frozen=True,
    )
    main = configs.PRESETS["main"].to_json()
    assert configs.config_hash(later(**main)) == configs.config_hash(configs.PRESETS["main"])
    assert configs.config_hash(later(**main, new_option=0.5)) != configs.config_hash(
        configs.PRESETS["main"]
    )


def test_checkpoints_hashed_the_old_way_are_still_accepted():
    """Before, the hash covered every saved field except the resumable ones (and
    ``guide_fraction`` and ``subspace_dim`` at 0); such checkpoints keep resuming."""
    path = RESULTS / "protonet" / "main" / "config.json"
    saved = json.loads(path.read_text())
    resumable = ("steps", "eval_episodes", "log_every", "checkpoint_every", "max_nonfinite_steps")
    old = _sha16(
        {
            k: v
            for k, v in saved.items()
            if k not in resumable and k not in ("guide_fraction", "subspace_dim")
        }
    )
    config = TrainConfig.from_json(saved)
    accepted = configs.saved_config_hashes(config, saved)
    assert old in accepted and configs.config_hash(config) in accepted
    # A run saved by the last version that had the removed fields (all of them, at their
    # off values), whose config.json this version rewrote on resuming it, still passes.
    last = {**config.to_json(), **{k: off for k, (off, _) in REMOVED.items()}}
    last_hash = _sha16(
        {
            k: v
            for k, v in last.items()
            if k not in resumable and k not in ("guide_fraction", "subspace_dim")
        }
    )
    assert last_hash in configs.saved_config_hashes(config, config.to_json())
    # A config.json edited after the checkpoint does not give the old hash.
    edited = {**saved, "lr": 0.5}
    assert old not in configs.saved_config_hashes(TrainConfig.from_json(edited), edited)


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


def test_the_seed_bound_is_inside_what_jax_random_key_takes():
    """Seeds of 2**63 and above passed validation, then overflowed in ``jax.random.key``."""
    import jax

    from esmeta_core.train_step import step_key

    assert configs.MAX_SEED == 2**32 - 1
    jax.random.key(configs.MAX_SEED)  # the largest seed, and its noise keys, work
    step_key(configs.MAX_SEED, 10**6)
    with pytest.raises(OverflowError):
        jax.random.key(2**63)  # why seeds need a bound at all
    configs.validate_config(dataclasses.replace(configs.PRESETS["smoke"], seed=configs.MAX_SEED))
    for seed in (configs.MAX_SEED + 1, 2**63 - 1, 2**63, 2**64):
        with pytest.raises(ConfigError, match=re.escape(SEED_RANGE)) as info:
            configs.validate_config(dataclasses.replace(configs.PRESETS["smoke"], seed=seed))
        assert info.value.field == "seed"


def test_a_seed_of_2_to_the_63_in_a_config_file_is_one_config_error(tmp_path):
    path = tmp_path / "big-seed.json"
    path.write_text(json.dumps({"seed": 2**63}))
    with pytest.raises(ConfigError, match=re.escape(SEED_RANGE)) as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value)


def test_a_deeply_nested_config_file_is_one_config_error_naming_it(tmp_path):
    """200,000 levels raised RecursionError from the JSON parser."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ConfigError, match="nested too deeply") as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value)
    path.write_text('{"seed": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(ConfigError, match="nested too deeply"):
        TrainConfig.load(path)


def test_a_config_file_over_the_size_cap_is_refused_without_reading_it_all(tmp_path):
    """``--config /dev/zero`` raised MemoryError: the reader had no size cap."""
    import time

    path = tmp_path / "big.json"
    path.write_text(json.dumps({"seed": 0}) + " " * configs.MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than 1000000 bytes") as info:
        TrainConfig.load(path)
    assert str(path) in str(info.value)
    path.write_text(json.dumps({"seed": 0}).ljust(configs.MAX_CONFIG_BYTES))  # at the cap: read
    assert TrainConfig.load(path).seed == 0
    if Path("/dev/zero").exists():
        start = time.perf_counter()
        with pytest.raises(ConfigError, match="/dev/zero is larger than"):
            TrainConfig.load("/dev/zero")
        assert time.perf_counter() - start < 5
