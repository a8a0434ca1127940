"""What a study starts from besides its sampler: configurations to evaluate first (``study.enqueue``) and the
finished trials of an earlier study of the same space (``study.warm_start``). Both are checked against the
space before anything is written, errors naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from hpo.config import StudyConfig
from hpo.errors import ConfigError
from hpo.results import load_results
from hpo.space import SearchSpace
from hpo.space.overrides import accepted
from hpo.space.points import same_point  # noqa: F401  (re-exported for the study)

# Engines that take a partial configuration and sample the rest (Optuna's enqueue_trial). Hyperopt's trial
# documents and KerasTuner's trial values hold every active parameter, so with them a point must be complete.
PARTIAL_OK = ("optuna",)


def check_enqueue(cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
    """``study.enqueue`` as the engines take it (values of the declared types, fixed parameters left out);
    ConfigError naming ``study.enqueue[i].param`` for an unknown parameter or a value the space cannot take."""
    out = []
    for i, point in enumerate(cfg.study.enqueue):
        where = f"study.enqueue[{i}]"
        values: dict[str, Any] = {}
        for name, value in point.items():
            if name not in space.names:
                raise ConfigError(f"{where}.{name}", f"not a parameter of this space (known: {', '.join(space.names)})")
            p = space[name]
            if p.kind == "fixed":
                if value != p.default:
                    raise ConfigError(f"{where}.{name}", f"{value!r}: the space fixes {name!r} to {p.default!r}")
                continue
            values[name] = accepted(p, value, f"{where}.{name}")
        for name in values:
            p = space[name]
            broken = [c for c in p.conditions if c.parent in values and values[c.parent] not in c.values]
            if broken:
                c = broken[0]
                raise ConfigError(f"{where}.{name}", f"is used only when {c.parent} is one of {list(c.values)}, "
                                                     f"but this configuration sets {c.parent}={values[c.parent]!r}")
        if cfg.driver.name not in PARTIAL_OK:
            full = space.active({**space.defaults(), **values})
            missing = [n for n in full if n not in values and space[n].kind != "fixed"]
            if missing:
                raise ConfigError(where, f"misses {', '.join(missing)}: the {cfg.driver.name} driver evaluates only "
                                         "complete configurations (every active parameter); give them, or use the "
                                         "optuna driver, which samples the missing ones")
        out.append(values)
    return out


def load_warm_start(cfg: StudyConfig, space: SearchSpace) -> list[dict[str, Any]]:
    """The finished (COMPLETE) trial records of the run directory ``study.warm_start`` names; ConfigError naming
    ``study.warm_start`` when it is no run directory, optimises another objective, or has another space (the
    differing parameters named)."""
    if cfg.study.warm_start is None:
        return []
    src = Path(cfg.study.warm_start).expanduser()
    where = "study.warm_start"
    if cfg.driver.name == "kerastuner":
        raise ConfigError(where, "KerasTuner's oracles take no earlier trials through a public call (their trials "
                                 "are created only by create_trial); use the optuna or hyperopt driver")
    if not (src / "space.json").is_file() or not (src / "trials").is_dir():
        raise ConfigError(where, f"{str(src)!r} is not a study's run directory (no space.json and trials/); give "
                                 "runs/<earlier study>")
    if src.resolve() == cfg.run_dir.resolve():
        raise ConfigError(where, "names this study's own run directory; a rerun resumes it without a warm start")
    try:
        theirs = json.loads((src / "space.json").read_text())
        study = json.loads((src / "study.json").read_text()) if (src / "study.json").is_file() else {}
    except ValueError as exc:
        raise ConfigError(where, f"{src}/space.json is not readable JSON ({exc})") from None
    differ = space_difference(space.describe(), theirs)
    if differ:
        raise ConfigError(where, f"{src} searched another space (differs in: {', '.join(differ)}); warm start "
                                 "only from a study of the same space")
    for key, mine in (("objective", cfg.objective.metric), ("direction", cfg.objective.direction)):
        if study.get(key, mine) != mine:
            raise ConfigError(where, f"{src} optimised {key} {study[key]!r}, this study {mine!r}")
    records = load_results(src)
    return [r for r in (records[n] for n in sorted(records))
            if r.get("state") == "COMPLETE" and isinstance(r.get("value"), (int, float))
            and math.isfinite(r["value"]) and _fits(space, r.get("params") or {})]


def _fits(space: SearchSpace, params: Mapping[str, Any]) -> bool:
    try:
        space.check({k: v for k, v in params.items() if k in space.names})
        return True
    except ConfigError:
        return False


def space_difference(mine: list[dict[str, Any]], theirs: Any) -> list[str]:
    """Names of the parameters declared differently in two ``space.json`` descriptions (``name (only here)``,
    ``name (only there)``, or ``name`` when both declare it differently). Defaults are not compared."""
    if not isinstance(theirs, list):
        return ["space.json"]
    a = {p["name"]: {k: v for k, v in p.items() if k != "default"} for p in mine}
    b = {p.get("name"): {k: v for k, v in p.items() if k != "default"} for p in theirs if isinstance(p, dict)}
    out = [f"{n} (only here)" for n in a if n not in b] + [f"{n} (only there)" for n in b if n not in a]
    return out + [n for n in a if n in b and a[n] != b[n]]
