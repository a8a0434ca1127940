"""The ensemble artifact: one Keras model whose members are layers, plus ``manifest.json``.

Shared inputs → each member (a saved trial model, renamed ``member_<trial>``) →
one :class:`ensembles.layers.Combine` per head → outputs. It loads with
``keras.saving.load_model(path, safe_mode=True)`` once ``ensembles`` is imported,
and through MLflow with ``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ensembles.layers import Combine
from ensembles.pool import Pool
from ensembles.versions import package_versions

from ensembles.report import EnsembleReport, manifest

MODEL_FILE = "ensemble.keras"


def build_keras_model(report: EnsembleReport, pool: Pool, inputs_spec: dict[str, list[int]]) -> Any:
    """Assemble the members' saved models and the combination into one functional model."""
    import keras

    inputs = {name: keras.Input(shape=tuple(shape), name=name) for name, shape in inputs_spec.items()}
    single_input = len(inputs) == 1
    head_names = [h.name for h in pool.heads]
    per_head: dict[str, list[Any]] = {h: [] for h in head_names}
    weights: list[float] = []
    temps: dict[str, list[float]] = {h: [] for h in head_names}
    for m in report.members:
        if not m.get("model_path") or not Path(m["model_path"]).exists():
            raise FileNotFoundError(
                f"trial {m['trial']}" + (f" (epoch {m['epoch']})" if m.get("epoch") else "") + " has no saved model (training.save_models was off?); "
                "the ensemble artifact needs every member's model file"
            )
        member = keras.saving.load_model(m["model_path"], safe_mode=True, compile=False)
        member.name = f"member_{m['trial']}" + (f"_e{m['epoch']}" if m.get("epoch") else "") \
            + (f"_r{m['refit']}" if m.get("refit") is not None else "")
        out = member(next(iter(inputs.values())) if single_input else inputs)
        if isinstance(out, dict):
            outs = out
        elif isinstance(out, (list, tuple)):
            outs = dict(zip(head_names, out))
        else:
            outs = {head_names[0]: out}
        for h in head_names:
            per_head[h].append(outs[h])
        weights.append(m["weight"])
        for h in head_names:
            temps[h].append(m.get("temperature", {}).get(h, 1.0))
    outputs = {
        h.name: Combine(method=report.combine, member_weights=weights, temperature=report.temperature.get(h.name, 1.0),
                        kind=h.kind, name=h.name,
                        member_temperatures=temps[h.name] if report.calibrated and h.is_classification else None,
                        )(per_head[h.name])
        for h in pool.heads
    }
    model_inputs = next(iter(inputs.values())) if single_input else inputs
    model_outputs = outputs[head_names[0]] if len(head_names) == 1 else outputs
    return keras.Model(model_inputs, model_outputs, name="ensemble")


def save_artifact(report: EnsembleReport, pool: Pool, out_dir: Path) -> Path:
    """Write ``ensemble.keras`` and ``manifest.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report.artifact_dir = str(out_dir)
    record = manifest(report, pool, out_dir)
    model = build_keras_model(report, pool, record["inputs"])
    tmp = out_dir / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp)
    tmp.replace(out_dir / MODEL_FILE)
    (out_dir / "manifest.json").write_text(json.dumps(record, indent=2, default=str))
    return out_dir / MODEL_FILE


def member_name(m: dict[str, Any]) -> int | str:
    """A member as the summary and MLflow name it: its trial number, ``"12@e3"`` for trial 12's snapshot at
    epoch 3, or ``"12@r1"`` for member 1 of the seed refit of trial 12's configuration."""
    if m.get("refit") is not None:
        return f"{m['trial']}@r{m['refit']}"
    return m["trial"] if not m.get("epoch") else f"{m['trial']}@e{m['epoch']}"


def load_ensemble(path: str | Path) -> Any:
    """Load an ensemble artifact (a directory or its ``.keras`` file) in safe mode."""
    import keras

    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    return keras.saving.load_model(p, safe_mode=True, compile=False)


def _example_input(pool: Pool, inputs_spec: dict[str, list[int]], n: int = 2) -> Any:
    if len(inputs_spec) == 1:
        return np.zeros((n, *next(iter(inputs_spec.values()))), dtype="float32")
    return {k: np.zeros((n, *shape), dtype="float32") for k, shape in inputs_spec.items()}


def log_to_mlflow(report: EnsembleReport, pool: Pool, out_dir: Path, tracking_uri: str,
                  parent_run_id: str | None) -> tuple[str, str]:
    """Log the ensemble as an MLflow pyfunc model in a run nested under the study's parent run."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    import ensembles.pyfunc as pyfunc_module

    client = MlflowClient(tracking_uri)
    experiment_id = None
    tags = {"hpo.kind": "ensemble"}
    parent = None
    if parent_run_id:
        try:
            parent = client.get_run(parent_run_id)
        except mlflow.exceptions.MlflowException:
            parent = None  # another tracking store than the study's: log without nesting
    if parent is not None:
        experiment_id = parent.info.experiment_id
        tags["mlflow.parentRunId"] = parent.info.run_id
        if "hpo.study" in parent.data.tags:
            tags["hpo.study"] = parent.data.tags["hpo.study"]
    else:
        name = json.loads((pool.run_dir / "study.json").read_text())["name"] if pool.run_dir else "ensembles"
        exp = client.get_experiment_by_name(name)
        experiment_id = exp.experiment_id if exp else client.create_experiment(
            name, artifact_location=(out_dir.parent / "mlartifacts").resolve().as_uri())
        tags["hpo.study"] = name
    run = client.create_run(experiment_id, run_name=f"ensemble-{report.method}-{report.combine}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        params=[Param("method", report.method), Param("combine", report.combine), Param("metric", report.metric),
                Param("members", json.dumps([member_name(m) for m in report.members])),
                Param("member_temperatures", json.dumps([m.get("temperature", {}) for m in report.members])),
                Param("weights", json.dumps([round(m["weight"], 6) for m in report.members])),
                Param("temperature", json.dumps(report.temperature))],
        metrics=[Metric(k, float(v), now, 0) for k, v in report.metrics.items()]
        + [Metric(f"best_single_{k}", float(v), now, 0) for k, v in report.best_single["metrics"].items()]
        + [Metric("curve_" + k, float(v), now, int(c["size"])) for c in report.curve for k, v in c.items() if k != "size"],
    )
    manifest = json.loads((out_dir / "manifest.json").read_text())
    example = _example_input(pool, manifest["inputs"])
    from ensembles.artifact import load_ensemble

    pred = load_ensemble(out_dir).predict(example, verbose=0)
    pred = {k: np.asarray(v) for k, v in pred.items()} if isinstance(pred, dict) else np.asarray(pred)
    signature = infer_signature(example, pred)
    versions = package_versions()
    reqs = [f"{p}=={versions[p]}" for p in ("keras", "numpy", "mlflow") if p in versions]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
            # MLflow nags about type hints we leave out on purpose (they would become a schema).
            warnings.simplefilter("ignore", UserWarning)
            info = mlflow.pyfunc.log_model(
                name="ensemble", python_model=str(Path(pyfunc_module.__file__)), input_example=example,
                artifacts={"keras_model": str(out_dir / MODEL_FILE)}, signature=signature, pip_requirements=reqs,
            )
            mlflow.log_artifact(str(out_dir / "manifest.json"))
    finally:
        mlflow.set_tracking_uri(previous)
    report.mlflow_run_id = run_id
    report.model_uri = info.model_uri
    return run_id, info.model_uri
