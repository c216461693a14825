"""Entry point of the fresh process that proves a saved model loads and predicts as the live one.

Usage: ``python -m nb2prod.capture.roundtrip MODEL_URI FOLDER``. ``FOLDER`` holds
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
