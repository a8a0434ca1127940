"""MLflow pyfunc wrapper of an ensemble artifact."""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import numpy as np


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    """Loads the ensemble's ``.keras`` file (safe mode) and predicts probabilities per head."""

    def load_context(self, context: Any) -> None:
        import keras

        import ensembles.layers  # noqa: F401  registers Combine

        self.model = keras.saving.load_model(context.artifacts["keras_model"], safe_mode=True, compile=False)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow reads them as a schema
        if hasattr(model_input, "to_numpy"):  # a pandas DataFrame of flat features
            model_input = model_input.to_numpy(dtype="float32")
        if isinstance(model_input, dict):
            model_input = {k: np.asarray(v, dtype="float32") for k, v in model_input.items()}
        else:
            model_input = np.asarray(model_input, dtype="float32")
        out = self.model.predict(model_input, batch_size=1024, verbose=0)
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        return np.asarray(out)


# Models-from-code entry point: MLflow loads this file instead of unpickling an object.
mlflow.models.set_model(EnsemblePyfunc())
