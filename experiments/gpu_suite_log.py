"""A results file from the log of the first ``experiments/gpu_suite.sh`` (before ``experiments.gpu_suite``, which
appends each variant's result to a JSON-lines file as it ends), for parts that ran out of time before writing theirs.

    python -m experiments.gpu_suite_log experiments/results/gpu_suite_h100_2026-11-27.log [--date 2026-11-27]

Reads the log's GPU and package lines, each part's command, time limit, exit status and seconds, the
overhead benchmark's per-variant timings (``[bench ...] overhead point P rep R VARIANT: S s``) and the JSON
lines the packed benchmark prints, and writes ``<log without .log>.json`` beside it with the targets of
issue #23 (the course's 50 MNIST MLPs packed in at most 10 s wall including compilation; a 16-trial
small-model search at least 4x the trials per hour of one trial at a time), each stated as met, not met or
not measured. Nothing is run: every number is a line of the log.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

PACKED_TARGET_S = 10.0  # issue #23: the 50-member MNIST ensemble packed, wall time including compilation
SEARCH_TARGET_X = 4.0  # issue #23: a 16-trial small-model search, trials per hour against one at a time


def parse(text: str) -> dict[str, Any]:
    """The parts of one gpu_suite log, in order, with what each printed."""
    lines = text.splitlines()
    gpu = lines[0].split(",")[0].strip() if lines else None
    m = re.search(r"jax (\S+) .* keras (\S+)", text)
    versions = {"jax": m.group(1), "keras": m.group(2), "keras_backend": "jax"} if m else {}
    parts: list[dict[str, Any]] = []
    for line in lines:
        if (start := re.match(r"== python -m (\S+) (.*) \(limit (\d+) s\)$", line)):
            parts.append({"module": start.group(1), "command": f"python -m {start.group(1)} {start.group(2)}",
                          "limit_s": int(start.group(3)), "timings": [], "printed": []})
        elif (end := re.match(r"== rc=(\d+) after (\d+) s$", line)) and parts:
            rc = int(end.group(1))
            parts[-1] |= {"rc": rc, "seconds": int(end.group(2)), "timed_out": rc == 124}
        elif (t := re.search(r"overhead point (\d+) rep (\d+) (\w+): ([\d.]+) s$", line)) and parts:
            parts[-1]["timings"].append({"point": int(t.group(1)), "rep": int(t.group(2)), "variant": t.group(3),
                                         "wall_s": float(t.group(4))})
        elif line.startswith("{") and parts:
            parts[-1]["printed"].append(json.loads(line))
    return {"gpu": gpu, "versions": versions, "parts": parts}


def targets(parsed: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #23's GPU targets against what the log holds."""
    packed = next((p for p in parsed["parts"] if p["module"] == "experiments.packed"), None)
    mnist = next((r for r in (packed or {}).get("printed", []) if "achieved_gflops_fit" in r), None)
    execu = next((p for p in parsed["parts"] if p["module"] == "experiments.executor_bench"), None)
    out = [{"target": f"the course's 50 MNIST MLPs (784-500-500-10, 10 epochs) packed as one model: at most "
                      f"{PACKED_TARGET_S:g} s wall including compilation",
            "measured": None if mnist is None else mnist["wall_s"], "unit": "s",
            "verdict": "not measured" if mnist is None else ("met" if mnist["wall_s"] <= PACKED_TARGET_S else "not met")},
           {"target": f"a 16-trial small-model search: at least {SEARCH_TARGET_X:g}x the trials per hour of one trial "
                      "at a time (packing and/or worker processes)",
            "measured": None, "unit": "x",
            "verdict": "not measured" + ("" if execu is None else
                                         f": the in-process row did not finish within the part's {execu['limit_s']} s")}]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", help="a gpu_suite.sh log under experiments/results/")
    ap.add_argument("--date", help="the day it ran (default: the date in the log's name)")
    args = ap.parse_args(argv)
    log = Path(args.log)
    parsed = parse(log.read_text())
    date = args.date or (re.search(r"\d{4}-\d{2}-\d{2}", log.name) or [None])[0]
    result = {
        "command": f"bash experiments/gpu_suite.sh (log {log.name}; this file: python -m experiments.gpu_suite_log "
                   f"experiments/results/{log.name})",
        "date": date, "machine": {"cpu": "n/a (not in the log)", "cpu_count": "n/a", "gpu": parsed["gpu"]},
        "versions": parsed["versions"], "benchmark": "gpu_suite", "log": f"experiments/results/{log.name}",
        "parts": parsed["parts"], "targets": targets(parsed),
    }
    out = log.with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
