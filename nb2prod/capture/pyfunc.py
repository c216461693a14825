"""Models that are not scikit-learn, xgboost or lightgbm: saved through MLflow's pyfunc."""

from __future__ import annotations

from typing import Any


def wrap(model: Any) -> Any:
    """An ``mlflow.pyfunc.PythonModel`` whose ``predict`` calls ``model.predict``."""
    from mlflow.pyfunc import PythonModel

    class PredictWrapper(PythonModel):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        # No annotations on purpose: MLflow reads predict's type hints as an input schema.
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return self.inner.predict(model_input)

        def get_raw_model(self) -> Any:
            return self.inner

    return PredictWrapper(model)
