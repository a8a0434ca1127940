"""Processes sharing one study on one machine (a journal file): each samples its own stream, and a process
that cannot reach the study's tracking store stops before it takes a trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpo.config import from_dict
from hpo.drivers.optuna import OptunaDriver
from hpo.errors import ConfigError
from hpo.results import TrialResult, TrialState
from hpo.space import Param, SearchSpace
from hpo.study.shared import study_tracking_uri

SPACE = SearchSpace([Param("units", "int", 16, 512, log=True, default=64),
                     Param("dropout", "float", 0.0, 0.5, default=0.0),
                     Param("activation", "choice", values=("relu", "gelu", "tanh"), default="relu")])


def _driver(storage: str, sampler: str, seed: int = 0) -> OptunaDriver:
    d = OptunaDriver(SPACE, direction="maximize", seed=seed, study_name="s", storage=storage, sampler=sampler,
                     fail_stale=False, shared=True, n_trials=40, parallel=True)
    d.open({"test": True})
    return d


def _proposals(d: OptunaDriver, n: int) -> list[str]:
    out = []
    for _ in range(n):
        p = d.ask()
        assert p is not None and not hasattr(p, "seconds")
        out.append(json.dumps(p.params, sort_keys=True))
        d.tell(p, TrialResult(number=p.number, params=p.params, seed=0, state=TrialState.COMPLETE,
                              value=float(p.params["dropout"])))
    return out


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_each_process_of_a_shared_study_samples_its_own_stream(tmp_path: Path, sampler: str) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    creator, joiner = _driver(storage, sampler), _driver(storage, sampler)
    assert creator.created and not joiner.created
    assert creator.sampler_seed == 0, "the creating process keeps the study's seed"
    assert joiner.sampler_seed != 0
    # Interleaved asks, as two processes would make them: the start-up proposals of the two streams differ.
    # With one seed in both, the joiner repeated the creator's random start-up configurations one for one.
    mine, theirs = [], []
    for _ in range(8):
        mine += _proposals(creator, 1)
        theirs += _proposals(joiner, 1)
    assert len(set(mine + theirs)) == 16, (mine, theirs)
    trials = creator.study.get_trials()
    assert {t.user_attrs["hpo.sampler_seed"] for t in trials} == {0, joiner.sampler_seed}


def test_a_single_process_study_keeps_its_seeded_stream(tmp_path: Path) -> None:
    """Deriving a stream per process must not change what one process alone proposes."""
    a = _proposals(_driver(f"journal:///{tmp_path / 'a.log'}", "random", seed=3), 6)
    b = _proposals(_driver(f"journal:///{tmp_path / 'b.log'}", "random", seed=3), 6)
    assert a == b


def _cfg(tmp: Path, storage: str, uri: str | None = None):
    return from_dict({"study": {"name": "s", "run_dir": str(tmp / "run")}, "driver": {"storage": storage},
                      "data": {"dataset": "digits"}, "space": {"builder": "mlp"}, "tracking": {"uri": uri}})


def test_processes_of_a_shared_study_use_the_creators_tracking_store(tmp_path: Path) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    creator = _driver(storage, "random")
    uri = study_tracking_uri(_cfg(tmp_path / "a", storage), creator, tmp_path / "a" / "run")
    assert uri == f"sqlite:///{(tmp_path / 'a' / 'run' / 'mlflow.db').resolve()}"
    assert creator.tracking_uri() == uri, "the creator records its effective (embedded) store"
    (tmp_path / "a" / "run").mkdir(parents=True)
    (tmp_path / "a" / "run" / "mlflow.db").write_bytes(b"")  # the creator's store exists on this machine
    joiner = _driver(storage, "random")
    # Its own run directory, no tracking URI given: it still uses the creator's store.
    assert study_tracking_uri(_cfg(tmp_path / "b", storage), joiner, tmp_path / "b" / "run", timeout_s=1) == uri


def test_a_process_that_cannot_reach_the_studys_store_stops_naming_tracking_uri(tmp_path: Path) -> None:
    storage = f"journal:///{tmp_path / 'study.log'}"
    creator = _driver(storage, "random")
    creator.set_tracking_uri("sqlite:////another/machine/runs/s/mlflow.db")  # a file store of another machine
    joiner = _driver(storage, "random")
    with pytest.raises(ConfigError) as err:
        study_tracking_uri(_cfg(tmp_path / "b", storage), joiner, tmp_path / "b" / "run", timeout_s=1)
    assert err.value.field == "tracking.uri" and "--tracking-uri" in str(err.value)
    assert not Path("/another/machine/runs/s/mlflow.db").exists(), "no empty store is made in its place"
    creator.set_tracking_uri("postgresql://u:***@db/mlflow")
    with pytest.raises(ConfigError, match="password"):
        study_tracking_uri(_cfg(tmp_path / "c", storage), joiner, tmp_path / "c" / "run", timeout_s=1)
