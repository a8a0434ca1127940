"""A study from start to end: validate, sample, train, track, summarise, ensemble.

:func:`run_study` runs a :class:`~hpo.config.StudyConfig` (what ``hpo run`` does);
:func:`search` is the script API taking the user's own builder and data the way
``tuner.search(x, y, validation_data=...)`` does. Rerunning the same study
resumes it: finished trials are not redone.

The parts, in the order a study meets them: :mod:`~hpo.study.prepare` (data, space, preflight; nothing
written), :mod:`~hpo.study.opening` (the run directory, the engine, the tracking store: a
:class:`~hpo.study.context.StudyRun`), :mod:`~hpo.study.loop` (ask -> run -> tell, in this process or on
worker processes: :mod:`~hpo.study.trials`, :mod:`~hpo.study.pool`), :mod:`~hpo.study.listeners` (what watches
trials: MLflow, TensorBoard, progress, pruning), :mod:`~hpo.study.shared` (several processes on one storage),
:mod:`~hpo.study.stages` (the end of a study: summary, ensemble, seed refit, plots, guards, report).
"""

from hpo.study.api import search
from hpo.study.prepare import clear_prepared, prepare
from hpo.study.run import run_study
from hpo.study.summary import StudyProgress, StudySummary

__all__ = ["StudyProgress", "StudySummary", "clear_prepared", "prepare", "run_study", "search"]
