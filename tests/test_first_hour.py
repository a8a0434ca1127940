"""A new user's first hour (issue #25): the quickstart command's output is the project's own, the libraries'
output is in ``hpo.log`` (and on the terminal with ``-v``), and a service that cannot be reached or refuses at
start is one line naming its config field, exit status 2, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import ROOT, _free_port

# Every line ``hpo run`` writes on its own: the header, trial lines, the summary, the guards, where things are.
OWN_LINES = [re.compile(p) for p in (
    r"^$",
    r"^study '[\w.-]+': \d+ trials, driver \w+/\w+, \w+ on \w+, run dir \S+$",
    r"^\[\d+/\d+\] trial \d+ (COMPLETE|PRUNED|FAIL)\s+.* best=\S+ failed=\d+ pruned=\d+ elapsed=\d+s eta=\d+s$",
    r"^done in \d+s: \d+ complete, \d+ pruned, \d+ failed$",
    r"^best trial \d+: select_\w+=\S+ audit_\w+=\S+  params=\{.*\}$",
    r"^  test \(locked split\): .*$",
    r"^seed refit of the best configuration, \d+ seeds packed in one model \(\d+\.\ds\): select member median .*$",
    r"^ensemble of \d+ members \(trial, weight\): .*$",
    r"^  the best single trial \(\d+\) is kept alone: .*$",
    r"^  select: .*$",
    r"^  test: .*$",
    r"^  artifact: \S+  mlflow model: \S+$",
    r"^model plots(: | skipped: ).*$",
    r"^guards (ok|OVERFIT ALARM): select−audit gap .*$",
    r"^  (overtuning|locked test split used|restoring the best select epoch) .*$",
    r"^WARNING: the search overfits its select half; .*$",
    r"^report: \S+$",
    r"^mlflow: \S+  \(hpo ui \S+\)$",
    r"^log: \S+hpo\.log  \(the libraries' output; -v shows it here\)$",
)]
LIBRARY_MARKERS = ("oneDNN", "absl", "alembic", "py.warnings", "node_def_util", "mlflow.")


def _hpo(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``hpo ARGS`` as a user types it (the installed script when there is one), this checkout's code."""
    script = Path(sys.executable).with_name("hpo")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "hpo.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_CONFIGURE_LOGGING")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.run(cmd + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _foreign(text: str) -> list[str]:
    return [line for line in text.splitlines() if not any(p.match(line) for p in OWN_LINES)]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_quickstart_prints_only_its_own_lines(tmp_path: Path) -> None:
    """The README's command exactly as written, from a folder holding the repository's quickstart config."""
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "quickstart.yaml", tmp_path / "experiments" / "quickstart.yaml")
    run_dir = tmp_path / "runs" / "quickstart"
    done = _hpo("run", "experiments/quickstart.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _foreign(done.stdout) == [], done.stdout
    assert _foreign(done.stderr) == [], done.stderr
    assert re.search(r"^\[12/12\] trial 11 ", done.stdout, re.M)
    assert done.stdout.count("model plots") == 1
    log = (run_dir / "hpo.log").read_text()
    assert "alembic" in log or "oneDNN" in log, log[:2000]  # the libraries' output is kept, not dropped
    # "Rerunning the same command resumes the study: finished trials are not redone."
    before = {p: p.stat().st_mtime_ns for p in (run_dir / "trials").glob("*/result.json")}
    again = _hpo("run", "experiments/quickstart.yaml", cwd=tmp_path)
    assert again.returncode == 0 and not re.search(r"^\[\d+/12\] trial", again.stdout, re.M), again.stdout
    assert len(before) == 12 and {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_readme_hyperopt_quickstart_command_runs_the_same_search_with_hyperopt(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    shutil.copy(ROOT / "experiments" / "quickstart.yaml", tmp_path / "experiments" / "quickstart.yaml")
    done = _hpo("run", "experiments/quickstart.yaml", "--driver", "hyperopt", "--name", "quickstart-hyperopt",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _foreign(done.stdout) == [] and _foreign(done.stderr) == [], done.stdout + done.stderr
    run_dir = tmp_path / "runs" / "quickstart-hyperopt"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_complete"] == 12 and summary["ensemble"] is not None
    assert (run_dir / "hyperopt_trials.json").exists() and not (run_dir / "optuna.journal").exists()


def test_verbose_shows_the_library_output(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "quickstart"
    done = _hpo("run", "experiments/quickstart.yaml", "--run-dir", str(run_dir), "--n-trials", "2", "-v",
                cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    foreign = _foreign(done.stdout) + _foreign(done.stderr)
    assert any(m in line for line in foreign for m in LIBRARY_MARKERS), foreign
    assert re.search(r"^\[2/2\] trial 1 ", done.stdout, re.M)  # still the trial lines
    assert any(m in (run_dir / "hpo.log").read_text() for m in LIBRARY_MARKERS)


def _assert_one_line_failure(done: subprocess.CompletedProcess[str], field: str, secret: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr[-3000:])
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}: "), done.stderr[-3000:]
    assert secret not in done.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["closed port", "missing database"])
def test_unreachable_storage_is_one_line_and_leaves_nothing(tmp_path: Path, where: str) -> None:
    if where == "closed port":
        url = f"postgresql://root:s3cretpw@127.0.0.1:{_free_port()}/test"
    else:  # the real server (tests/README: PostgreSQL on 127.0.0.1:5432, trust auth) without that database
        url = "postgresql://root:s3cretpw@127.0.0.1:5432/hpo_first_hour_no_such_db"
        if not _postgres_answers():
            from tests.conftest import service_missing

            service_missing("no PostgreSQL server on 127.0.0.1:5432")
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(tmp_path)
    done = _hpo("run", str(ROOT / "experiments" / "quickstart.yaml"), "--storage", url,
                "--run-dir", str(work / "runs" / "quickstart"), cwd=work, timeout=300)
    line = _assert_one_line_failure(done, "driver.storage", "s3cretpw")
    assert "root:***@" in line
    if where == "missing database":
        assert "does not exist" in line and "createdb" in line
    assert _tree(tmp_path) == before


def _postgres_answers() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


class _Refusing(BaseHTTPRequestHandler):
    """An MLflow server that is up (its health check answers) and refuses every API call (403)."""

    def _answer(self) -> None:
        if self.path.startswith("/health"):
            body, code = b"OK", 200
        else:
            body, code = json.dumps({"error_code": "PERMISSION_DENIED", "message": "no access for root"}).encode(), 403
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://root:s3cretpw@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tracking_server_refusing_the_study_is_one_line(tmp_path: Path, refusing_server: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    before = _tree(tmp_path)
    done = _hpo("run", str(ROOT / "experiments" / "quickstart.yaml"), "--tracking-uri", refusing_server,
                "--run-dir", str(work / "runs" / "quickstart"), cwd=work, timeout=300)
    line = _assert_one_line_failure(done, "tracking.uri", "s3cretpw")
    assert "refused" in line
    assert _tree(tmp_path) == before
    shutil.rmtree(work)
