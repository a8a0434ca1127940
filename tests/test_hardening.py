"""Bad input never gets past validation as anything but one ConfigError; secrets stay out of every record."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo.config import from_dict, load
from hpo.data import load_digits_splits
from hpo.errors import ConfigError
from hpo.space import SearchSpace, apply_overrides, discover, validate_param
from search_spaces import get_builder

SPACE = discover(get_builder("mlp"), load_digits_splits().spec)

junk = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                 st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
spec_keys = st.sampled_from(["min", "max", "step", "log", "values", "fixed", "default", "mni", "choices"])
override = st.dictionaries(st.one_of(st.sampled_from(SPACE.names), st.text(max_size=6)),
                           st.one_of(st.dictionaries(spec_keys, junk, max_size=4), junk), max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(override)
def test_any_override_gives_a_valid_space_or_one_config_error(ov: dict[str, Any]) -> None:
    try:
        space = apply_overrides(SPACE, ov)
    except ConfigError as exc:
        assert exc.field.startswith("space.params."), exc.field
        return
    assert isinstance(space, SearchSpace)
    for p in space.params:
        validate_param(p, p.name)
        if p.kind in ("int", "float"):
            assert p.low <= p.default <= p.high


sections = st.sampled_from(["study", "driver", "data", "space", "training", "objective", "tracking", "ensemble",
                            "guards", "tensorboard", "plots", "report", "bogus"])
fields = st.sampled_from(["name", "seed", "n_trials", "sampler", "pruner", "dataset", "epochs", "batch_size", "metric",
                          "direction", "enabled", "size", "combine", "method", "callbacks", "params", "builder",
                          "gap_threshold", "n_bootstrap", "confidence", "limit_train", "validation_size", "uri", "x"])
raw_configs = st.dictionaries(sections, st.one_of(st.dictionaries(fields, junk, max_size=3), junk), max_size=4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_configs)
def test_any_config_is_accepted_or_refused_with_a_named_field(raw: dict[str, Any]) -> None:
    try:
        from_dict(raw)
    except ConfigError as exc:
        assert exc.field and exc.message
        head = exc.field.split(".")[0].split("[")[0]
        assert head in set(raw) | {"config"}, exc.field


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    p = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    p.write_text(f"study: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError) as err:
        load(p)
    assert err.value.field == "config" and not marker.exists()


def test_passwords_in_storage_urls_never_reach_records(tmp_path: Path) -> None:
    """A real PostgreSQL Optuna storage with a password in its URL (the server trusts loopback)."""
    from .conftest import postgres_url

    base = postgres_url()
    import optuna

    from hpo.study import run_study

    from .conftest import small_config

    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    url = base.replace("://root@", f"://root:{secret}@") if "://root@" in base else base
    name = "pg-" + uuid.uuid4().hex[:8]
    cfg = small_config(tmp_path, study={"name": name, "n_trials": 2}, driver={"storage": url},
                       ensemble={"method": "top_k", "size": 2})
    try:
        summary = run_study(cfg)
        assert summary.n_complete == 2
        blobs = [p.read_text(errors="ignore") for p in cfg.run_dir.rglob("*")
                 if p.is_file() and p.suffix in (".json", ".yaml", ".html", ".jsonl")]
        client = mlflow.tracking.MlflowClient(summary.tracking_uri)
        exp = client.get_experiment_by_name(name)
        for r in client.search_runs([exp.experiment_id]):
            blobs += [str(r.data.params), str(r.data.tags)]
        if secret in url:
            assert all(secret not in b for b in blobs), "a password leaked into a record"
            assert any("root:***@" in b for b in blobs)
        study = optuna.load_study(study_name=name, storage=url)
        assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 2
    finally:
        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass
