"""Shared fixtures: tiny real data (scikit-learn digits), small configs, one finished study per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from hpo.config import StudyConfig, from_dict

ROOT = Path(__file__).resolve().parent.parent
LOCAL_POSTGRES = "postgresql://root@127.0.0.1:5432/test"  # the server every machine of this project runs


def _postgres_url() -> str | None:
    """``HPO_TEST_POSTGRES_URL``, else the local server when something listens on 127.0.0.1:5432."""
    url = os.environ.get("HPO_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        return None
    return LOCAL_POSTGRES


POSTGRES_URL = _postgres_url()


def service_missing(message: str) -> None:
    """Skip a test whose service is missing, with the reason; fail instead where services are required
    (``HPO_REQUIRE_SERVICES=1``, which .ci/run sets, or ``CI``)."""
    if os.environ.get("HPO_REQUIRE_SERVICES") or os.environ.get("CI"):
        pytest.fail(f"a required service is missing: {message}")
    pytest.skip(message)


def postgres_url() -> str:
    """The PostgreSQL server the tests use (see :func:`_postgres_url`); skips or fails when there is none."""
    if POSTGRES_URL is None:
        service_missing("PostgreSQL: nothing listens on 127.0.0.1:5432 and HPO_TEST_POSTGRES_URL is not set")
    assert POSTGRES_URL is not None
    return POSTGRES_URL


def small_config(tmp: Path, **sections: Any) -> StudyConfig:
    """A fast digits/mlp config; keyword sections update the defaults (``driver={"name": "hyperopt"}``)."""
    raw: dict[str, Any] = {
        "study": {"name": "t", "seed": 0, "n_trials": 3, "run_dir": str(tmp / "run")},
        "data": {"dataset": "digits"},
        "space": {"builder": "mlp", "params": {"layers": {"min": 1, "max": 2}, "units": {"min": 16, "max": 64, "log": True}}},
        "training": {"epochs": 2, "batch_size": 128},
        "ensemble": {"enabled": True, "size": 3},
    }
    for k, v in sections.items():
        raw[k] = {**raw.get(k, {}), **v}
    return from_dict(raw)


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 12-trial Optuna study on digits with its ensemble, shared by the tests that only read it."""
    from hpo.study import run_study

    tmp = tmp_path_factory.mktemp("study")
    cfg = small_config(tmp, study={"name": "shared", "n_trials": 12}, training={"epochs": 3})
    summary = run_study(cfg)
    return cfg, summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[Any], *, what: str, timeout: float = 180,
                 log: Path | None = None) -> None:
    """Wait until ``url`` answers 200; fail if ``proc`` exits first (with the tail of ``log``) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"{what} exited" + (f":\n{log.read_text()[-2000:]}" if log else "")
        assert time.monotonic() < deadline, (f"{what} did not come up in {timeout:.0f} s"
                                             + (f":\n{log.read_text()[-2000:]}" if log else ""))
        time.sleep(0.3)


@contextmanager
def serving(args: list[str], health: str, cwd: Path, out: Path | None = None) -> Iterator[int]:
    """Run ``python -m hpo.cli <args> --port P`` until ``health`` answers on 127.0.0.1:P (its stdout in ``out``)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    stdout = open(out, "w") if out is not None else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli", *args, "--port", str(port)], env=env, cwd=cwd,
                            stdout=stdout, stderr=subprocess.DEVNULL)
    if out is not None:
        stdout.close()  # type: ignore[union-attr]
    try:
        wait_healthy(f"http://127.0.0.1:{port}{health}", proc, what=f"hpo {args[0]}", timeout=120)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that read the session's one finished study share an xdist group, so one worker process computes it
    (``--dist loadgroup`` in pyproject); the others never wait for or repeat it."""
    for item in items:
        if "finished_study" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("finished_study"))
