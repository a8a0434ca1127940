"""Finished trials of a study, read back from its run directory: their saved logits and the labels.

Ensembling never retrains: it reads ``trials/*/result.json`` and
``trials/*/predictions.npz`` written by the trial runner, and ``labels.npz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensembles.combine import as_class_logits

SPLITS = ("select", "audit", "test")


@dataclass(frozen=True)
class HeadInfo:
    name: str
    kind: str  # multiclass | binary | regression
    n_classes: int = 1
    one_hot: bool = False

    @property
    def is_classification(self) -> bool:
        return self.kind in ("multiclass", "binary")


@dataclass
class Pool:
    """Candidate members: per split and head, an array (M, n, C) of class logits (or regression outputs)."""

    numbers: list[int]
    params: list[dict[str, Any]]
    values: np.ndarray  # each member's objective on select
    direction: str
    heads: list[HeadInfo]
    outputs: dict[str, dict[str, np.ndarray]]
    labels: dict[str, dict[str, np.ndarray]]
    model_paths: list[str | None]
    run_dir: Path | None = None
    objective: str | None = None  # the study's objective metric (as Keras names it), scored on select
    epochs: list[int | None] | None = None  # per member: the snapshot's epoch, None for a trial's final model
    refits: list[int | None] | None = None  # per member: its index in the seed refit of trial ``numbers[i]``, else None

    def __len__(self) -> int:
        return len(self.numbers)

    def ranked(self) -> np.ndarray:
        """Member indices, best objective on select first."""
        order = np.argsort(self.values, kind="stable")
        return order[::-1] if self.direction == "maximize" else order

    def best_trial(self, allowed: np.ndarray | None = None) -> int:
        """The best (allowed) member by the objective that is a trial's final model, not a snapshot or a refit."""
        ok = [int(i) for i in self.ranked() if allowed is None or allowed[i]]
        return next((i for i in ok if self.epoch(i) is None and self.refit(i) is None), ok[0])

    def subset(self, idx: np.ndarray | list[int]) -> "Pool":
        idx = np.asarray(idx, dtype=int)
        return Pool(
            numbers=[self.numbers[i] for i in idx], params=[self.params[i] for i in idx],
            values=self.values[idx], direction=self.direction, heads=self.heads,
            outputs={s: {h: a[idx] for h, a in d.items()} for s, d in self.outputs.items()},
            labels=self.labels, model_paths=[self.model_paths[i] for i in idx], run_dir=self.run_dir,
            objective=self.objective, epochs=None if self.epochs is None else [self.epochs[i] for i in idx],
            refits=None if self.refits is None else [self.refits[i] for i in idx],
        )

    def epoch(self, i: int) -> int | None:
        """Member ``i``'s snapshot epoch, or None for a trial's final model."""
        return None if self.epochs is None else self.epochs[i]

    def refit(self, i: int) -> int | None:
        """Member ``i``'s index in the seed refit of its trial's configuration, or None when it is not a refit."""
        return None if self.refits is None else self.refits[i]

    def index(self, trial: int, epoch: int | None = None, refit: int | None = None) -> int:
        """The member that is trial ``trial`` (at snapshot ``epoch``, seed ``refit`` of it, or its final model)."""
        for i, n in enumerate(self.numbers):
            if n == trial and self.epoch(i) == epoch and self.refit(i) == refit:
                return i
        raise ValueError(f"trial {trial}" + (f" epoch {epoch}" if epoch else "") + (f" refit {refit}" if refit is not None
                                                                                    else "") + " is not in the pool")


def class_labels(y: np.ndarray, head: HeadInfo) -> np.ndarray:
    """Integer class labels from integer, binary or one-hot label arrays."""
    y = np.asarray(y)
    if head.kind == "embedding":
        return y.astype(np.float64)  # annotators' votes per triplet
    if head.kind == "multiclass" and head.one_hot:
        return y.argmax(-1).astype(int)
    return y.reshape(len(y)).astype(int) if head.is_classification else y


def _candidates(r: dict[str, Any], objective: str | None) -> list[dict[str, Any]]:
    """A finished trial and its snapshots (``trials/NNNNN/snapshots/epoch_EEE``, written while it trained),
    each with its objective on select (the snapshot's from the trial's per-epoch history)."""
    out = [{**r, "epoch": None}]
    hist = (r.get("history") or {}).get(f"val_{objective}") or []
    for d in sorted((Path(r["predictions_path"]).parent / "snapshots").glob("epoch_*")):
        e = int(d.name.split("_")[1])
        if (d / "predictions.npz").exists() and 0 < e <= len(hist):
            model = d / "model.keras"
            out.append({**r, "epoch": e, "value": float(hist[e - 1]), "predictions_path": str(d / "predictions.npz"),
                        "model_path": str(model) if model.exists() else None})
    return out


def refit_candidates(run_dir: Path) -> list[dict[str, Any]]:
    """The members of the study's seed refit (``refit/members.json``, written by ``ensemble.seed_refit``), as
    candidates: the refitted trial's number and configuration, each member's own objective on select."""
    path = run_dir / "refit" / "members.json"
    if not path.exists():
        return []
    out = []
    for m in json.loads(path.read_text()):
        if m.get("value") is None:
            continue  # the study's objective could not be scored on the refit's logits: not rankable
        model = path.parent / m["model_path"] if m.get("model_path") else None
        out.append({"number": m["trial"], "params": m["params"], "value": float(m["value"]), "epoch": None,
                    "refit": int(m["member"]), "predictions_path": str(path.parent / m["predictions_path"]),
                    "model_path": str(model) if model is not None and model.exists() else None})
    return out


def _kind(c: dict[str, Any]) -> int:
    """Candidates' order within a configuration: a trial's final model, then seed refits, then snapshots."""
    return 2 if c["epoch"] is not None else int(c.get("refit") is not None)


def _order(c: dict[str, Any], sign: int) -> tuple[Any, ...]:
    return sign * c["value"], c["number"], _kind(c), c.get("refit") or 0, c["epoch"] or 0


def _per_config(cands: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most ``n`` candidates per configuration: final trials first, then seed refits, then snapshots, each best
    first."""
    seen: dict[str, int] = {}
    kept = []
    for c in sorted(cands, key=_kind):  # stable: keeps the best-first order within
        key = repr(sorted(c["params"].items()))
        if seen.get(key, 0) < n:
            seen[key] = seen.get(key, 0) + 1
            kept.append(c)
    return kept


def load_pool(run_dir: str | Path, *, max_candidates: int | None = None, snapshots: bool = False,
              max_per_config: int | None = None, refits: bool = False) -> Pool:
    """Completed trials of the study in ``run_dir`` with their saved predictions, best on select first. A trial
    recorded infeasible (``"feasible": false``: it broke one of the study's ``constraints``) is never a candidate.

    With ``snapshots`` the trials' snapshots join as candidates (``Pool.epochs`` names their epoch); with
    ``refits`` the members of the study's seed refit do (``Pool.refits`` names them); ``max_per_config`` keeps at most that many candidates per configuration; ``max_candidates`` keeps
    the best ones.
    """
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "data.json").read_text())
    heads = [HeadInfo(**h) for h in meta["heads"]]
    study = json.loads((run_dir / "study.json").read_text())
    direction = study["direction"]
    with np.load(run_dir / "labels.npz") as f:
        raw_labels = {k: f[k] for k in f.files}
    labels = {s: {h.name: class_labels(raw_labels[f"{s}/{h.name}"], h) for h in heads} for s in SPLITS}
    results = []
    for p in sorted((run_dir / "trials").glob("*/result.json")):
        r = json.loads(p.read_text())
        if r.get("feasible") is False:
            continue
        if r["state"] == "COMPLETE" and r.get("predictions_path") and Path(r["predictions_path"]).exists():
            results.extend(_candidates(r, study.get("objective")) if snapshots else [{**r, "epoch": None}])
    if not results:
        raise ValueError(f"no completed trial with saved predictions in {run_dir}")
    if refits:
        results.extend(refit_candidates(run_dir))
    sign = -1 if direction == "maximize" else 1
    results.sort(key=lambda r: _order(r, sign))
    if max_per_config is not None:
        results = _per_config(results, max_per_config)
        results.sort(key=lambda r: _order(r, sign))
    if max_candidates is not None:
        results = results[:max_candidates]
    outputs: dict[str, dict[str, list[np.ndarray]]] = {s: {h.name: [] for h in heads} for s in SPLITS}
    kept = []
    shapes = None
    for r in results:  # best first
        with np.load(r["predictions_path"]) as f:  # a refit's file holds every member: (members, n, C)
            arrays = {(s, h.name): f[f"{s}/{h.name}"] if r.get("refit") is None else f[f"{s}/{h.name}"][r["refit"]]
                      for s in SPLITS for h in heads}
        signature = {k: a.shape for k, a in arrays.items()}
        if shapes is None:
            shapes = signature
        elif signature != shapes:
            # e.g. embedding models of another embedding_size: they cannot be averaged with the best one
            continue
        kept.append(r)
        for (s, name), a in arrays.items():
            h = next(h for h in heads if h.name == name)
            outputs[s][name].append(as_class_logits(a, h.kind) if h.is_classification else a)
    results = kept
    return Pool(
        numbers=[r["number"] for r in results], params=[r["params"] for r in results],
        values=np.array([r["value"] for r in results], dtype=float), direction=direction, heads=heads,
        outputs={s: {h: np.stack(v).astype(np.float32) for h, v in d.items()} for s, d in outputs.items()},
        labels=labels, model_paths=[r.get("model_path") for r in results], run_dir=run_dir,
        objective=study.get("objective"), epochs=[r["epoch"] for r in results],
        refits=[r.get("refit") for r in results],
    )
