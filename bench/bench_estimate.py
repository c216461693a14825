"""Benchmark the label-free quality estimate (CBPE) against the realized quality under covariate shift.

Run from the repository root::

    .venv/bin/python bench/bench_estimate.py              # 10 splits a dataset, the reference run
    .venv/bin/python bench/bench_estimate.py --splits 3   # quick

For the breast-cancer and wine datasets (scikit-learn), per split (a seed):

1. a stratified split into train (40 %), test (30 %) and an unseen pool (30 %);
2. a model fitted on train (logistic regression on standardised features, as the
   examples do; ``--model forest`` for a random forest);
3. the calibration map fitted on the test rows, as ``%nb2prod model`` does at capture
   (``capture/calibration.py``);
4. windows of 500 rows drawn from the pool with weights that depend on the features only
   (covariate shift; the labels are never touched): ``w = exp(s * z)`` with ``z`` the
   standardised first principal component of the features, ``s`` the shift strength
   (-3 to 3, both ways along the component; 0 is no shift), 4 windows a strength;
5. per window the estimate from the probabilities (``monitoring/estimate.py``) beside the
   realized value on the window's labels; and, for comparison, the same estimate from the
   raw (uncalibrated) probabilities.

Prints the mean absolute error between estimated and realized accuracy (and macro F1 and
ROC AUC) per dataset and strength, and the time of one 500-row estimate. Target: MAE of
accuracy <= 0.03 per dataset.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine  # bench/ is on sys.path when a benchmark runs as a script

from nb2prod.capture.calibration import fit_calibration
from nb2prod.monitoring.estimate import Calibration, estimate, realized

STRENGTHS = (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)
WINDOW = 500
WINDOWS_PER_STRENGTH = 4


def _model(kind: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "forest":
        return RandomForestClassifier(n_estimators=100, random_state=seed)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def run_dataset(name: str, splits: int, model: str) -> dict[str, Any]:
    """Per strength, the absolute errors of the estimated accuracy, F1 and AUC over every window and split."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    data = datasets.load_breast_cancer() if name == "breast_cancer" else datasets.load_wine()
    X, y = np.asarray(data.data, dtype=float), np.asarray(data.target)
    errors: dict[float, dict[str, list[float]]] = {
        s: {"accuracy": [], "f1_macro": [], "roc_auc": []} for s in STRENGTHS
    }
    realized_acc: dict[float, list[float]] = {s: [] for s in STRENGTHS}
    raw_errors: list[float] = []
    timings: list[float] = []
    for seed in range(splits):
        X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, train_size=0.4, stratify=y, random_state=seed)
        X_te, X_pool, y_te, y_pool = train_test_split(
            X_rest, y_rest, train_size=0.5, stratify=y_rest, random_state=seed
        )
        est = _model(model, seed).fit(X_tr, y_tr)
        classes = [str(c) for c in est.classes_]
        fitted = fit_calibration(est.predict_proba(X_te), [str(v) for v in y_te], classes)
        calibration = Calibration(fitted, classes)
        uncalibrated = Calibration(None, classes)
        proba_pool = est.predict_proba(X_pool)
        pred_pool = est.predict(X_pool)
        # the shift direction: the first principal component of the standardised training features
        mu, sd = X_tr.mean(axis=0), X_tr.std(axis=0) + 1e-12
        _, _, vt = np.linalg.svd((X_tr - mu) / sd, full_matrices=False)
        z = ((X_pool - mu) / sd) @ vt[0]
        z = (z - z.mean()) / (z.std() + 1e-12)
        rng = np.random.default_rng(seed)
        label_index = {c: j for j, c in enumerate(est.classes_)}
        for strength in STRENGTHS:
            w = np.exp(strength * z)
            w /= w.sum()
            for _ in range(WINDOWS_PER_STRENGTH):
                rows = rng.choice(len(X_pool), size=WINDOW, replace=True, p=w)
                probabilities = [dict(zip(classes, p, strict=True)) for p in proba_pool[rows].tolist()]
                predictions = [str(v) for v in pred_pool[rows].tolist()]
                started = time.perf_counter()
                got = estimate(probabilities, predictions, calibration)
                timings.append(time.perf_counter() - started)
                truth = realized(
                    proba_pool[rows],
                    np.array([label_index[v] for v in pred_pool[rows]]),
                    np.array([label_index[v] for v in y_pool[rows]]),
                )
                realized_acc[strength].append(float(truth["accuracy"] or 0.0))
                raw = estimate(probabilities, predictions, uncalibrated)["estimated_accuracy"]
                raw_errors.append(abs(float(raw or 0.0) - float(truth["accuracy"] or 0.0)))
                for metric in ("accuracy", "f1_macro", "roc_auc"):
                    e, r = got.get(f"estimated_{metric}"), truth[metric]  # type: ignore[misc]
                    if e is not None and r is not None:
                        errors[strength][metric].append(abs(float(e) - float(r)))
    return {"errors": errors, "realized": realized_acc, "timings": timings, "raw": raw_errors}


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--model", choices=("logistic", "forest"), default="logistic")
    args = parser.parse_args()
    print("machine:", _machine.machine(("numpy", "scikit-learn")))
    print(
        f"model: {args.model}; {args.splits} splits; {WINDOWS_PER_STRENGTH} windows of {WINDOW} rows a strength"
    )
    worst = 0.0
    for name in ("breast_cancer", "wine"):
        out = run_dataset(name, args.splits, args.model)
        print(f"\n{name}")
        print(f"{'strength':>8} {'realized acc':>13} {'MAE acc':>8} {'MAE F1':>8} {'MAE AUC':>8}")
        all_acc: list[float] = []
        for strength in STRENGTHS:
            e = out["errors"][strength]
            all_acc += e["accuracy"]
            print(
                f"{strength:>8.1f} {statistics.mean(out['realized'][strength]):>13.3f} "
                f"{_mean(e['accuracy']):>8.4f} {_mean(e['f1_macro']):>8.4f} {_mean(e['roc_auc']):>8.4f}"
            )
        mae = statistics.mean(all_acc)
        print(f"{'raw':>8} {'':>13} {statistics.mean(out['raw']):>8.4f}   (uncalibrated probabilities)")
        worst = max(worst, mae)
        print(
            f"{'all':>8} {'':>13} {mae:>8.4f}   ({len(all_acc)} windows; "
            f"one 500-row estimate: median {statistics.median(out['timings']) * 1e3:.2f} ms)"
        )
    print(
        f"\nworst dataset MAE of accuracy: {worst:.4f} (target <= 0.03): {'PASS' if worst <= 0.03 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
