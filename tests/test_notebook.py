"""Notebooks: hpo.search shows its progress, and the example notebook runs end to end in a real Jupyter kernel."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y


def _build(hp: Any) -> Any:
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hp.Int("units", 8, 32, step=8), activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_search_progress_is_a_line_per_trial_off_a_terminal_and_nothing_with_progress_false(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hpo import search

    x, y = _digits()
    kw: dict[str, Any] = dict(validation_data=(x[1000:1300], y[1000:1300]), test_data=(x[1300:], y[1300:]),
                              n_trials=2, epochs=1, sampler="random", ensemble=False)
    search(_build, x[:1000], y[:1000], run_dir=tmp_path / "a", **kw)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if re.match(r"\[\d/2\] trial \d COMPLETE select=0\.\d{4} best=0\.\d{4}$", ln)]
    assert len(lines) == 2, err[-2000:]
    search(_build, x[:1000], y[:1000], run_dir=tmp_path / "b", progress=False, **kw)
    captured = capsys.readouterr()
    assert "trial" not in captured.err and "trial" not in captured.out


def test_terminal_progress_rewrites_one_line_with_best_elapsed_and_remaining() -> None:
    from hpo.results import TrialResult, TrialState
    from hpo.study.live import SearchProgress
    from hpo.study.summary import StudyProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    live = SearchProgress(4, "accuracy", stream=out, notebook=False)
    live.EPOCH_REFRESH_S = 0.0
    live.on_epoch_end(0, 1, 5, {})
    done = TrialResult(number=0, params={}, seed=1, state=TrialState.COMPLETE, value=0.91)
    live.on_trial_end(done, StudyProgress(done=1, total=4, failed=0, pruned=0, best_value=0.91, elapsed_s=2.0))
    live.on_epoch_end(1, 2, 5, {})
    live.close()
    text = out.getvalue()
    frames = text.split("\r")[1:]
    assert "trial 0 epoch 1/5" in frames[0] and frames[0].startswith("trials 0/4")
    assert "trials 1/4" in frames[1] and "best select accuracy 0.9100 (trial 0)" in frames[1]
    assert re.search(r"remaining ~\d+s", frames[1])
    assert "trial 1 epoch 2/5" in frames[2]
    assert text.endswith("\n") and "epoch" not in frames[-1]  # the final state stays, without the running trial
    assert text.count("\n") == 1  # one line, rewritten in place


@pytest.mark.slow
def test_example_notebook_runs_in_a_jupyter_kernel(tmp_path: Path) -> None:
    """examples/digits_search.ipynb, executed as Jupyter would (nbclient, ipykernel): the search shows live
    progress, finishes its trials and its ensemble, and the ensemble reloads with the accuracy it printed."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "examples" / "digits_search.ipynb", as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    displays = [o["data"]["text/plain"] for o in outputs if o.get("output_type") == "display_data"]
    assert any(re.match(r"trials 6/6 \| best select accuracy 0\.\d{4} \(trial \d\) \| elapsed \d+", d) for d in displays), \
        displays
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert "trials complete 6, failed 0" in text
    printed = re.search(r"ensemble of trials \[[\d, ]+\]: test accuracy (0\.\d{4})", text)
    reloaded = re.search(r"reloaded ensemble: test accuracy (0\.\d{4})", text)
    assert printed and reloaded and printed.group(1) == reloaded.group(1), text
    assert (tmp_path / "runs" / "notebook-digits" / "summary.json").exists()
