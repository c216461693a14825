"""Prediction stores for the monitoring tests, written as the service writes them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nb2prod.capture.data import describe
from nb2prod.serving.sketch import Sketcher, encode
from nb2prod.serving.store import PREDICTION_COLUMN, SQL_INSERT_PREDICTION, SQL_UPSERT_SKETCH, Store

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)
SHIFTED = "mean radius"


def breast_cancer() -> dict[str, Any]:
    """Train/held-out breast-cancer rows, the manifest of a classifier fitted on them, the model."""
    frame = load_breast_cancer(as_frame=True).frame
    train = frame.sample(frac=0.7, random_state=0)
    held = frame.drop(train.index)
    features = [c for c in frame.columns if c != "target"]
    record = describe(train, name="train", target="target").to_dict()
    manifest = {
        "reference": {f: record["profile"][f] for f in features},
        "target": {"name": "target", "profile": record["profile"]["target"]},
        "schema": [c for c in record["schema"] if c["name"] in features],
        "model": {"is_classifier": True},
    }
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        train[features], train["target"]
    )
    return {"train": train, "held": held, "features": features, "manifest": manifest, "model": model}


def log_rows(
    store: Store,
    manifest: dict[str, Any],
    frame: pd.DataFrame,
    predictions: np.ndarray,
    *,
    start: float,
    version: str = "1",
    writers: int = 2,
    per_minute: int = 20,
    prefix: str = "r",
    writer: str = "w",
    monitor: str = "test",
) -> list[str]:
    """Log rows as the service does: a prediction row each, and per-minute sketches per writer."""
    features = list(manifest["reference"])
    sketchers = {c: Sketcher(p) for c, p in manifest["reference"].items()}
    sketchers[PREDICTION_COLUMN] = Sketcher(manifest["target"]["profile"])
    ids, pred_rows, sketch_rows = [], [], []
    for k, first in enumerate(range(0, len(frame), per_minute)):
        chunk = frame.iloc[first : first + per_minute]
        preds = predictions[first : first + per_minute]
        bucket = int(start) + 60 * k
        for w in range(writers):
            part, part_preds = chunk.iloc[w::writers], preds[w::writers]
            if part.empty:
                continue
            for col, sketcher in sketchers.items():
                values = part_preds if col == PREDICTION_COLUMN else part[col].to_numpy()
                sketch_rows.append(
                    {
                        "bucket": bucket,
                        "model_version": version,
                        "col": col,
                        "writer": f"{writer}{w}",
                        "n": len(part),
                        "counts": encode(sketcher(values)),
                    }
                )
        for i, (_, row) in enumerate(chunk.iterrows()):
            rid = f"{prefix}{first + i}"
            ids.append(rid)
            pred_rows.append(
                {
                    "request_id": rid,
                    "ts": bucket + 1 + i,
                    "monitor": monitor,
                    "model_version": version,
                    "features": json.dumps({f: float(row[f]) for f in features}),
                    "prediction": json.dumps({"prediction": int(preds[i])}),
                }
            )
    store.write(SQL_UPSERT_SKETCH, sketch_rows)
    store.write(SQL_INSERT_PREDICTION, pred_rows)
    return ids


def held_out_store(path: str, data: dict[str, Any]) -> dict[str, Any]:
    """The held-out rows logged from T0 (version 1), every second one labelled, three events.

    Returns:
        ``preds`` (the model's predictions of the held-out rows), ``labelled`` (request ids
        with feedback) and ``truth`` (their labels).
    """
    store = Store(path)
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    ids = log_rows(store, manifest, held, preds, start=T0)
    labelled = ids[::2]
    truth = held["target"].to_numpy()[::2]
    store.add_feedback(zip(labelled, truth.tolist(), strict=True), source="test", ts=T0 + 5000)
    store.add_events(
        [
            # one column, two ways: as recorded now, and as older services recorded a list's row
            {"kind": "invalid", "reason": "missing", "field": "mean area", "ts": T0 + 10},
            {"kind": "invalid", "reason": "not_finite", "field": "rows[4].mean area", "ts": T0 + 11},
            {"kind": "fallback", "model_version": "1", "ts": T0 + 12},
        ]
    )
    store.close()
    return {"preds": preds, "labelled": labelled, "truth": truth}


def shifted_store(path: str, data: dict[str, Any]) -> None:
    """The held-out rows as version 1 from T0, then with 'mean radius' shifted as version 2 from T0 + 2 h."""
    store = Store(path)
    held, manifest, model = data["held"], data["manifest"], data["model"]
    preds = model.predict(held[data["features"]])
    log_rows(store, manifest, held, preds, start=T0, version="1")
    shifted = held.copy()
    shifted[SHIFTED] = shifted[SHIFTED] * 1.5 + 2.0
    log_rows(store, manifest, shifted, preds, start=T0 + 7200, version="2", prefix="s")
    store.close()


def regression_store(path: str) -> dict[str, Any]:
    """120 logged regression predictions (version 3) from T0, all labelled.

    Returns:
        ``manifest``, ``preds`` and ``truth``.
    """
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"x": rng.normal(size=500), "y": rng.normal(10, 2, size=500)})
    record = describe(train, name="train", target="y").to_dict()
    manifest = {
        "reference": {"x": record["profile"]["x"]},
        "target": {"name": "y", "profile": record["profile"]["y"]},
        "model": {"is_classifier": False},
    }
    live = pd.DataFrame({"x": rng.normal(size=120)})
    preds = rng.normal(10, 2, size=120)
    truth = preds + rng.normal(0, 0.7, size=120)
    store = Store(path)
    rows = [
        {
            "request_id": f"q{i}",
            "ts": T0 + i,
            "monitor": "m",
            "model_version": "3",
            "features": json.dumps({"x": float(live["x"][i])}),
            "prediction": json.dumps({"prediction": float(preds[i])}),
        }
        for i in range(120)
    ]
    store.write(SQL_INSERT_PREDICTION, rows)
    store.add_feedback([(f"q{i}", float(truth[i])) for i in range(120)], source="t")
    store.close()
    return {"manifest": manifest, "preds": preds, "truth": truth}
