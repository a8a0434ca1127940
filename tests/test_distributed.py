"""Many workers on one study through a real PostgreSQL server and a real MLflow server.

Run against ``HPO_TEST_POSTGRES_URL``, else the local server (``postgresql://root@127.0.0.1:5432/test``, on every
machine of this project); they skip with the reason when nothing listens there, and fail under ``.ci/run``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from tests.conftest import POSTGRES_URL, ROOT, _free_port, postgres_url, wait_healthy

PG = POSTGRES_URL
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _postgres() -> None:
    postgres_url()  # skips with the reason, or fails under .ci/run, when no server answers


def _admin(sql: str) -> None:
    import psycopg

    assert PG is not None
    with psycopg.connect(PG.replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with a PostgreSQL backend store (its own database) and a file artifact root."""
    postgres_url()  # skip or fail before starting anything
    db = f"hpo_mlflow_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{db}"')
    base = PG.rsplit("/", 1)[0]
    art = tmp_path_factory.mktemp("mlflow-artifacts")
    port = _free_port()
    log = art.parent / "mlflow-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{base}/{db}",
         "--artifacts-destination", str(art), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "2", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "8"})
    url = f"http://127.0.0.1:{port}"
    try:
        # 16 s on an idle 2-core machine; CI once saw over 180 s while the other xdist worker trained (the
        # server migrates a fresh database and starts two workers): a failure shows the server's log.
        wait_healthy(f"{url}/health", proc, what="mlflow server", timeout=600, log=log)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _config(tmp: Path, name: str, storage: str, tracking: str, **over: Any) -> Path:
    raw: dict[str, Any] = {
        "study": {"name": name, "n_trials": 40, "run_dir": str(tmp / "run")},
        "driver": {"storage": storage, "heartbeat_s": 1, "grace_s": 4},
        "data": {"dataset": "digits", "limit_train": 400},
        "space": {"builder": "mlp", "params": {"layers": {"fixed": 1}, "units": {"min": 8, "max": 32},
                                               "batchnorm": {"fixed": False}}},
        "training": {"epochs": 1, "batch_size": 128, "save_models": False},
        "tracking": {"uri": tracking},
        "ensemble": {"size": 3},
        "plots": {"enabled": False}, "report": {"enabled": False},
        "guards": {"n_bootstrap": 200},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "hpo.cli", *args], env=env, cwd=ROOT, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)


def _finish(procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for p, log in zip(procs, logs):
        try:
            p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"{log.name} did not finish:\n{log.read_text()[-3000:]}")


_STORAGE: list[Any] = []


def _study(name: str) -> Any:
    """The study, through one storage without a connection pool (the test polls it many times)."""
    import optuna
    from sqlalchemy.pool import NullPool

    if not _STORAGE:
        _STORAGE.append(optuna.storages.RDBStorage(PG, engine_kwargs={"poolclass": NullPool}))
    return optuna.load_study(study_name=name, storage=_STORAGE[0])


def _drop(name: str) -> None:
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=_STORAGE[0] if _STORAGE else PG)
    except KeyError:
        pass


def _counted(study: Any) -> list[Any]:
    import optuna

    S = optuna.trial.TrialState
    return [t for t in study.get_trials() if t.state in (S.COMPLETE, S.PRUNED)
            or (t.state == S.FAIL and "hpo.error" in t.user_attrs)]


def _table(study: Any) -> str:
    """The study's trials, one line each: what a failed count assertion needs to be understood."""
    return "\n".join(f"{t.number} {t.state.name} start={t.datetime_start} end={t.datetime_complete} "
                     f"user={ {k: str(v)[:60] for k, v in t.user_attrs.items() if not k.startswith('audit_')} } "
                     f"system={t.system_attrs}" for t in study.get_trials())


def _trial_runs(tracking: str, name: str) -> list[Any]:
    import mlflow

    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`hpo.kind` = 'trial'", max_results=1000)


def _owner_and_three_workers(tmp_path: Path, name: str, cfg: Path) -> list[Path]:
    """`hpo run CONFIG` and three `hpo worker --study --storage` processes to the end; their logs (the owner's
    first, its summary as JSON). Each worker keeps its files in its own run directory: a stored config never
    chooses one (issue 28)."""
    logs = [tmp_path / f"p{i}.log" for i in range(4)]
    procs = [_start(["run", str(cfg), "--quiet", "--json"], logs[0])]
    procs += [_start(["worker", "--study", name, "--storage", PG, "--quiet", "--run-dir", str(tmp_path / f"w{i}")],
                     logs[i]) for i in (1, 2, 3)]
    _finish(procs, logs)
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    return logs


def test_four_workers_forty_trials_no_duplicates(tmp_path: Path, mlflow_server: str) -> None:
    name = f"four-{uuid.uuid4().hex[:6]}"
    cfg = _config(tmp_path, name, PG, mlflow_server)
    try:
        logs = _owner_and_three_workers(tmp_path, name, cfg)
        study = _study(name)
        finished = _counted(study)
        assert len(finished) == 40 and all(t.state.name == "COMPLETE" for t in finished)
        numbers = [t.number for t in finished]
        configs = {json.dumps(t.params, sort_keys=True) for t in finished}
        assert len(configs) == 40, "no configuration is run twice"  # distinct work, not distinct trial numbers
        workers = {t.user_attrs["hpo.worker"] for t in finished}
        assert len(workers) >= 2, f"the trials were not shared between processes: {workers}"
        runs = [r for r in _trial_runs(mlflow_server, name) if r.info.status == "FINISHED"]
        assert sorted(int(r.data.tags["hpo.trial"]) for r in runs) == sorted(numbers), "one MLflow run per trial"
        parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
        assert len(parents) == 1, "every worker's trial runs nest under the study's one parent run"
        out = logs[0].read_text()
        summary = json.loads(out[out.index("{\n"):])
        assert summary["n_complete"] == 40 and summary["ensemble"] is not None
        assert summary["parent_run_id"] in parents
    finally:
        _drop(name)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_four_processes_default_tracking_forty_distinct_configurations(tmp_path: Path, sampler: str) -> None:
    """What a user runs on one machine: `hpo run --storage` and three `hpo worker`s, no tracking URI anywhere,
    each worker keeping its files in its own run directory. Every process takes trials, no configuration is
    run twice, and every trial has one MLflow run under the study's one parent, in the creator's store."""
    name = f"dflt-{sampler}-{uuid.uuid4().hex[:6]}"
    cfg = _config(tmp_path, name, PG, None, driver={"sampler": sampler})
    try:
        logs = _owner_and_three_workers(tmp_path, name, cfg)
        study = _study(name)
        finished = _counted(study)
        assert len(finished) == 40 and all(t.state.name == "COMPLETE" for t in finished), _table(study)
        configs = [json.dumps(t.params, sort_keys=True) for t in finished]
        repeats = sorted(t.number for t in finished if configs.count(json.dumps(t.params, sort_keys=True)) > 1)
        assert not repeats, f"trials {repeats} repeat another trial's configuration"
        by_process = {t.user_attrs["hpo.worker"] for t in finished}
        assert len(by_process) == 4, f"every process takes trials: {by_process}"
        seeds = {t.user_attrs["hpo.sampler_seed"] for t in finished}
        assert len(seeds) == 4 and 0 in seeds, f"one sampling stream per process, the creator's the study's: {seeds}"
        store = f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
        runs = [r for r in _trial_runs(store, name) if r.info.status == "FINISHED"]
        assert sorted(int(r.data.tags["hpo.trial"]) for r in runs) == sorted(t.number for t in finished), \
            "one MLflow run per trial, all in the creator's store"
        out = logs[0].read_text()
        summary = json.loads(out[out.index("{\n"):])
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {summary["parent_run_id"]}
        assert summary["n_complete"] == 40 and summary["ensemble"] is not None
        for i in (1, 2, 3):  # no worker opened a store of its own
            assert not (tmp_path / f"w{i}" / "mlflow.db").exists()
    finally:
        _drop(name)


def test_a_worker_that_cannot_reach_the_tracking_store_stops_before_any_trial(tmp_path: Path) -> None:
    """The study's tracking server answers the creator's machine only (here: nothing answers at all): a worker
    stops at once with one line naming tracking.uri and the fix, exit status 2, and takes no trial."""
    name = f"unreach-{uuid.uuid4().hex[:6]}"
    closed = f"http://127.0.0.1:{_free_port()}"
    cfg = _config(tmp_path, name, PG, closed, study={"n_trials": 6})
    logs = [tmp_path / "owner.log", tmp_path / "worker.log"]
    try:
        owner = _start(["run", str(cfg), "--quiet"], logs[0])
        deadline = time.monotonic() + 180
        while True:  # the worker joins once the study exists
            try:
                _study(name)
                break
            except KeyError:
                assert owner.poll() is None and time.monotonic() < deadline, logs[0].read_text()[-3000:]
                time.sleep(0.5)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
        worker = subprocess.run([sys.executable, "-m", "hpo.cli", "worker", "--study", name, "--storage", PG,
                                 "--quiet", "--run-dir", str(tmp_path / "w")], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
        _finish([owner], logs[:1])
        assert worker.returncode == 2, worker.stdout[-2000:] + worker.stderr[-3000:]
        errors = [line for line in worker.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "tracking.uri" in errors[0] and "--tracking-uri" in errors[0], worker.stderr
        assert "Traceback" not in worker.stderr
        taken = {t.user_attrs.get("hpo.worker") for t in _study(name).get_trials()}
        assert len(taken) == 1, f"only the owner ran trials: {taken}"
    finally:
        _drop(name)


def test_kill_9_of_a_worker_mid_trial_is_retried_and_nothing_is_lost(tmp_path: Path, mlflow_server: str) -> None:
    import optuna

    name = f"kill-{uuid.uuid4().hex[:6]}"
    # CSVLogger writes a row per epoch into the victim's trial folder: the test sees a trial mid-training.
    # 40 short epochs keep a trial in training for about a second even on a fast machine (CI missed the
    # earlier 0.6 s window after a trial's start on one).
    epochs = 40
    cfg = _config(tmp_path, name, PG, mlflow_server, study={"n_trials": 10}, driver={"stale_trials": "retry"},
                  training={"epochs": epochs, "callbacks": [{"name": "CSVLogger", "args": {"filename": "epochs.csv"}}]})
    logs = [tmp_path / "owner.log", tmp_path / "victim.log", tmp_path / "other.log"]
    try:
        owner = _start(["run", str(cfg), "--quiet"], logs[0])
        victim = _start(["worker", "--study", name, "--storage", PG, "--quiet", "--run-dir", str(tmp_path / "victim")], logs[1])
        other = _start(["worker", "--study", name, "--storage", PG, "--quiet", "--run-dir", str(tmp_path / "other")], logs[2])
        # Wait until the victim runs a trial, after some trials have finished, then kill -9 it.
        deadline = time.monotonic() + 300
        killed = None
        while killed is None:
            assert time.monotonic() < deadline, logs[1].read_text()[-3000:]
            time.sleep(0.05)
            if not _mid_training(tmp_path / "victim", epochs):
                continue
            try:
                trials = _study(name).get_trials(deepcopy=False)
            except KeyError:
                continue
            done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
            mine = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING
                    and t.user_attrs.get("hpo.worker", "").endswith(f":{victim.pid}")]
            # Still between its first and last epochs once the storage answered: it is mid-training, not
            # between its run's end and its tell.
            if done >= 2 and len(mine) == 1 and _mid_training(tmp_path / "victim", epochs):
                victim.kill()
                killed = mine[0]
        victim.wait()
        _finish([owner, other], [logs[0], logs[2]])
        assert owner.returncode == 0 and other.returncode == 0, logs[0].read_text()[-3000:]
        study = _study(name)
        by_number = {t.number: t for t in study.get_trials()}
        assert by_number[killed.number].state == optuna.trial.TrialState.FAIL, "the killed trial must not stay RUNNING"
        assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
        retried = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == killed.number]
        assert retried and retried[0].params == killed.params and retried[0].state == optuna.trial.TrialState.COMPLETE
        assert len(_counted(study)) == 10, _table(study)
        runs = _trial_runs(mlflow_server, name)
        finished_runs = [r for r in runs if r.info.status == "FINISHED"]
        assert len(finished_runs) == 10, (sorted((int(r.data.tags["hpo.trial"]), r.info.status) for r in runs),
                                          _table(study), logs[0].read_text()[-3000:], logs[2].read_text()[-2000:])
        dead = [r for r in _trial_runs(mlflow_server, name) if int(r.data.tags["hpo.trial"]) == killed.number]
        assert dead and dead[0].info.status == "KILLED", "the dead worker's trial run is closed at the end"
    finally:
        for p in (locals().get("owner"), locals().get("victim"), locals().get("other")):
            if p is not None and p.poll() is None:
                p.kill()
        _drop(name)


def _mid_training(run_dir: Path, epochs: int) -> bool:
    """A trial of this worker has logged some but not all of its epochs and has no result yet."""
    return any(2 <= len(p.read_text().splitlines()) <= epochs and not (p.parent / "result.json").exists()
               for p in run_dir.glob("trials/*/epochs.csv"))


class _Proxy:
    """A TCP proxy to the database that can cut every connection and refuse new ones for a while."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = _free_port()
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.server: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.server = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
            self.conns.clear()

    def restore(self) -> None:
        self._listen()


def test_database_outage_workers_retry_and_carry_on(tmp_path: Path, mlflow_server: str) -> None:
    import optuna
    from urllib.parse import urlsplit

    assert PG is not None
    u = urlsplit(PG)
    proxy = _Proxy((u.hostname or "127.0.0.1", u.port or 5432))
    via_proxy = PG.replace(f"{u.hostname}:{u.port or 5432}", f"127.0.0.1:{proxy.port}")
    if f":{proxy.port}" not in via_proxy:
        via_proxy = PG.replace(f"@{u.hostname}/", f"@127.0.0.1:{proxy.port}/")
    name = f"outage-{uuid.uuid4().hex[:6]}"
    cfg = _config(tmp_path, name, via_proxy, mlflow_server, study={"n_trials": 12},
                  driver={"heartbeat_s": 2, "grace_s": 30}, training={"epochs": 2})
    logs = [tmp_path / "owner.log", tmp_path / "worker.log"]
    try:
        procs = [_start(["run", str(cfg), "--quiet"], logs[0]),
                 _start(["worker", "--study", name, "--storage", via_proxy, "--quiet",
                         "--run-dir", str(tmp_path / "w")], logs[1])]
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline
            time.sleep(0.3)
            try:
                done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in _study(name).get_trials(deepcopy=False))
            except KeyError:
                continue
            if done >= 3:
                break
        proxy.cut()
        time.sleep(6)  # the database is unreachable for six seconds
        proxy.restore()
        _finish(procs, logs)
        text = logs[0].read_text() + logs[1].read_text()
        for p, log in zip(procs, logs):
            assert p.returncode == 0, log.read_text()[-4000:]
        assert "storage unreachable" in text, "the outage was not noticed; the test did not test anything"
        study = _study(name)
        counted = _counted(study)
        assert len(counted) == 12 and all(t.state.name == "COMPLETE" for t in counted)
        assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    finally:
        proxy.cut()
        for p in locals().get("procs", []):
            if p.poll() is None:
                p.kill()
        _drop(name)


def test_workers_started_together_on_an_empty_database_all_open_the_study() -> None:
    """Optuna creates its tables without a lock: processes opening a new database at the same moment collide
    (a duplicate key in PostgreSQL's catalog); every one of them must still open the storage."""
    assert PG is not None
    db = f"hpo_race_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{db}"')
    url = f"{PG.rsplit('/', 1)[0]}/{db}"
    start_at = time.time() + 25  # every process imports first, then all open the database at this instant
    # Half open it as a study's driver does, half as `hpo worker` does when it looks up the study's config.
    code = (
        "import sys, time\n"
        "from hpo.drivers.stored import stored_config\n"
        "from hpo.drivers.optuna import resolve_storage\n"
        "from hpo.errors import ConfigError\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "if sys.argv[3] == 'driver':\n"
        "    storage = resolve_storage(sys.argv[1], heartbeat_s=5)\n"
        "    print('opened', len(storage.get_all_studies()))\n"
        "else:\n"
        "    try:\n"
        "        stored_config('no-such-study', sys.argv[1])\n"
        "    except ConfigError as exc:\n"
        "        print('opened 0' if 'no study' in str(exc) else exc)\n"
    )
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, url, str(start_at), kind], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for kind in ["driver", "worker"] * 3]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0 and "opened 0" in out, err[-2000:]
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_a_trial_left_running_without_a_heartbeat_is_failed_and_the_study_finishes(tmp_path: Path) -> None:
    """An ask whose reply is lost in an outage leaves a RUNNING trial no process owns and that never beat.
    Optuna's stale check skips trials without a heartbeat; the study must fail it and finish its budget."""
    import optuna

    from hpo.config import load
    from hpo.study import run_study

    name = f"ghost-{uuid.uuid4().hex[:6]}"
    cfg = load(_config(tmp_path, name, PG, f"sqlite:///{tmp_path / 'mlflow.db'}", study={"n_trials": 3},
                       driver={"heartbeat_s": 1, "grace_s": 2}, ensemble={"enabled": False}))
    ghosts: list[int] = []

    def make_ghost(result: Any, progress: Any) -> None:
        if not ghosts:  # a second handle on the study, without heartbeats: its ask is an orphan
            ghosts.append(optuna.load_study(study_name=name, storage=PG).ask().number)

    out: list[Any] = []
    runner = threading.Thread(target=lambda: out.append(run_study(cfg, on_trial_end=make_ghost)), daemon=True)
    try:
        runner.start()
        runner.join(timeout=180)
        assert not runner.is_alive(), "the study waited forever for a trial nobody runs"
        study = _study(name)
        ghost = next(t for t in study.get_trials() if t.number == ghosts[0])
        assert ghost.state == optuna.trial.TrialState.FAIL and "hpo.ghost" in ghost.user_attrs
        counted = _counted(study)
        assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
        assert out and out[0].n_complete == 3
    finally:
        _drop(name)


def test_a_trial_failed_as_stale_while_it_ran_is_superseded_not_counted(tmp_path: Path) -> None:
    """Another worker fails a live trial as stale (its worker was cut off from the database longer than the
    grace period): when it ends, the storage's FAIL stands, its result and MLflow run say superseded, the study
    runs a replacement, and the summary counts only the trials the storage counts."""
    import optuna

    from hpo.config import load
    from hpo.study import run_study

    name = f"stale-{uuid.uuid4().hex[:6]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load(_config(tmp_path, name, PG, uri, study={"n_trials": 3}, training={"epochs": 2},
                       ensemble={"enabled": False}))
    failed: list[int] = []

    def fail_from_outside(number: int, epoch: int, total: int, logs: Any) -> None:
        if number == 0 and not failed:  # what another worker's stale check does to trial 0, mid-training
            other = optuna.load_study(study_name=name, storage=PG)
            trial = next(t for t in other.get_trials(deepcopy=False) if t.number == 0)
            assert other._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(trial.number)

    try:
        summary = run_study(cfg, on_epoch_end=fail_from_outside)
        assert failed == [0]
        study = _study(name)
        states = {t.number: t.state.name for t in study.get_trials()}
        assert states[0] == "FAIL" and len(_counted(study)) == 3 and summary.n_complete == 3, states
        result = json.loads((cfg.run_dir / "trials" / "00000" / "result.json").read_text())
        assert result["state"] == "FAILED" and result["error"].startswith("superseded")
        runs = {int(r.data.tags["hpo.trial"]): r for r in _trial_runs(uri, name)}
        assert runs[0].data.tags["hpo.state"] == "SUPERSEDED"
        assert all(runs[n].data.tags["hpo.state"] == "COMPLETE" for n in states if states[n] == "COMPLETE")
        assert 0 not in [t["number"] for t in summary.trials if t["state"] == "COMPLETE"]
    finally:
        _drop(name)
