"""Hyperopt driver: the shared space as Hyperopt's declarative expression, ask/tell over ``Trials``.

Hyperopt's ``fmin`` owns its loop; to keep one study loop for every engine (and,
later, worker pools), this driver does what ``fmin`` does for one trial with
Hyperopt's public pieces (``Domain``, ``Trials``, the ``suggest`` functions).
Trials are saved after every tell as JSON (never a pickle: a run directory may
come from someone else, see :mod:`hpo.drivers.hyperopt.persist`) by writing a
temporary file and renaming it, so a crash never leaves a half-written save file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import hyperopt
from hyperopt import base

from hpo.drivers.base import Driver, Proposal
from hpo.drivers.hyperopt.persist import (dump_trials, load_trials, refuse_legacy_pickle, to_vals, trial_doc,
                                          trials_from_records)
from hpo.drivers.hyperopt.space import from_hyperopt, to_hyperopt
from hpo.errors import ConfigError
from hpo.repro import trial_seed
from hpo.space import SearchSpace
from hpo.space.points import same_point
from hpo.results import TrialResult, TrialState, load_results

WARM = "hpo_warm_start"  # misc key of a document copied from an earlier study (its run directory and trial)
ALGOS = {"tpe": "hyperopt.tpe", "anneal": "hyperopt.anneal", "rand": "hyperopt.rand"}


class HyperoptDriver(Driver):
    name = "hyperopt"

    def __init__(self, space: SearchSpace, *, direction: str, seed: int, save_file: Path, algo: str = "tpe") -> None:
        super().__init__(space, direction=direction, seed=seed)
        import importlib

        if algo not in ALGOS:
            raise ConfigError("driver.sampler", f"unknown hyperopt algorithm {algo!r}; choose {', '.join(ALGOS)}")
        self.algo = importlib.import_module(ALGOS[algo]).suggest
        self.save_file = Path(save_file)
        self.expression = to_hyperopt(space)
        self.domain = hyperopt.Domain(lambda _: None, self.expression)
        self.trials = hyperopt.Trials()
        self._queue: list[dict[str, Any]] = []  # study.enqueue: evaluated before any sampled configuration

    def open(self, identity: dict[str, Any]) -> None:
        """Load the saved trials (JSON), or rebuild them from the run directory's ``result.json`` records."""
        meta = self.save_file.with_suffix(".identity.json")
        mine = json.dumps(identity, sort_keys=True, default=str)
        run_dir = self.save_file.parent
        if meta.exists() and meta.read_text() != mine:
            raise ConfigError("study.name", f"{run_dir} holds a study with a different configuration; "
                                            "use another study name or run_dir")
        if self.save_file.exists():
            self.trials = load_trials(self.save_file)
        else:
            refuse_legacy_pickle(run_dir)
            records = load_results(run_dir) if (run_dir / "trials").is_dir() else {}
            if records:
                self.trials = trials_from_records(self.space, self.domain.params, records, self.loss)
        # Trials asked but never told belong to a process that died: drop them (they are redone).
        for doc in self.trials._dynamic_trials:
            if doc["state"] in (base.JOB_STATE_NEW, base.JOB_STATE_RUNNING):
                doc["state"] = base.JOB_STATE_ERROR
                doc["misc"]["error"] = ("interrupted", "the process running this trial died")
        self.trials.refresh()
        run_dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(mine)

    def n_finished(self) -> int:
        # Documents copied from an earlier study (study.warm_start) are the sampler's history, not trials.
        return sum(1 for d in self.trials._dynamic_trials
                   if d["state"] == base.JOB_STATE_DONE and WARM not in d["misc"])

    def _params(self, doc: dict[str, Any]) -> dict[str, Any]:
        return from_hyperopt(self.space, hyperopt.space_eval(self.expression, base.spec_from_misc(doc["misc"])))

    def enqueue(self, points: list[dict[str, Any]]) -> int:
        """Hyperopt's ``generate_trials_to_calculate``, one document at a time: each point becomes the trial
        document of the next ask (complete points only; see hpo.study.seeding)."""
        done = [self._params(d) for d in self.trials._dynamic_trials
                if d["state"] == base.JOB_STATE_DONE and WARM not in d["misc"]]  # as Optuna: this study's trials
        self._queue = [p for p in points if not any(same_point(p, q) for q in done)]
        return len(self._queue)

    def warm_start(self, records: list[dict[str, Any]], source: str) -> int:
        """The earlier study's trials as DONE documents of their own ids, marked so that they do not count."""
        if any(WARM in d["misc"] for d in self.trials._dynamic_trials):
            return 0  # a rerun: they are in the saved trials already
        docs = []
        for rec, tid in zip(records, self.trials.new_trial_ids(len(records))):
            vals = to_vals(self.space, rec["params"])
            if vals is None:
                continue
            doc = trial_doc(tid, {lab: vals.get(lab, []) for lab in self.domain.params}, {
                "status": base.STATUS_OK, "loss": self.loss(rec["value"])})
            doc["misc"][WARM] = f"{source}#{rec['number']}"
            docs.append(doc)
        self.trials.insert_trial_docs(docs)
        self.trials.refresh()
        self._save()
        return len(docs)

    def ask(self) -> Proposal | None:
        new_ids = self.trials.new_trial_ids(1)
        self.trials.refresh()
        if self._queue:
            vals = to_vals(self.space, self._queue.pop(0))
            assert vals is not None  # checked against the space before the study opened
            docs = [trial_doc(new_ids[0], {lab: vals.get(lab, []) for lab in self.domain.params},
                              {"status": base.STATUS_NEW}, state=base.JOB_STATE_NEW)]
        else:
            docs = self.algo(new_ids, self.domain, self.trials, trial_seed(self.seed, new_ids[0]))
        if not docs:
            return None
        self.trials.insert_trial_docs(docs)
        self.trials.refresh()
        doc = next(d for d in self.trials._dynamic_trials if d["tid"] == new_ids[0])
        doc["state"] = base.JOB_STATE_RUNNING
        sample = hyperopt.space_eval(self.expression, base.spec_from_misc(doc["misc"]))
        return Proposal(number=int(doc["tid"]), params=from_hyperopt(self.space, sample), handle=doc)

    def tell(self, proposal: Proposal, result: TrialResult) -> bool:
        doc = proposal.handle
        if result.state is TrialState.COMPLETE and result.value is not None:
            doc["result"] = {"status": base.STATUS_OK, "loss": self.loss(result.value),
                             "metrics": result.metrics, "params": result.params}
        else:
            doc["result"] = {"status": base.STATUS_FAIL, "error": result.error}
        doc["state"] = base.JOB_STATE_DONE
        doc["refresh_time"] = hyperopt.utils.coarse_utcnow()
        self.trials.refresh()
        self._save()
        return True

    def _save(self) -> None:
        tmp = self.save_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(dump_trials(self.trials))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.save_file)
