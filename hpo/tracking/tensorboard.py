"""TensorBoard beside MLflow: per-trial scalars (and histograms) and the HParams dashboard.

Event files are written with TensorBoard's own protobufs and event writer, not with
``tf.summary``, so logging works on every Keras backend (JAX and PyTorch have no
TensorFlow). Layout under ``<run dir>/tensorboard/``: the HParams experiment summary
at the root, one directory per trial (``trial-00003/``) holding its per-epoch scalars,
its hyperparameters (session start), final select/audit metrics and session end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

ROOT = "tensorboard"


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _writer(log_dir: Path) -> Any:
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    return EventFileWriter(str(log_dir), flush_secs=5)


def _event(summary: Any, step: int = 0) -> Any:
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)


def _hparams_summary(tag: str, plugin_data: Any) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    s = summary_pb2.Summary()
    s.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    return s


def _hparam_value(v: Any) -> Any:
    if isinstance(v, (bool, str)) or v is None:
        return "None" if v is None else v
    if isinstance(v, (int, float)):
        return float(v)
    return str(v)


def write_experiment(run_dir: Path, space: Any, metrics: Iterable[str], description: str = "") -> None:
    """The HParams experiment summary: every hyperparameter with its domain, and the compared metrics."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = []
    for p in space.params:
        info = api_pb2.HParamInfo(name=p.name)
        if p.kind in ("choice", "boolean", "fixed"):
            values = list(p.grid or ())
            if all(isinstance(v, bool) for v in values):
                info.type = api_pb2.DATA_TYPE_BOOL
                info.domain_discrete.extend([bool(v) for v in values])
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                info.type = api_pb2.DATA_TYPE_FLOAT64
                info.domain_discrete.extend([float(v) for v in values])
            else:
                info.type = api_pb2.DATA_TYPE_STRING
                info.domain_discrete.extend([str(v) for v in values])
        else:
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value = float(p.low)
            info.domain_interval.max_value = float(p.high)
        infos.append(info)
    metric_infos = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m), display_name=m) for m in metrics]
    experiment = api_pb2.Experiment(description=description, time_created_secs=time.time(),
                                    hparam_infos=infos, metric_infos=metric_infos)
    w = _writer(Path(run_dir) / ROOT)
    w.add_event(_event(_hparams_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))))
    w.close()


class TrialBoard:
    """One trial's TensorBoard run: per-epoch scalars, optional weight histograms, HParams session."""

    def __init__(self, run_dir: Path, number: int, params: Mapping[str, Any], session: bool = True) -> None:
        """``session=False``: a second writer into the same run (a worker process writing histograms)."""
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        self.log_dir = Path(run_dir) / ROOT / f"trial-{number:05d}"
        self.writer = _writer(self.log_dir)
        if not session:
            return
        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time(), group_name=f"trial-{number:05d}")
        for k, v in params.items():
            v = _hparam_value(v)
            if isinstance(v, bool):
                start.hparams[k].bool_value = v
            elif isinstance(v, float):
                start.hparams[k].number_value = v
            else:
                start.hparams[k].string_value = v
        self.writer.add_event(_event(_hparams_summary(
            metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start))))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboard.compat.proto import summary_pb2

        s = summary_pb2.Summary()
        for tag, v in values.items():
            try:
                s.value.add(tag=tag, simple_value=float(v))
            except (TypeError, ValueError):
                continue
        self.writer.add_event(_event(s, step))

    def histograms(self, step: int, weights: Mapping[str, np.ndarray], bins: int = 30) -> None:
        from tensorboard.compat.proto import summary_pb2

        s = summary_pb2.Summary()
        for tag, w in weights.items():
            a = np.asarray(w, dtype=np.float64).ravel()
            if a.size == 0:
                continue
            counts, edges = np.histogram(a, bins=bins)
            h = summary_pb2.HistogramProto(min=float(a.min()), max=float(a.max()), num=float(a.size),
                                           sum=float(a.sum()), sum_squares=float((a * a).sum()))
            h.bucket_limit.extend(edges[1:].tolist())
            h.bucket.extend(counts.astype(float).tolist())
            s.value.add(tag=tag, histo=h)
        self.writer.add_event(_event(s, step))

    def finish(self, final: Mapping[str, float], failed: bool) -> None:
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        self.scalars(0, final)
        end = plugin_data_pb2.SessionEndInfo(
            status=api_pb2.STATUS_FAILURE if failed else api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        self.writer.add_event(_event(_hparams_summary(
            metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))))
        self.writer.close()


def histogram_callback(board: TrialBoard) -> Any:
    """A Keras callback writing every layer's weight histograms after each epoch."""
    import keras

    class _Histograms(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            board.histograms(epoch, {w.path: keras.ops.convert_to_numpy(w.value) for w in self.model.weights})

    return _Histograms()
