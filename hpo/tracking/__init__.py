"""MLflow tracking: one experiment per study, a parent run per study, a child run per trial.

A study never stops because its tracking store is unreachable: what the store cannot take waits in
``<run_dir>/mlflow_outbox.jsonl`` and ``hpo sync RUN_DIR`` (:func:`sync`) delivers it later. A trial's
writes go out in the background, through a writer process. The parts, in the order a call travels:

- :mod:`~hpo.tracking.tracker`: :class:`Tracker`, the calls the study makes (start_study, start_trial,
  log_epoch, end_trial, ...), each turned into an op;
- :mod:`~hpo.tracking.transport`: delivers ops in order: now, through the background thread, or to the outbox;
- :mod:`~hpo.tracking.handover`: the writer process as the study's process sees it (start, call, fall back);
- :mod:`~hpo.tracking.writer`: the writer process itself (``python -m hpo.tracking.writer``);
- :mod:`~hpo.tracking.outbox`: the queued calls, their id map, replay and :func:`sync`;
- :mod:`~hpo.tracking.ops`: the op format and the one interpreter that makes an op with an ``MlflowClient``;
- :mod:`~hpo.tracking.client`: opening the store (SQLite WAL, short HTTP retries);
- :mod:`~hpo.tracking.schema`: a new embedded store starts as a copy of a migrated template.

Importing this package loads neither MLflow nor TensorFlow: they are imported when first used.
"""

from hpo.tracking.client import QUICK_HTTP, default_tracking_uri
from hpo.tracking.ops import KIND_TAG, LOCAL_PREFIX, MAX_PARAM_LEN, STUDY_TAG, TRIAL_TAG, is_transient
from hpo.tracking.outbox import OUTBOX, OUTBOX_IDS, SyncResult, sync
from hpo.tracking.tracker import Tracker

__all__ = ["KIND_TAG", "LOCAL_PREFIX", "MAX_PARAM_LEN", "OUTBOX", "OUTBOX_IDS", "QUICK_HTTP", "STUDY_TAG", "TRIAL_TAG",
           "SyncResult", "Tracker", "default_tracking_uri", "is_transient", "sync"]
