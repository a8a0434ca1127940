"""A trial's numbers do not depend on what its process ran before (issue 23's reuse must not cost
reproducibility): under JAX a trial may train in its own model, in a kept compiled template of its widths, in
a wider one, or in a supernet, by what the process compiled before; whichever it is, its score and logits are
those of its own model trained alone. Checked in one subprocess with ``KERAS_BACKEND=jax``: the same trial with
reuse off (its own model), first in the process, and after a wider trial left its template."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.jax_script import run_jax_script

SCRIPT = """
import json, os, tempfile
from pathlib import Path
import numpy as np
from hpo.config import from_dict
from hpo.execution.trial import TrialSettings, run_trial
from hpo.study.prepare import prepare

def space_of(builder, params):
    cfg = from_dict({"study": {"name": "s"}, "data": {"dataset": "digits"},
                     "space": {"builder": builder, "params": params}, "training": {"epochs": 3}})
    return prepare(cfg)

tmp = Path(tempfile.mkdtemp())
out = {}
cases = {
    # dense stacks (a supernet): 40 units after 200
    "mlp": (space_of("mlp", {"layers": {"min": 1, "max": 3}, "units": {"min": 16, "max": 256, "log": True}}),
            {"units": 40, "layers": 2, "dropout": 0.3}, {"units": 200, "layers": 3, "dropout": 0.1}),
    # Conv2D templates (covering): 10 filters (dropout on the widened channels) after 32
    "convnet": (space_of("convnet", {"blocks": {"fixed": 2}, "filters": {"min": 8, "max": 32, "log": True},
                                     "residual": {"fixed": False}}),
                {"filters": 10, "dropout": 0.3}, {"filters": 32, "dropout": 0.1}),
}
for name, ((build, splits, space), x_params, w_params) in cases.items():
    X = {**space.defaults(), "optimizer": "adam", **x_params}
    W = {**space.defaults(), "optimizer": "adam", **w_params}

    def run(i, params):
        r = run_trial(number=i, params=params, seed=7, build=build, space=space, splits=splits,
                      settings=TrialSettings(epochs=3, save_models=False), trial_dir=tmp / name / str(i))
        assert r.state.name == "COMPLETE", r.error
        with np.load(r.predictions_path) as f:
            return r.value, r.metrics, np.asarray(f["test/digit"])

    os.environ["HPO_REUSE_COMPILED"] = "off"
    plain = run(0, X)  # the trial's own model
    os.environ.pop("HPO_REUSE_COMPILED")
    first = run(1, X)  # first in its process
    run(2, W)  # a wider trial: its template or supernet is kept
    after = run(3, X)  # X again, in what W left
    for when, got in (("first", first), ("after_wider", after)):
        out[f"{name}_{when}"] = {"value": [plain[0], got[0]], "logits": float(np.abs(plain[2] - got[2]).max()),
                                 "metrics": max(abs(plain[1][k] - got[1][k]) for k in plain[1])}
print("RESULT" + json.dumps(out))
"""


@pytest.mark.parametrize("partitionable", [True, False])
def test_a_trials_numbers_do_not_depend_on_the_trials_its_process_ran_before(tmp_path: Path,
                                                                            partitionable: bool) -> None:
    # JAX's default random numbers, keyed by flat index (a wider template draws the trial's own dropout), and the
    # older scheme a user can switch back to (a model with dropout then trains as it is)
    setting = f"import jax\njax.config.update('jax_threefry_partitionable', {partitionable})\n"
    out = run_jax_script(setting + SCRIPT, tmp_path)
    assert len(out) == 4
    for case in out:
        got = out[case]
        # the same select score, and logits and metrics as the trial's own model within float32 rounding
        assert got["value"][0] == got["value"][1], got
        assert got["logits"] < 1e-4 and got["metrics"] < 1e-5, got
