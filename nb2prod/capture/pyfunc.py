"""Models that are not scikit-learn, xgboost or lightgbm: saved through MLflow's pyfunc."""

from __future__ import annotations

from typing import Any


def wrap(model: Any) -> Any:
    """An ``mlflow.pyfunc.PythonModel`` whose ``predict`` calls ``model.predict``."""
    import mlflow.pyfunc

    class PredictWrapper(mlflow.pyfunc.PythonModel):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return self.inner.predict(model_input)

        def get_raw_model(self) -> Any:
            return self.inner

    return PredictWrapper(model)
