"""Run a test's script in a fresh Python process under ``KERAS_BACKEND=jax`` (on the CPU) and read back the one
JSON object it prints after ``RESULT``: the JAX checks of a session whose backend is TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_jax_script(script: str, workdir: Path, timeout: int = 900) -> dict[str, Any]:
    """``script``'s ``RESULT{...}`` line as a dict; the compilation cache goes under ``workdir/cache``."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "HPO_CACHE_DIR": str(workdir / "cache"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True,
                          timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULT"):])
