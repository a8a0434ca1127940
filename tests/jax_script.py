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

# The start of a JAX check script: ``compiled`` collects the name of every XLA compilation (JAX's backend-compile
# event), ``x``/``y`` the first 960 rows of scikit-learn's digits scaled to [0, 1], ``named(model)`` its variables
# by position and kind (to compare two builds of one model variable by variable).
DIGITS_PRELUDE = """
import json, tempfile
from pathlib import Path
from jax import monitoring
compiled = []
monitoring.register_event_duration_secs_listener(
    lambda e, d, **k: compiled.append(k.get("fun_name")) if e == "/jax/core/compile/backend_compile_duration" else None)
import keras
import numpy as np
from sklearn.datasets import load_digits
from hpo.execution.templates import user_model
from hpo.execution.xla import host_initialisers

x, y = load_digits(return_X_y=True)
x, y = (x[:960] / 16).astype("float32"), y[:960].astype("int32")

def named(model):
    # every variable of a model by position and kind (layer names differ between two builds of one model); a
    # Dense bias in front of a batch normalisation is "pre_bn/bias"
    out, paths = {}, [v.path.rsplit("/", 1) for v in model.variables]
    for i, ((layer, var), v) in enumerate(zip(paths, model.variables)):
        kind = layer.rstrip("_0123456789")
        if kind == "dense" and i + 1 < len(paths) and paths[i + 1][0].startswith("batch_normalization"):
            kind = "pre_bn"
        out[f"{i:02d}.{kind}/{var}"] = np.asarray(v)
    return out
"""


def run_jax_script(script: str, workdir: Path, timeout: int = 900) -> dict[str, Any]:
    """``script``'s ``RESULT{...}`` line as a dict; the compilation cache goes under ``workdir/cache``."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "HPO_CACHE_DIR": str(workdir / "cache"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True,
                          timeout=timeout)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, proc.stderr[-3000:]
    return json.loads(line[len("RESULT"):])
