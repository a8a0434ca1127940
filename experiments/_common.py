"""What every benchmark records: the command, the date, the machine and package versions; and where it writes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model and count, and the GPU's name when nvidia-smi answers."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu}


def device_tag() -> str:
    """``cpu``, or a short name of the first GPU (``h100``, ``h200``, else the name's last word): for file names."""
    gpu = machine().get("gpu")
    if not gpu:
        return "cpu"
    words = gpu.splitlines()[0].split()
    known = next((w for w in words if w in ("H100", "H200", "A100", "L4", "L40S")), None)
    return (known or words[-1]).lower().replace("/", "_")


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process, every live descendant (the MLflow writer
    process, worker processes) and every child already reaped, so work moved to another process still counts.

    Uses psutil (``/proc`` on Linux); without it, this process and its reaped children only
    (:func:`resource.getrusage`), which misses a child that is still running.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the test extra
        import resource

        return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        # children_*: its children already reaped (no longer in the tree), so nothing is counted twice
        total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
    return total


def git_commit(checkout: Path) -> str | None:
    """The short commit of ``checkout``'s HEAD; None where git cannot tell."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def header(module: str, argv: list[str] | None) -> dict[str, Any]:
    """The fields every results file starts with."""
    from hpo.repro import package_versions

    args = argv if argv is not None else sys.argv[1:]
    return {"command": f"python -m {module} " + " ".join(args), "date": time.strftime("%Y-%m-%d"),
            "machine": machine(), "versions": package_versions()}


def write_result(out: str | Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``<out>/<name>.json``."""
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    target = path / f"{name}.json"
    target.write_text(json.dumps(result, indent=2, default=str))
    return target
