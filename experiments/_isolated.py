"""Benchmark variants in processes of their own: each variant (a row, a side of a comparison) runs as a fresh
``python -m ...`` process, variants alternate their order from one repetition to the next, and each result is
appended to a JSON-lines file the moment its process ends. So no variant inherits another's compiled functions,
caches or allocator state, and a part that overruns its time loses only its own line.

A variant's process writes its record with :func:`write_record` (as often as it likes: the last write is what
counts, so a variant that is stopped at its time limit still leaves what it measured so far); the parent runs it
with :func:`run_variant` and appends it with :func:`append_jsonl`. Every record carries :func:`environment`:
the card, the backend, ``XLA_FLAGS``, JAX's compilation-cache folder (and how many entries it held before the
variant started and when it wrote its record) and JAX's default matmul precision.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from experiments._common import machine


def _first_line(text: str | None) -> str | None:
    return text.splitlines()[0] if text and text.strip() else None


def environment(*, cache_entries_before: int | None = None) -> dict[str, Any]:
    """What a timing on this machine depends on, read in the process that measured it (call after Keras is
    imported). JAX's settings are read from ``jax.config`` only under the JAX backend: importing JAX in a
    TensorFlow process on a GPU would take a share of the card."""
    import keras

    m = machine()
    backend = keras.backend.backend()
    env: dict[str, Any] = {
        "card": _first_line(m["gpu"]), "cpu": m["cpu"], "cpu_count": m["cpu_count"],
        "keras_backend": backend, "xla_flags": os.environ.get("XLA_FLAGS"),
        "jax_device_kind": None, "jax_platform": None, "jax_compilation_cache_dir": None,
        "jax_cache_entries_before": cache_entries_before, "jax_cache_entries_after": None,
        "jax_default_matmul_precision": None,
    }
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        env |= {"jax_device_kind": device.device_kind, "jax_platform": device.platform,
                "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
                "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
                "jax_cache_entries_after": cache_entries()}
        env["card"] = env["card"] or device.device_kind
    env["card"] = env["card"] or f"cpu ({m['cpu']})"
    return env


def cache_entries() -> int | None:
    """Files in JAX's persistent compilation cache now (0 for a folder not created yet; None: no cache folder set,
    or not the JAX backend)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    folder = jax.config.jax_compilation_cache_dir
    if not folder:
        return None
    if not Path(folder).is_dir():
        return 0  # set, not created yet: an empty cache
    return sum(1 for p in Path(folder).rglob("*") if p.is_file())


def write_record(path: str | Path, record: dict[str, Any]) -> None:
    """Replace the variant's record (written whole, then renamed, so the parent never reads half of one)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, default=str))
    tmp.replace(path)


def alternating(variants: Sequence[str], repeats: int) -> Iterator[tuple[int, str]]:
    """``(repetition, variant)`` in the order to run them: forwards, then backwards, and so on."""
    for r in range(repeats):
        yield from ((r, v) for v in (variants if r % 2 == 0 else list(reversed(variants))))


def run_variant(argv: list[str], record: Path, timeout_s: float, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python ARGV`` (which writes its record to ``record``) under ``timeout_s``; its record, with the exit
    status, whether it timed out and the process's wall time (imports and data loading included).

    At the limit the process gets SIGINT (a study stops its workers on it), then SIGKILL 20 s later; whatever
    record it wrote last is kept, marked ``timed_out``."""
    record.unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, *argv], env={**os.environ, **(env or {})}, start_new_session=True)
    timed_out = False
    try:
        rc = proc.wait(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own process group (start_new_session): nothing else
            rc = proc.wait()
    out: dict[str, Any] = {}
    if record.exists():
        out = json.loads(record.read_text())
    return out | {"rc": rc, "timed_out": timed_out, "limit_s": round(timeout_s, 1),
                  "process_wall_s": round(time.monotonic() - t0, 2)}


def parent_environment() -> dict[str, Any]:
    """What the parent knows without importing a framework, for a record whose process wrote none."""
    m = machine()
    return {"card": _first_line(m["gpu"]), "cpu": m["cpu"], "cpu_count": m["cpu_count"],
            "keras_backend": os.environ.get("KERAS_BACKEND"), "xla_flags": os.environ.get("XLA_FLAGS"),
            "jax_compilation_cache_dir": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
            "jax_default_matmul_precision": os.environ.get("JAX_DEFAULT_MATMUL_PRECISION"),
            "source": "the parent process (the variant's process wrote no record)"}


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a line and flush it to disk at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
