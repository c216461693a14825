"""Retraining: re-run the notebook, score challenger and champion on the same rows, decide.

The rows are the holdout the notebook tracked, a file, or labelled feedback. The alias
moves only when the challenger is better by the margin; the decision is recorded on the
re-run and on the challenger's version. Metric names and their direction come from
:mod:`nb2prod.metrics`.
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod import metrics
from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import LifecycleError, ModelIntegrityError
from nb2prod.lifecycle.feedback import native_label, read_table
from nb2prod.lifecycle.served import monitor, served_manifest, store_location
from nb2prod.lifecycle.switch import Switch, mlflow_client, promote
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.monitoring import MonitorReport
    from nb2prod.serving.manifest import Manifest

__all__ = [
    "DEPRECATED_METRICS",
    "Decision",
    "load_registered",
    "metric_name",
    "retrain",
    "score",
]

DEPRECATED_METRICS: dict[str, str] = {"f1": metrics.F1_MACRO}
"""Old metric names still accepted, and the name that replaces each."""


def metric_name(metric: str) -> str:
    """The canonical name of a metric retrain can compare (``f1`` still works, with a FutureWarning).

    Raises:
        LifecycleError: not a metric of :data:`nb2prod.metrics.HIGHER_IS_BETTER`.
    """
    if metric in DEPRECATED_METRICS:
        new = DEPRECATED_METRICS[metric]
        warnings.warn(f"metric {metric!r} is deprecated: use {new!r}", FutureWarning, stacklevel=3)
        return new
    if metric not in metrics.HIGHER_IS_BETTER:
        raise LifecycleError(
            f"unknown metric {metric!r}", hint=f"use one of {', '.join(metrics.HIGHER_IS_BETTER)}"
        )
    return metric


@dataclass(frozen=True)
class Decision:
    """What ``retrain`` decided and the figures it decided on.

    Attributes:
        name: Registered model.
        action: ``promoted``, ``canary``, ``refused`` or ``skipped`` (no drift).
        reason: One sentence a reviewer can check.
        challenger: The version the re-run registered (None when skipped).
        champion: The champion before the decision.
        metric: The score compared (a name of :data:`nb2prod.metrics.HIGHER_IS_BETTER`).
        challenger_score / champion_score: On the same rows.
        improvement: Challenger minus champion, signed so that positive is better.
        min_improvement: The margin asked for.
        holdout: Where the rows came from, and ``rows`` how many.
        run_id: The re-run.
        bento: The Bento exported after a promotion.
        switch: The champion move (or canary) published to the service.
        drift: With ``if_drift``: the drift status and the drifted columns that triggered it.
        degraded: With ``if_degraded``: the estimated accuracy of the served traffic, the
            reference (test-set) accuracy, the drop and the threshold that triggered it.
    """

    name: str
    action: str
    reason: str
    challenger: str | None = None
    champion: str | None = None
    metric: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    improvement: float | None = None
    min_improvement: float = 0.0
    holdout: str | None = None
    rows: int = 0
    run_id: str | None = None
    bento: str | None = None
    switch: Switch | None = None
    drift: dict[str, Any] = field(default_factory=dict)
    degraded: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["switch"] = self.switch.to_dict() if self.switch else None
        return out


def load_registered(
    client: MlflowClient, settings: Settings, name: str, version: str
) -> tuple[Any, dict[str, Any]]:
    """A registered model and its info, its files checked against the capture's sha256 first.

    The files come through :func:`nb2prod.tracking.artifacts.fetch_verified` and are loaded
    with the service's own loader (:func:`nb2prod.serving.loading.load_model`).

    Raises:
        ModelIntegrityError: no recorded hashes, a file that differs, or a type nobody trusted.
    """
    from nb2prod.capture.models import TRUSTED_MODULE_PREFIXES
    from nb2prod.serving.integrity import IntegrityError
    from nb2prod.serving.loading import MODEL_SUBDIR, load_model
    from nb2prod.serving.manifest import ModelInfo
    from nb2prod.tracking.artifacts import fetch_verified

    with tempfile.TemporaryDirectory(prefix="nb2prod-load-") as tmp:
        verified = fetch_verified(client, settings.tracking_uri, name, version, Path(tmp) / MODEL_SUBDIR)
        info = ModelInfo.from_dict({**verified.info, "artifact_sha256": verified.recorded})
        try:
            model = load_model(Path(tmp), info, TRUSTED_MODULE_PREFIXES)
        except IntegrityError as exc:
            raise ModelIntegrityError(
                f"{name}/{version} does not match its capture record: {exc}",
                hint="the artifact changed after capture; re-capture the model",
            ) from exc
    return model, verified.info


def _holdout_from_run(client: MlflowClient, run_id: str) -> tuple[Any, str, str] | None:
    """The test (or reference) frame the run's notebook tracked, with its target and a label."""
    from nb2prod.tracking import client as tracking

    for record, frame, matches in tracking.load_holdouts(client, run_id):
        if not record.get("target"):
            continue
        if not matches:
            raise LifecycleError(
                f"the stored holdout {record.get('name')}.parquet of run {run_id} does not match its recorded digest",
                hint="the artifact changed after capture; score on a file with --holdout",
            )
        where = f"{record.get('name')} ({record.get('role')} rows of run {run_id[:12]})"
        return frame, str(record["target"]), where
    return None


def _holdout_from_feedback(location: str, manifest: Manifest) -> tuple[Any, str, str] | None:
    import pandas as pd

    from nb2prod.batch import rows as batch_rows
    from nb2prod.serving.store import Store

    store = Store(location, readonly=True)
    try:
        rows = store.query(
            "SELECT p.features, f.label FROM predictions p JOIN feedback f ON f.request_id = p.request_id"
        )
        batch = batch_rows.labelled(store, None, math.inf, with_features=True)
    finally:
        store.close()
    if not rows and not batch:
        return None
    target = (manifest.target.name if manifest.target else None) or "label"

    def label_of(text: str) -> Any:
        value = json.loads(text)
        return native_label(value) if isinstance(value, str) else value

    records = [{**json.loads(features), target: label_of(label)} for features, label in rows]
    records += [{**(r.features or {}), target: label_of(str(r.label))} for r in batch]
    return pd.DataFrame.from_records(records), target, f"labelled feedback ({len(records)} rows)"


def _proba(model: Any, X: Any) -> Any:
    proba = model.predict_proba(X)
    return proba[:, 1] if proba.shape[1] == 2 else proba


def _roc_auc(model: Any, X: Any, y: Any) -> float:
    from sklearn import metrics as skm

    return float(skm.roc_auc_score(y, _proba(model, X), multi_class="ovr"))


def _log_loss(model: Any, X: Any, y: Any) -> float:
    from sklearn import metrics as skm

    return float(skm.log_loss(y, model.predict_proba(X), labels=getattr(model, "classes_", None)))


def _on_predictions(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any, Any], float]:
    return lambda model, X, y: float(fn(y, model.predict(X)))


def _scorers() -> dict[str, Callable[[Any, Any, Any], float]]:
    """``(model, X, y) -> score`` of every metric retrain compares (sklearn imported on first use)."""
    import numpy as np
    from sklearn import metrics as skm

    return {
        metrics.ACCURACY: _on_predictions(skm.accuracy_score),
        metrics.F1_MACRO: _on_predictions(lambda y, p: skm.f1_score(y, p, average="macro")),
        metrics.ROC_AUC: _roc_auc,
        metrics.R2: _on_predictions(skm.r2_score),
        metrics.RMSE: _on_predictions(lambda y, p: np.sqrt(skm.mean_squared_error(y, p))),
        metrics.MAE: _on_predictions(skm.mean_absolute_error),
        metrics.LOG_LOSS: _log_loss,
    }


def score(model: Any, info: Mapping[str, Any], frame: Any, target: str, metric: str) -> float:
    """``metric`` of ``model`` on ``frame`` (its feature columns) against ``frame[target]``.

    Raises:
        LifecycleError: an unknown metric.
    """
    scorer = _scorers().get(metric_name(metric))
    if scorer is None:  # a metric added to nb2prod.metrics without a scorer here
        raise LifecycleError(f"retrain cannot compute {metric!r}", hint="compare on accuracy or rmse")
    features = info.get("feature_names") or [c for c in frame.columns if c != target]
    return scorer(model, frame[list(features)], frame[target])


def _rows_to_score(
    client: MlflowClient,
    settings: Settings,
    name: str,
    run_id: str,
    holdout: str | Path | None,
    target: str | None,
    on_feedback: bool,
) -> tuple[Any, str, str]:
    """The rows both versions are scored on, their label column, and where they came from."""
    found: tuple[Any, str, str] | None
    if holdout is not None:
        path = Path(holdout).expanduser()
        found = (read_table(path), target or "", f"file {path.name}")
    elif on_feedback:
        _, manifest = served_manifest(settings, name)
        found = _holdout_from_feedback(store_location(settings, name), manifest)
    else:
        found = _holdout_from_run(client, run_id)
    if found is None:
        raise LifecycleError(
            "no rows to score challenger and champion on",
            hint="track the test split with %nb2prod data test --role test --target LABEL, "
            "or give --holdout FILE --target LABEL, or --on-feedback",
        )
    frame, label, where = found
    label = target or label
    if label not in frame.columns:
        raise LifecycleError(f"the holdout has no label column {label!r}", hint="name it with --target")
    return frame, label, where


def _compare(
    client: MlflowClient,
    settings: Settings,
    name: str,
    challenger: tuple[str, Any, dict[str, Any]],
    champion: str,
    rows: tuple[Any, str, str],
    metric: str,
    min_improvement: float,
    canary: float | None,
) -> Decision:
    """Score challenger and champion on the same rows; promote (or canary) only if better by the margin."""
    frame, label, where = rows
    old_model, old_info = load_registered(client, settings, name, champion)
    scores = []
    for version, model, info in (challenger, (champion, old_model, old_info)):
        try:
            scores.append(score(model, info, frame, label, metric))
        except LifecycleError:
            raise
        except Exception as exc:
            raise LifecycleError(
                f"cannot score {name}/{version} on {where}: {type(exc).__name__}: {exc}",
                hint="the rows must carry the model's feature columns and a label column of its kind",
            ) from None
    new_score, old_score = scores
    sign = -1.0 if metrics.lower_is_better(metric) else 1.0
    improvement = sign * (new_score - old_score)
    better = improvement > 0 and improvement >= min_improvement
    verdict = "better" if better else "not better"
    reason = (
        f"{metric} {new_score:.4f} (v{challenger[0]}) vs {old_score:.4f} (v{champion}) on {len(frame)} rows of {where}: "
        f"{verdict} by the margin {min_improvement:g} (improvement {improvement:+.4f})"
    )
    return Decision(
        name=name,
        action=("canary" if canary else "promoted") if better else "refused",
        reason=reason,
        challenger=challenger[0],
        champion=champion,
        metric=metric,
        challenger_score=new_score,
        champion_score=old_score,
        improvement=improvement,
        min_improvement=min_improvement,
        holdout=where,
        rows=len(frame),
    )


def _act(
    client: MlflowClient, settings: Settings, decision: Decision, canary: float | None, export: bool
) -> Decision:
    """Publish the decision: move the alias, re-export, record it on the run and the version."""
    from nb2prod.tracking import client as tracking

    name, challenger = decision.name, str(decision.challenger)
    figures = {k: v for k, v in decision.to_dict().items() if k not in ("switch", "bento")}
    switch = None
    bento = None
    if decision.action == "canary":
        switch = promote(
            name, challenger, canary=canary, reason="retrain canary", details=figures, settings=settings
        )
    elif decision.action == "promoted":
        switch = promote(name, challenger, reason="retrain", details=figures, settings=settings)
    if export and decision.action in ("promoted", "canary"):
        from nb2prod.export.builder import export_model

        canary_pair = (challenger, float(canary)) if decision.action == "canary" and canary else None
        bento = export_model(f"{name}@champion", settings=settings, canary=canary_pair).tag
    decision = Decision(**{**asdict(decision), "switch": switch, "bento": bento})
    assert decision.run_id is not None  # a decision on a re-run
    tracking.log_json(client, decision.run_id, decision.to_dict(), names.DECISION_ARTIFACT)
    client.set_model_version_tag(name, challenger, names.TAG_DECISION, decision.action)
    client.set_model_version_tag(name, challenger, names.TAG_DECISION_REASON, decision.reason[:4000])
    return decision


DEFAULT_ESTIMATED_DROP = 0.02
"""``--min-estimated-drop``: the fall of the estimated accuracy below the test accuracy that triggers."""


def degradation(
    name: str, since: str | None, min_drop: float, settings: Settings
) -> tuple[Decision | None, dict[str, Any]]:
    """Whether the served model's estimated accuracy fell by ``min_drop``: (a skip decision or None, the figures)."""
    return degradation_of(name, monitor(name, since=since, settings=settings), min_drop)


def degradation_of(
    name: str, report: MonitorReport, min_drop: float
) -> tuple[Decision | None, dict[str, Any]]:
    """:func:`degradation` on a report already built: (a skip decision or None, the figures)."""
    section = report.estimate
    figures: dict[str, Any] = {
        "estimated_accuracy": section.get("estimated_accuracy"),
        "reference_accuracy": section.get("reference_accuracy"),
        "estimated_drop": section.get("estimated_drop"),
        "rows": section.get("estimated", 0),
        "min_estimated_drop": min_drop,
    }
    drop = figures["estimated_drop"]
    if drop is None:
        why = (
            "no estimate of the served accuracy (a classifier whose rows logged probabilities, "
            "with a calibration from its test set, is needed): nothing retrained"
        )
        return Decision(name=name, action="skipped", reason=why, degraded=figures), figures
    if drop < min_drop:
        why = (
            f"estimated accuracy {figures['estimated_accuracy']:.4f} is {drop:+.4f} below the test accuracy "
            f"{figures['reference_accuracy']:.4f} (less than {min_drop:g}): nothing retrained"
        )
        return Decision(name=name, action="skipped", reason=why, degraded=figures), figures
    return None, figures


def retrain(
    name: str,
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    if_drift: bool = False,
    if_degraded: bool = False,
    min_estimated_drop: float = DEFAULT_ESTIMATED_DROP,
    since: str | None = None,
    min_improvement: float = 0.0,
    metric: str | None = None,
    holdout: str | Path | None = None,
    target: str | None = None,
    on_feedback: bool = False,
    canary: float | None = None,
    export: bool = True,
    timeout: int | None = None,
    kernel: str | None = None,
    progress: bool = False,
    params_checked: bool = False,
    settings: Settings | None = None,
) -> Decision:
    """Re-run ``notebook``, compare the challenger with the champion on the same rows, decide.

    ``metric`` is a name of :data:`nb2prod.metrics.HIGHER_IS_BETTER` (default: accuracy for a
    classifier, rmse for a regressor); ``f1`` is a deprecated alias of ``f1_macro``.

    ``if_drift`` retrains only when the served traffic drifted; ``if_degraded`` only when the
    label-free estimate of the served accuracy (``nb2prod monitor``'s ``estimate``) fell at
    least ``min_estimated_drop`` below the accuracy on the test set at capture.

    Raises:
        ExecutionError: the notebook failed (nothing registered, champion untouched).
        LifecycleError: the notebook registered no version of ``name``, no rows to score on,
            a bad metric or margin.
        ModelIntegrityError: a model's files (or the stored holdout) differ from the capture.
    """
    from nb2prod import execute
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    if metric is not None:
        metric = metric_name(metric)
    if min_improvement < 0:
        raise LifecycleError(f"--min-improvement {min_improvement:g} is negative", hint="give a margin >= 0")
    if min_estimated_drop < 0:
        raise LifecycleError(
            f"--min-estimated-drop {min_estimated_drop:g} is negative", hint="give a drop >= 0, e.g. 0.02"
        )
    degraded: dict[str, Any] = {}
    if if_degraded:
        skipped, degraded = degradation(name, since, min_estimated_drop, settings)
        if skipped is not None:
            return skipped
    drift: dict[str, Any] = {}
    if if_drift:
        report = monitor(name, since=since, settings=settings)
        drift = {"status": report.status, "drifted": list(report.drifted)}
        if report.status != "drift":
            return Decision(
                name=name,
                action="skipped",
                reason=f"no drift in the served traffic (status {report.status}): nothing retrained",
                drift=drift,
            )
    if holdout is not None and not Path(holdout).expanduser().is_file():
        raise LifecycleError(
            f"no holdout file at {Path(holdout).expanduser()}",
            hint="a CSV or Parquet file with the label column",
        )
    client = mlflow_client(settings)
    champion = registry.alias_version(client, name, registry.CHAMPION)

    result = execute.run_notebook(
        notebook,
        parameters or {},
        settings=settings,
        timeout=timeout,
        kernel=kernel,
        progress=progress,
        params_checked=params_checked,
    )
    result.raise_for_failure()
    challenger = result.registered.get(name)
    if challenger is None:
        raise LifecycleError(
            f"the notebook registered no version of {name!r} (it registered: {', '.join(result.registered) or 'nothing'})",
            hint=f"the notebook must capture the model with %nb2prod model EST --name {name}",
        )
    assert result.run_id is not None  # a run that registered a version was recorded
    new_model, new_info = load_registered(client, settings, name, challenger)
    metric = metric or (metrics.ACCURACY if new_info.get("is_classifier") else metrics.RMSE)

    if champion is None:
        decision = Decision(
            name=name,
            action="promoted",
            reason=f"{name} had no champion: version {challenger} becomes the first",
            challenger=challenger,
            metric=metric,
        )
    else:
        rows = _rows_to_score(client, settings, name, result.run_id, holdout, target, on_feedback)
        decision = _compare(
            client,
            settings,
            name,
            (challenger, new_model, new_info),
            champion,
            rows,
            metric,
            min_improvement,
            canary,
        )
    decision = Decision(
        **{
            **asdict(decision),
            "min_improvement": min_improvement,
            "run_id": result.run_id,
            "drift": drift,
            "degraded": degraded,
        }
    )
    return _act(client, settings, decision, canary, export)
