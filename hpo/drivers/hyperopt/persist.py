"""Hyperopt's trials as data: its trial documents saved as JSON, and rebuilt from our own trial records.

A run directory may come from someone else, so nothing in it is unpickled (a pickle runs code when it is
loaded). Hyperopt's ``Trials`` is only a list of plain documents (numbers, strings, dicts, two
timestamps); they round-trip through JSON, and where no save file exists they are rebuilt from the
``trials/*/result.json`` records, whose parameters map back onto the expression's labels."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import hyperopt
from hyperopt import base

from hpo.errors import ConfigError
from hpo.space import Param, SearchSpace

FORMAT = "hpo.hyperopt_trials/1"
LEGACY_PICKLE = "hyperopt_trials.pkl"
_TIMES = ("book_time", "refresh_time")


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars and tuples as JSON's own types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return obj


def dump_trials(trials: hyperopt.Trials) -> str:
    """The trial documents of ``trials`` as JSON text."""
    return json.dumps({"format": FORMAT, "docs": [_plain(d) for d in trials._dynamic_trials]})


def load_trials(path: Path) -> hyperopt.Trials:
    """A ``Trials`` rebuilt from the JSON :func:`dump_trials` wrote; a malformed file is a ConfigError."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        docs = []
        for doc in data["docs"]:
            for key in _TIMES:
                if isinstance(doc.get(key), str):
                    doc[key] = dt.datetime.fromisoformat(doc[key])
            doc["misc"]["cmd"] = tuple(doc["misc"]["cmd"]) if doc["misc"].get("cmd") else None
            docs.append(doc)
        return _trials_of(docs)
    except (ValueError, KeyError, TypeError, AttributeError, base.InvalidTrial) as e:
        raise ConfigError("run_dir", f"{path} is not a readable Hyperopt trials file ({e}); delete it to "
                                     "rebuild the Hyperopt state from trials/*/result.json") from None


def _trials_of(docs: list[dict[str, Any]]) -> hyperopt.Trials:
    trials = hyperopt.Trials()
    trials.insert_trial_docs(docs)
    # new_trial_ids counts the ids handed out so far: the next one follows the largest known.
    trials._ids.update(range(max((int(d["tid"]) for d in docs), default=-1) + 1))
    trials.refresh()
    return trials


def refuse_legacy_pickle(run_dir: Path) -> None:
    """A ``hyperopt_trials.pkl`` from an older version is never loaded: say how to go on without it."""
    legacy = run_dir / LEGACY_PICKLE
    if legacy.exists():
        raise ConfigError("run_dir", f"{legacy} is a pickle from an older version of this tool; pickles in a run "
                                     "directory are not loaded (loading one can run any code). Delete it: the "
                                     "Hyperopt state is then rebuilt from trials/*/result.json")


def trials_from_records(space: SearchSpace, expression_labels: Iterable[str],
                        records: Mapping[int, Mapping[str, Any]], loss: Any) -> hyperopt.Trials:
    """Hyperopt's documents for finished trial records (``result.json``), so a study resumes without a save file.

    ``loss`` maps an objective value to Hyperopt's loss (minimised). A record whose parameters do not
    fit the space is left out (it is still a trial of the study; Hyperopt only learns less)."""
    labels = set(expression_labels)
    docs = []
    for number in sorted(records):
        rec = records[number]
        vals = to_vals(space, rec.get("params") or {})
        if vals is None or not set(vals) <= labels:
            continue
        vals = {lab: vals.get(lab, []) for lab in labels}
        ok = rec.get("state") == "COMPLETE" and isinstance(rec.get("value"), (int, float))
        result = ({"status": base.STATUS_OK, "loss": loss(rec["value"])} if ok
                  else {"status": base.STATUS_FAIL, "error": str(rec.get("error"))})
        docs.append(trial_doc(int(number), vals, result))
    return _trials_of(docs)


def trial_doc(tid: int, vals: Mapping[str, list[Any]], result: dict[str, Any],
              state: int = base.JOB_STATE_DONE) -> dict[str, Any]:
    """One Hyperopt trial document with the given ``{label: [value]}`` (every label of the expression, ``[]``
    for inactive ones), as ``hyperopt.fmin.generate_trials_to_calculate`` builds them."""
    now = hyperopt.utils.coarse_utcnow()
    return {"state": state, "tid": tid, "spec": None, "result": result,
            "misc": {"tid": tid, "cmd": ("domain_attachment", "FMinIter_Domain"), "workdir": None,
                     "idxs": {lab: [tid] * len(v) for lab, v in vals.items()}, "vals": dict(vals)},
            "exp_key": None, "owner": None, "version": 0, "book_time": now, "refresh_time": now}


def to_vals(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, list[Any]] | None:
    """The inverse of :func:`hpo.drivers.hyperopt.space.from_hyperopt`: ``{label: [value]}`` for the active
    labels of the expression :func:`~hpo.drivers.hyperopt.space.to_hyperopt` builds; None when a value
    lies outside the space."""
    children: dict[str, list[Param]] = {}
    top: list[Param] = []
    for p in space.params:
        (children.setdefault(p.conditions[-1].parent, []) if p.conditions else top).append(p)
    out: dict[str, list[Any]] = {}
    try:
        _walk(top, "", children, params, out)
    except (KeyError, ValueError):
        return None
    return out


def _walk(params: Iterable[Param], path: str, children: dict[str, list[Param]], values: Mapping[str, Any],
          out: dict[str, list[Any]]) -> None:
    # Mirrors to_hyperopt's node(): same labels, same branch order.
    for p in params:
        lab = p.name if not path else f"{p.name}@{path}"
        kids = children.get(p.name, [])
        value = values[p.name] if p.kind != "fixed" else p.default
        if kids:
            grid = list(p.grid or ())
            out[lab] = [grid.index(value)]
            sub = [k for k in kids if value in k.conditions[-1].values]
            _walk(sub, f"{path}/{p.name}={value}" if path else f"{p.name}={value}", children, values, out)
        elif p.kind != "fixed":
            out[lab] = [_leaf_val(p, value)]


def _leaf_val(p: Param, value: Any) -> Any:
    if p.kind in ("choice", "boolean") or p.log_grid:
        return list(p.grid or ()).index(value)
    if p.step is not None and not p.log:
        return float(value) - float(p.low)  # to_hyperopt's offset grid: low + quniform(...)
    if not math.isfinite(float(value)):
        raise ValueError(value)
    return float(value)
