"""The ledger of the locked test split: one line in ``<run dir>/test_uses.jsonl`` per evaluation on it.

It lives in ``ensembles`` because evaluating an ensemble is where the test split is read, and
``ensembles`` imports nothing from ``hpo``; the study and its guards (``hpo.analysis.guards``)
record and count their own uses through the same functions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TEST_USES_FILE = "test_uses.jsonl"


def record_test_use(run_dir: Path | None, what: str) -> int:
    """Count one evaluation on the locked test split; returns the total so far."""
    if run_dir is None:
        return 0
    path = Path(run_dir) / TEST_USES_FILE
    with open(path, "a") as f:
        f.write(json.dumps({"what": what, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return test_uses(run_dir)


def test_uses(run_dir: Path) -> int:
    """How many evaluations on the locked test split the run directory's ledger holds."""
    path = Path(run_dir) / TEST_USES_FILE
    return sum(1 for _ in open(path)) if path.exists() else 0


test_uses.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
