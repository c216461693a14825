"""Entry point of the fresh process that proves a saved model loads and predicts as the live one.

Usage: ``python -m nb2prod.capture.roundtrip MODEL_URI FOLDER``, or ``python -m
nb2prod.capture.roundtrip --worker``: a *warm* fresh process that imports the heavy libraries and
opens the tracking store first, then reads one job (``MODEL_URI FOLDER`` as a JSON list) from
stdin, checks it and exits. A worker serves one check only, so every check still runs in a
process that never held the live model nor any other model. ``FOLDER`` holds
``sample.pkl`` and ``expected.npz`` written by the parent (:func:`nb2prod.capture.models.roundtrip_check`),
and ``sha256.json`` when the files must be checked before loading: they are downloaded through
:func:`nb2prod.tracking.artifacts.download_verified`, the check every later load makes. The verdict is
written to ``FOLDER/result.json``.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

SAMPLE_FILE = "sample.pkl"
EXPECTED_FILE = "expected.npz"
SHA256_FILE = "sha256.json"
RESULT_FILE = "result.json"


def _last_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _compare(name: str, got: Any, want: Any) -> str | None:
    import numpy as np

    got_arr = np.asarray(got)
    want_arr = np.asarray(want)
    if got_arr.shape != want_arr.shape:
        return f"{name}: shape {got_arr.shape} after reload, {want_arr.shape} live"
    if want_arr.dtype.kind in "fc":
        bad = ~np.isclose(
            got_arr.astype(float), want_arr.astype(float), rtol=1e-9, atol=1e-12, equal_nan=True
        )
    else:
        bad = got_arr.astype(str) != want_arr.astype(str)
    if bad.any():
        count = int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim else 1
        return f"{name}: {count} of {want_arr.shape[0]} rows differ"
    return None


def main(argv: list[str]) -> int:
    model_uri, folder = argv[0], Path(argv[1])
    result: dict[str, Any] = {"ok": False}
    try:
        import numpy as np
        import pandas as pd

        sample = pd.read_pickle(folder / SAMPLE_FILE)
        expected = np.load(folder / EXPECTED_FILE, allow_pickle=False)
        result["rows"] = len(sample)
        source = model_uri
        if (folder / SHA256_FILE).exists():
            from nb2prod.exceptions import ModelIntegrityError
            from nb2prod.tracking.artifacts import download_verified

            recorded = json.loads((folder / SHA256_FILE).read_text(encoding="utf-8"))
            try:
                local = download_verified(model_uri, recorded, folder / "m", what=model_uri)
            except ModelIntegrityError as exc:
                result.update(stage="integrity", detail=exc.message)
                return 1
            except Exception as exc:
                result.update(stage="load", detail=_last_line(exc))
                return 1
            source = str(local)
        try:
            import mlflow.pyfunc

            model = mlflow.pyfunc.load_model(source)
        except Exception as exc:
            result.update(stage="load", detail=_last_line(exc))
            return 1
        try:
            predicted = model.predict(sample)
            proba = None
            if "expected_proba" in expected.files:
                raw = model.get_raw_model()
                if hasattr(raw, "predict_proba"):
                    proba = raw.predict_proba(sample)
        except Exception as exc:
            result.update(stage="predict", detail=_last_line(exc))
            return 1
        problems = [p for p in [_compare("predictions", predicted, expected["expected"])] if p]
        if proba is not None:
            issue = _compare("probabilities", proba, expected["expected_proba"])
            if issue:
                problems.append(issue)
        if problems:
            result.update(stage="compare", detail="; ".join(problems))
            return 1
        result["ok"] = True
        return 0
    finally:
        (folder / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")


WORKER_FLAG = "--worker"
READY = "ready"


def _warm_up() -> None:
    """Import what a check needs and open the tracking store (``MLFLOW_TRACKING_URI``), before any job.

    Library modules only: nothing of the notebook is importable here (the cwd is a neutral folder).
    """
    import importlib
    import os

    for module in (
        "numpy",
        "pandas",
        "mlflow.pyfunc",
        "mlflow.sklearn",
        "mlflow.artifacts",
        "sklearn.base",
        "sklearn.pipeline",
        "sklearn.compose",
        "sklearn.preprocessing",
        "sklearn.linear_model",
        "sklearn.tree",
        "sklearn.ensemble",
        "skops.io",
        "nb2prod.tracking.artifacts",
    ):
        try:
            importlib.import_module(module)
        except Exception:  # an optional library missing: the job imports what it needs
            continue
    try:
        # pyfunc.load_model compares the model's requirements with the installed distributions; the
        # map of every installed distribution it builds for that took 2-3 s of a cold check here.
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()
    except Exception:  # a private helper of MLflow: if it moved, the check only takes longer
        pass
    try:
        # scikit-learn's first transform of a DataFrame imports narwhals' pandas layer (0.2 s).
        import pandas as pd
        from sklearn.preprocessing import StandardScaler

        StandardScaler().fit(pd.DataFrame({"x": [0.0, 1.0]})).transform(pd.DataFrame({"x": [0.5]}))
    except Exception:
        pass
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        try:
            import mlflow

            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception:  # the job reports a store that does not answer
            pass


def worker() -> int:
    """Warm up, say ``ready`` on stdout, run the one job read from stdin; exit 2 on EOF (not used)."""
    import os

    _warm_up()
    print(READY, flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        return 2
    model_uri, folder = json.loads(line)
    code = main([model_uri, folder])
    # The verdict is written: skip the interpreter's teardown of every module loaded (~0.5 s).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:] == [WORKER_FLAG]:
        sys.exit(worker())
    sys.exit(main(sys.argv[1:]))
