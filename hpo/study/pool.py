"""Trials on worker processes: the study asks the engine for as many proposals as there are idle workers (with
``executor.pack`` > 1, a batch of up to that many per worker, trained there as packs), answers their epoch
reports (tracking, pruning) and records their results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from hpo.drivers.base import Wait
from hpo.errors import TrialPruned
from hpo.results import TrialResult
from hpo.study.budget import out_of_time
from hpo.study.context import StudyRun
from hpo.study.listeners import RunningTrial
from hpo.study.prepare import is_config_builder
from hpo.study.signals import deferred, raise_if_signalled
from hpo.study.trials import ask_batch, begin, continuation, finish


@dataclass
class _Asking:
    """Whether to ask the engine for more, and how many trials the study still needs."""

    remaining: int
    asking: bool = True
    wait_for_engine: bool = False  # the engine answered "nothing now" (Hyperband between rounds): ask after a trial ends
    running: dict[int, RunningTrial] = field(default_factory=dict)


def run_in_pool(run: StudyRun, remaining: int, on_done: Callable[[TrialResult], bool]) -> None:
    """Run up to ``remaining`` trials on worker processes; ``on_done`` returns False to stop asking."""
    from hpo.execution.pool import DoneEvent, WorkerPool

    cfg, ex = run.cfg, run.cfg.executor
    payload = {"build": cfg.space.builder if is_config_builder(cfg, run.build) else run.build, "space": run.space,
               "splits": run.splits, "settings": run.settings, "run_dir": str(run.run_dir)}
    pool = WorkerPool(run.plan.slots or [], payload, recycle_after=ex.recycle_after,
                      memory_limit_mb=ex.memory_limit_mb, start_timeout_s=ex.start_timeout_s)
    pool.start()
    if run.on_pool is not None:
        run.on_pool(pool)
    state = _Asking(remaining)
    try:
        while state.running or (state.asking and state.remaining > 0):
            raise_if_signalled()
            _submit(run, pool, state)
            for ev in pool.poll(timeout=0.5):
                trial = state.running.get(ev.number)
                if trial is None:
                    continue
                if isinstance(ev, DoneEvent):
                    with deferred():  # a trial is running or recorded, never neither
                        del state.running[ev.number]
                        finish(run, trial, ev.result)
                    state.remaining = (cfg.study.n_trials - run.driver.n_finished() if run.driver.shared
                                       else state.remaining - 1)
                    state.wait_for_engine = False
                    if not on_done(ev.result):
                        state.asking = False
                    continue
                _answer_epoch(run, pool, trial, ev)
    except BaseException:
        for trial in state.running.values():
            run.listeners.interrupted(trial)
        raise
    finally:
        pool.close()


def _submit(run: StudyRun, pool: Any, state: _Asking) -> None:
    """Give every idle worker a proposal while the study needs trials and the engine has proposals."""
    from hpo.execution.pool import PackTask, Task

    board = run.cfg.tensorboard
    if state.asking and out_of_time(run):
        state.asking = False  # the running trials finish; none starts
    while state.asking and not state.wait_for_engine and state.remaining - len(state.running) > 0 and pool.idle():
        free = state.remaining - len(state.running)
        batch = ask_batch(run, min(run.cfg.executor.pack, free) if run.plan.packing else 1)
        if isinstance(batch, Wait):  # a shared study's last slots are running elsewhere
            if not state.running:
                time.sleep(batch.seconds)
            return
        if batch is None:
            if state.running:
                state.wait_for_engine = True
            else:
                state.asking = False
            return
        slot = pool.idle()[0]
        proposals = batch if isinstance(batch, list) else [batch]
        tasks = []
        with deferred():  # once its MLflow run is open, the trial is one an interrupt marks
            for proposal in proposals:
                # A pack's members write no weight histograms (as in the study's process).
                histograms = board.enabled and board.histograms and len(proposals) == 1
                trial = begin(run, proposal, histograms_here=False, device=pool.slots[slot].describe())
                state.running[proposal.number] = trial
                resume, checkpoint = continuation(run, proposal)
                tasks.append(Task(proposal.number, proposal.params, trial.seed, str(trial.trial_dir),
                                  proposal.epochs, histograms=histograms, resume=resume, checkpoint=checkpoint))
            pool.submit(slot, tasks[0] if len(tasks) == 1 else PackTask(tasks))

def _answer_epoch(run: StudyRun, pool: Any, trial: RunningTrial, ev: Any) -> None:
    """A worker's epoch report goes to the listeners; the worker waits for the pruning decision."""
    try:
        run.listeners.epoch_listener(trial)(ev.epoch, ev.logs)
    except TrialPruned as exc:
        pool.reply(ev.number, True, str(exc))
    else:
        pool.reply(ev.number, False)
