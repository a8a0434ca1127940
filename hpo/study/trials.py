"""Trials run in the study's process: one at a time, or a batch of proposals trained as packed models."""

from __future__ import annotations

import logging
from pathlib import Path

from hpo.drivers.base import Proposal, Wait
from hpo.errors import HpoError
from hpo.execution.continuation import CHECKPOINT, Resume
from hpo.execution.trial import run_trial
from hpo.repro import trial_seed
from hpo.results import TrialResult, TrialState, inside, result_dict, trial_dir, write_json
from hpo.study.context import StudyRun
from hpo.study.listeners import RunningTrial
from hpo.study.objectives import score_objectives
from hpo.study.signals import deferred, raise_if_signalled

log = logging.getLogger(__name__)


def begin(run: StudyRun, proposal: Proposal, *, histograms_here: bool = True, device: str | None = None) -> RunningTrial:
    """A trial about to train: its seed and directory, announced to the listeners (its MLflow run opens)."""
    trial = RunningTrial(proposal, trial_seed(run.cfg.study.seed, proposal.number),
                         trial_dir(run.run_dir, proposal.number),
                         run.settings.for_trial(proposal.params, proposal.epochs)[0] * run.settings.folds,
                         device=device, histograms_here=histograms_here)
    with deferred():
        run.listeners.begin(trial)
    return trial


def finish(run: StudyRun, trial: RunningTrial, result: TrialResult) -> None:
    """Record a finished trial: result.json first (it survives a storage outage), then the engine, then the
    listeners (MLflow). A worker of a shared study closes the MLflow run (with the trial's files) before telling
    the engine (see :class:`~hpo.study.listeners.TrackingListener`).

    When result.json cannot be written (the disk is full or the run directory unwritable) the study stops
    cleanly: the trial is not told to the engine, so a rerun once the disk is writable runs it again.

    A Ctrl-C arriving meanwhile is raised once the trial is recorded (see :func:`deferred`)."""
    with deferred():
        _finish(run, trial, result)


def _finish(run: StudyRun, trial: RunningTrial, result: TrialResult) -> None:
    score_objectives(run.cfg, result)
    try:
        trial.trial_dir.mkdir(parents=True, exist_ok=True)
        _write_result(run, trial, result)
    except OSError as exc:
        where = exc.filename or trial.trial_dir
        message = (f"trial {result.number}: its result cannot be written to {where} ({exc.strerror or exc}); the study "
                   "stops. Finished trials are saved; make the run directory writable and rerun to resume")
        run.listeners.interrupted(trial, message)
        raise HpoError(message) from exc
    if not run.driver.shared:
        run.driver.tell(trial.proposal, result)
    run.listeners.recorded(trial, result)
    if run.driver.shared and not run.driver.tell(trial.proposal, result):
        # Another worker failed it as stale while this one was cut off from the database, and the study
        # runs a replacement: this result is not the study's, here (summary, ensemble) or in MLflow.
        result.state, result.value = TrialState.FAILED, None
        result.error = ("superseded: the storage had failed this trial as stale while its worker was cut off "
                        "from the database; a replacement runs in its place")
        trial.superseded = True
        _write_result(run, trial, result)
    run.listeners.end(trial, result)


def _write_result(run: StudyRun, trial: RunningTrial, result: TrialResult) -> None:
    write_json(trial.trial_dir / "result.json", result_dict(result) | {"mlflow_run_id": run.tracker.run_id(trial.run_id)})


def continuation(run: StudyRun, proposal: Proposal) -> tuple[Resume | None, bool]:
    """The checkpoint a promoted trial continues, and whether the trial keeps its own for the engine to promote
    later. Cross-validated (k models) and packed trials do neither: they train every epoch of their budget from
    scratch."""
    if run.settings.folds > 1 or run.plan.packing:
        return None, False
    return parent_checkpoint(run.run_dir, proposal), proposal.checkpoint


def parent_checkpoint(run_dir: Path, proposal: Proposal) -> Resume | None:
    """The checkpoint of the trial ``proposal`` continues, when it is a file inside the run directory (symlinks
    resolved); None, with a warning, when it is missing or outside (the trial then trains from scratch)."""
    if proposal.parent is None:
        return None
    where = trial_dir(run_dir, proposal.parent) / CHECKPOINT
    path = inside(run_dir, where, f"trial {proposal.number}: the checkpoint of trial {proposal.parent}")
    if path is None or not path.is_file():
        log.warning("trial %d continues trial %d, whose checkpoint %s is missing or lies outside the run directory; it trains its %s epochs from a "
                    "fresh model", proposal.number, proposal.parent, where, proposal.epochs)
        return None
    return Resume(proposal.parent, str(path), proposal.initial_epoch)


def run_one(run: StudyRun, proposal: Proposal) -> TrialResult:
    """One trial in this process."""
    trial = begin(run, proposal)
    try:
        raise_if_signalled()  # a Ctrl-C while the trial opened: it is interrupted before training
        resume, checkpoint = continuation(run, proposal)
        result = run_trial(number=proposal.number, params=proposal.params, seed=trial.seed, build=run.build,
                           space=run.space, splits=run.splits, settings=run.settings, trial_dir=trial.trial_dir,
                           listener=run.listeners.epoch_listener(trial), epochs=proposal.epochs,
                           extra_callbacks=trial.extra_callbacks, resume=resume, checkpoint=checkpoint)
        # A signal whose interrupt the trial's code caught and turned into an ordinary error (a library's
        # `except`) would otherwise be recorded as the trial's failure and count against the budget on resume.
        raise_if_signalled()
    except BaseException:
        run.listeners.interrupted(trial)
        raise
    finish(run, trial, result)
    return result


def ask_batch(run: StudyRun, size: int) -> list[Proposal] | Wait | None:
    """Up to ``size`` proposals for packing; after the first, the engine is asked (where it can) to keep the
    first's shape parameters so the batch packs into one model."""
    # Asking writes to the engine's storage (Optuna's journal takes and releases a file lock): a Ctrl-C landing
    # inside Optuna's lock release turned into a FileNotFoundError and left the lock behind, so the interrupt is
    # recorded and raised once the batch is asked (run_one and the pool raise it before any training).
    with deferred():
        return _ask_batch(run, size)


def _ask_batch(run: StudyRun, size: int) -> list[Proposal] | Wait | None:
    from hpo.execution.packed import shape_key, shape_params

    first = run.driver.ask()
    if first is None or isinstance(first, Wait):
        return first
    batch = [first]
    # The first packable proposal leads: later ones are asked to share its shape (one whose shape_key is None,
    # which cannot pack, runs alone).
    leader = first if shape_key(first.params, first.epochs) is not None else None
    while len(batch) < size:
        if leader is not None:
            run.driver.prefer(shape_params(run.space, leader.params))
        nxt = run.driver.ask()
        if nxt is None or isinstance(nxt, Wait):  # the engine has nothing more now: run what we have
            break
        batch.append(nxt)
        if leader is None and shape_key(nxt.params, nxt.epochs) is not None:
            leader = nxt
    return batch


def run_batch(run: StudyRun, batch: list[Proposal]) -> list[TrialResult]:
    """Run a batch of proposals: those sharing an architecture as packed models, the others one by one."""
    from hpo.execution.packed import group, shape_key

    out: list[TrialResult] = []
    for grp in group(batch, lambda p: shape_key(p.params, p.epochs)):
        out.extend([run_one(run, grp[0])] if len(grp) == 1 else _run_pack(run, grp))
    return out


def _run_pack(run: StudyRun, grp: list[Proposal]) -> list[TrialResult]:
    from hpo.execution.packed import train_pack

    trials = [begin(run, p, histograms_here=False) for p in grp]
    try:
        raise_if_signalled()
        results = train_pack(numbers=[p.number for p in grp], params=[p.params for p in grp],
                             seeds=[t.seed for t in trials], listeners=[run.listeners.epoch_listener(t) for t in trials],
                             trial_dirs=[t.trial_dir for t in trials], splits=run.splits, settings=run.settings,
                             epochs=grp[0].epochs)
        raise_if_signalled()  # as in run_one: the pack is interrupted, not failed
    except BaseException:
        for t in trials:
            run.listeners.interrupted(t)
        raise
    for t, res in zip(trials, results):
        res.pack = [p.number for p in grp]
        finish(run, t, res)
    return results
