"""``model``: log a fitted model, prove it loads in a fresh process, register it, record its metrics.

Nothing reaches the registry before the round trip passed: the saved files are hashed
(:func:`nb2prod.serving.integrity.sha256_tree`, the check every later load repeats), loaded in a
fresh interpreter (:mod:`nb2prod.capture.roundtrip`) and must predict as the live object.
Under ``nb2prod run`` (:data:`nb2prod.protocol.DEFER_REGISTRATION`) the version is only recorded
as a candidate; the runner registers it when the whole notebook succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod import metrics as metric_names
from nb2prod import protocol
from nb2prod.capture import calibration
from nb2prod.exceptions import ModelError, RoundTripError
from nb2prod.session import datasets, state
from nb2prod.tracking import names

if TYPE_CHECKING:
    from nb2prod.capture.models import ModelInfo, RoundTrip

TRAIN_PREFIX = "training"
TEST_PREFIX = "test"
ROUNDTRIP_PASSED = "passed"
ROUNDTRIP_FAILED = "failed"


@dataclass(frozen=True)
class ModelRecord:
    """A captured, round-trip-checked, registered model version.

    Attributes:
        name: Registered model name.
        version: Registry version; None while a runner defers registration to the run's end.
        model_uri: ``models:/NAME/VERSION`` (``models:/m-...`` while not registered).
        model_id: MLflow logged-model id (``m-...``).
        run_id: Run it was logged in.
        info: What nb2prod learnt about the live object.
        metrics: Metrics on the data it was given.
        data_digests: Digests of X (and y) it was fitted on.
        artifact_sha256: sha256 of every saved file, by relative path.
        roundtrip: The fresh-process load check.
        requirements: Pinned requirements saved with the model.
        identical_to: An earlier version of the same name with the same code, data and metrics.
        registered: A version was created (False under a runner, or when skipped as identical).
        champion: Registration made this version the champion (the model's first version).
    """

    name: str
    version: str | None
    model_uri: str
    model_id: str
    run_id: str
    info: ModelInfo
    metrics: dict[str, float]
    data_digests: dict[str, str]
    artifact_sha256: dict[str, str]
    roundtrip: RoundTrip
    requirements: list[str]
    identical_to: str | None = None
    registered: bool = True
    champion: bool = False


@dataclass(frozen=True)
class _Logged:
    model_id: str
    model_uri: str


def _deferred() -> bool:
    return os.environ.get(protocol.DEFER_REGISTRATION, "").strip().lower() in ("1", "true", "yes")


def model(
    estimator: Any,
    *,
    X: Any = None,
    y: Any = None,
    name: str | None = None,
    trust: tuple[str, ...] | list[str] = (),
    variable: str | None = None,
    progress: Callable[[str], None] | None = None,
    skip_identical: bool = False,
    champion: bool | None = None,
) -> ModelRecord:
    """Log, round-trip check and register a fitted model.

    Without ``X``, the last dataset tracked with role ``train`` is used (minus its
    target column, which becomes ``y``). The saved model is loaded in a fresh
    process and must predict as the live one before it is registered.
    ``progress`` is called with each step as it begins (the magic shows them).
    A version identical to an earlier one (same code, data digests, class, params and metrics) is
    said so in ``identical_to``; ``skip_identical`` then registers nothing. The first version of a
    model becomes its ``champion`` (recorded in the alias history) unless ``champion=False`` or the
    ``first_champion`` setting is off.

    Raises:
        NotStartedError, ModelError, RoundTripError, StoreError.
    """
    from nb2prod.capture import models as models_mod
    from nb2prod.capture.hashing import digest_object
    from nb2prod.tracking import artifacts, registry
    from nb2prod.tracking import client as tracking

    session = state.current()
    label = variable or name or "model"
    info = models_mod.inspect_model(estimator, variable=label, trust=tuple(trust))
    reg_name = name or label
    _check_model_name(reg_name)

    x_source = "--X"
    if X is None:
        if y is not None:
            raise ModelError("--y was given without --X", hint="pass both --X and --y, or neither")
        X, y, x_source = datasets.training_data(session, label)
    columns = [str(c) for c in X.columns] if hasattr(X, "columns") else None
    shape = getattr(X, "shape", None)
    n_columns = int(shape[1]) if shape is not None and len(shape) > 1 else 1
    models_mod.check_features(info, columns, n_columns, label)
    if y is not None and len(y) != len(X):
        raise ModelError(
            f"X has {len(X)} rows but y has {len(y)}", hint="pass the X and y the model was fitted on"
        )

    digests = {"X": digest_object(X)}
    if y is not None:
        digests["y"] = digest_object(y)
    for tracked in session.datasets.values():
        if tracked.digest in digests.values() or tracked.name == x_source:
            digests[f"{names.DATASET_KEY_PREFIX}{tracked.name}"] = tracked.digest

    rows = session.settings.roundtrip_rows
    live_sample = X.head(rows) if hasattr(X, "head") else X[:rows]
    # The saved model is fed what a service will send: the signature's types.
    sample = models_mod.to_signature_types(live_sample)
    try:
        live_pred = estimator.predict(live_sample)
        live_proba = estimator.predict_proba(live_sample) if info.has_proba else None
    except Exception as exc:
        raise ModelError(
            f"model '{label}' fails to predict on its own training data ({type(exc).__name__}: {exc})",
            hint="check that X is the data the model was fitted on",
        ) from exc
    metrics = _metrics(estimator, info, X, y, TRAIN_PREFIX)
    try:
        test = datasets.labelled_test_data(session)
        if test is not None:
            metrics.update(_metrics(estimator, info, *test, TEST_PREFIX))
    except Exception:
        pass  # a test frame that does not fit the model is not this model's test data

    requirements = _requirements(session, info)
    _refresh_imported(session)
    what = f"model '{reg_name}'"
    step = progress or (lambda _: None)
    step(f"logging {what} to MLflow")
    started = time.perf_counter()
    with state.tracking_call(session, f"logging {what}", what):
        logged = _log_model(session, estimator, info, sample, live_pred, requirements, reg_name)
    artifact_hashes = _artifact_hashes(session, logged.model_id)

    step("checking that it loads and predicts the same in a fresh Python process")
    pending = models_mod.begin_roundtrip(
        logged.model_uri,
        session.settings.tracking_uri,
        sample,
        live_pred,
        live_proba,
        variable=label,
        artifact_sha256=artifact_hashes,
    )
    try:
        # While the fresh process loads the model: record what does not depend on its verdict.
        with state.tracking_call(
            session, f"recording metrics of {what}", f"metrics and registration of {what}"
        ):
            _log_metrics(session, logged.model_id, metrics, _metric_datasets(session, digests, x_source))
            tracking.log_json(
                session.client, session.run_id, artifact_hashes, names.artifact_hashes(logged.model_id)
            )
            model_json = {
                "name": reg_name,
                "model_id": logged.model_id,
                "info": info.to_dict(),
                "data_digests": digests,
                "artifact_sha256": artifact_hashes,
                "metrics": metrics,
                "requirements": requirements,
                names.MODEL_CALIBRATION: calibration.of_test_set(
                    estimator, lambda: datasets.labelled_test_data(session)
                ),
                "log_seconds": round(time.perf_counter() - started, 3),
            }
            tracking.log_json(session.client, session.run_id, model_json, names.model_record(reg_name))
            identity = _identity(session, info, digests, metrics)
            identical_to = _identical_version(session, reg_name, identity)
    except BaseException:
        with contextlib.suppress(Exception):
            pending.wait()
        raise
    try:
        trip = pending.wait()
    except RoundTripError:
        with contextlib.suppress(Exception):
            session.client.set_logged_model_tags(logged.model_id, {names.TAG_ROUNDTRIP: ROUNDTRIP_FAILED})
        raise
    finally:
        if session.settings.warm_roundtrip:
            models_mod.WARM.prewarm(session.settings.tracking_uri)  # for the next model

    hashes_tag = artifacts.hashes_digest(artifact_hashes)
    with state.tracking_call(session, f"recording the check of {what}", f"the round-trip tag of {what}"):
        session.client.set_logged_model_tags(
            logged.model_id, {names.TAG_ROUNDTRIP: ROUNDTRIP_PASSED, names.TAG_ARTIFACT_SHA256: hashes_tag}
        )
    registry_tags = _registry_tags(session, logged.model_id, digests, hashes_tag, info)
    registry_tags[names.TAG_IDENTITY] = identity
    description = version_description(session, reg_name, logged.model_id, digests, metrics, identical_to)
    first_champion = session.settings.first_champion if champion is None else champion
    deferred = _deferred()
    skip = skip_identical and identical_to is not None
    version: str | None = None
    became_champion = False
    if skip:
        step(f"not registering {what}: identical to version {identical_to}")
    else:
        step(f"recording {what} for the runner" if deferred else f"registering {what}")
        with state.tracking_call(session, f"recording {what}", f"the registration of {what}"):
            registry.record_candidate(
                session.client,
                session.run_id,
                reg_name,
                logged.model_uri,
                registry_tags,
                description=description,
                model_id=logged.model_id,
            )  # under a runner, promotion is the runner's decision (nb2prod retrain compares)
            if not deferred:
                registered = registry.register(
                    session.client,
                    session.run_id,
                    reg_name,
                    logged.model_uri,
                    registry_tags,
                    description=description,
                    model_id=logged.model_id,
                    first_champion=first_champion,
                )
                version, became_champion = registered.version, registered.champion
    record = ModelRecord(
        name=reg_name,
        version=version,
        model_uri=f"models:/{reg_name}/{version}" if version else logged.model_uri,
        model_id=logged.model_id,
        run_id=session.run_id,
        info=info,
        metrics=metrics,
        data_digests=digests,
        artifact_sha256=artifact_hashes,
        roundtrip=trip,
        requirements=requirements,
        identical_to=identical_to,
        registered=version is not None,
        champion=became_champion,
    )
    session.models.append(record)
    return record


def _check_model_name(name: str) -> None:
    bad = [ch for ch in name if not (ch.isalnum() or ch in "-_.")]
    if not name or bad:
        raise ModelError(
            f"model name {name!r} is not allowed",
            hint="use letters, digits, '-', '_' or '.', e.g. --name churn-model",
        )


def _metrics(estimator: Any, info: ModelInfo, X: Any, y: Any, prefix: str) -> dict[str, float]:
    """``PREFIX_<metric>`` for the metrics of :mod:`nb2prod.metrics` (and log loss) on X, y."""
    if y is None:
        return {}
    import numpy as np
    from sklearn import metrics as skm

    pred = estimator.predict(X)
    values: dict[str, float] = {}
    if info.is_classifier:
        values[metric_names.ACCURACY] = float(skm.accuracy_score(y, pred))
        values[metric_names.F1_MACRO] = float(skm.f1_score(y, pred, average="macro"))
        if info.has_proba and info.classes is not None and len(info.classes) == 2:
            proba = estimator.predict_proba(X)[:, 1]
            values[metric_names.ROC_AUC] = float(skm.roc_auc_score(y, proba))
            values[metric_names.LOG_LOSS] = float(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15)))
    else:
        values[metric_names.R2] = float(skm.r2_score(y, pred))
        values[metric_names.MAE] = float(skm.mean_absolute_error(y, pred))
        values[metric_names.RMSE] = float(np.sqrt(skm.mean_squared_error(y, pred)))
    return {f"{prefix}_{key}": value for key, value in values.items()}


def _requirements(session: state.Session, info: ModelInfo) -> list[str]:
    from nb2prod.capture.distributions import imported_distributions

    modules = state.user_modules(session.shell) | {info.class_name.split(".")[0], "numpy", "pandas"}
    if info.flavor == "sklearn":
        modules |= {"sklearn", "skops", "scipy"}
    pins = imported_distributions(modules)
    pins.pop("nb2prod", None)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _refresh_imported(session: state.Session) -> None:
    """Re-record the notebook's imports: cells run since ``start`` may have imported more."""
    from nb2prod.capture.distributions import imported_distributions, requirements_txt
    from nb2prod.tracking import client as tracking

    env = session.environment
    imported = dict(env.imported) | imported_distributions(state.user_modules(session.shell))
    imported.pop("nb2prod", None)
    if imported == env.imported:
        return
    session.environment = replace(env, imported=dict(sorted(imported.items())))
    with state.tracking_call(session, "updating the environment record", "the notebook's latest imports"):
        tracking.log_json(
            session.client, session.run_id, session.environment.to_dict(), names.ENVIRONMENT_JSON
        )
        session.client.log_text(session.run_id, requirements_txt(session.environment), names.REQUIREMENTS_TXT)


def _log_model(
    session: state.Session,
    estimator: Any,
    info: ModelInfo,
    sample: Any,
    predictions: Any,
    requirements: list[str],
    name: str,
) -> _Logged:
    import mlflow
    from mlflow.models import infer_signature

    from nb2prod.capture import models as models_mod

    state.bind_fluent_run(session.run_id)
    example = sample.head(5) if hasattr(sample, "head") else sample[:5]
    signature = infer_signature(sample, predictions)
    common: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "input_example": example,
        "pip_requirements": requirements,
        "params": info.params or None,
        "tags": {names.TAG_FLAVOR: info.flavor, names.TAG_RUN_ID: session.run_id},
    }
    if info.flavor == models_mod.SKLEARN:
        result = mlflow.sklearn.log_model(
            estimator, serialization_format="skops", skops_trusted_types=info.trusted_types, **common
        )
    elif info.flavor == models_mod.XGBOOST:
        result = mlflow.xgboost.log_model(estimator, **common)
    elif info.flavor == models_mod.LIGHTGBM:
        result = mlflow.lightgbm.log_model(estimator, **common)
    else:
        from nb2prod.capture.pyfunc import wrap

        result = mlflow.pyfunc.log_model(python_model=wrap(estimator), **common)
    return _Logged(model_id=result.model_id, model_uri=f"models:/{result.model_id}")


def _artifact_hashes(session: state.Session, model_id: str) -> dict[str, str]:
    """sha256 of every file of the logged model, as the store holds it."""
    import mlflow

    from nb2prod.serving.integrity import sha256_tree

    with (
        state.tracking_call(session, "hashing the saved model", "the artifact hashes"),
        tempfile.TemporaryDirectory(prefix="nb2prod-artifacts-") as tmp,
    ):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_id}", dst_path=tmp, tracking_uri=session.settings.tracking_uri
        )
        return sha256_tree(Path(local))


def _registry_tags(
    session: state.Session,
    model_id: str,
    digests: dict[str, str],
    hashes_digest: str,
    info: ModelInfo,
) -> dict[str, str]:
    env = session.environment
    tags = {
        names.TAG_RUN_ID: session.run_id,
        names.TAG_MODEL_ID: model_id,
        names.TAG_FLAVOR: info.flavor,
        names.TAG_ENV_DIGEST: env.digest,
        names.TAG_ARTIFACT_SHA256: hashes_digest,
        names.TAG_CLASS: info.class_name,
    }
    for key, value in digests.items():
        tags[names.data_digest_tag(key.replace(":", "."))] = value
    if env.notebook is not None:
        tags[names.TAG_NOTEBOOK_DIGEST] = env.notebook.code_digest
        tags[names.TAG_NOTEBOOK] = state.notebook_key(env)
    if env.git is not None and env.git.commit:
        tags[names.TAG_GIT_COMMIT] = env.git.commit
    return tags


def _metric_datasets(
    session: state.Session, digests: dict[str, str], x_source: str
) -> dict[str, tuple[str, str]]:
    """Metric prefix -> (dataset name, MLflow dataset digest) the metrics were computed on: the
    tracked training frame the model was fitted on, and the labelled test frame."""
    out: dict[str, tuple[str, str]] = {}
    tracked = session.datasets
    train = tracked.get(x_source)
    if train is None:
        keys = [k[len(names.DATASET_KEY_PREFIX) :] for k in digests if k.startswith(names.DATASET_KEY_PREFIX)]
        train = next((tracked[k] for k in keys if k in tracked and tracked[k].role == "train"), None)
    if train is not None:
        out[TRAIN_PREFIX] = (train.name, datasets.mlflow_digest(train))
    tests = [r for r in tracked.values() if r.role == "test" and r.target and r.name in session.frames]
    if tests:
        out[TEST_PREFIX] = (tests[-1].name, datasets.mlflow_digest(tests[-1]))
    return out


def _log_metrics(
    session: state.Session, model_id: str, metrics: dict[str, float], on: dict[str, tuple[str, str]]
) -> None:
    """One batch: each metric linked to the logged model and to the dataset it was computed on."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = []
    for key, value in metrics.items():
        dataset = on.get(key.split("_", 1)[0])
        batch.append(
            Metric(
                key,
                value,
                now,
                0,
                model_id=model_id,
                dataset_name=dataset[0] if dataset else None,
                dataset_digest=dataset[1] if dataset else None,
            )
        )
    if batch:
        session.client.log_batch(session.run_id, metrics=batch)


def _identity(
    session: state.Session, info: ModelInfo, digests: dict[str, str], metrics: dict[str, float]
) -> str:
    """What makes two captures the same model: code, data, class, params and metrics."""
    import hashlib

    env = session.environment
    basis = {
        "code": env.notebook.code_digest if env.notebook is not None else None,
        "data": dict(sorted(digests.items())),
        "class": info.class_name,
        "params": dict(sorted(info.params.items())),
        "metrics": {k: f"{v:.12g}" for k, v in sorted(metrics.items())},
    }
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def _identical_version(session: state.Session, name: str, identity: str) -> str | None:
    """The newest registered version of ``name`` with the same identity, if any."""
    escaped = name.replace("'", "\\'")
    versions = session.client.search_model_versions(f"name = '{escaped}'")
    same = [int(mv.version) for mv in versions if (mv.tags or {}).get(names.TAG_IDENTITY) == identity]
    return str(max(same)) if same else None


def version_description(
    session: state.Session,
    name: str,
    model_id: str,
    digests: dict[str, str],
    metrics: dict[str, float],
    identical_to: str | None,
) -> str:
    """The registered version's description (Markdown, shown on its MLflow page): where it comes
    from, the data it was fitted on, its metrics."""
    from nb2prod.render.notebook_html import metrics_rows

    env = session.environment
    lines = [f"Captured by nb2prod from run `{session.run_id}` (logged model `{model_id}`)."]
    if env.notebook is not None:
        lines.append(f"Notebook `{state.notebook_key(env)}`, code `{env.notebook.code_digest[:19]}`.")
    if env.git is not None and env.git.commit:
        lines.append(
            f"Git commit `{env.git.commit[:12]}`{' (uncommitted changes)' if env.git.dirty else ''}."
        )
    if identical_to is not None:
        lines.append(f"Identical to version {identical_to} of {name} (same code, data and metrics).")
    lines += ["", "Data:"]
    lines += [f"- {key}: `{value}`" for key, value in digests.items()]
    rows = metrics_rows(metrics)
    if rows:
        lines += ["", "| metric | train | test |", "| --- | --- | --- |"]
        lines += [f"| {m} | {train} | {test} |" for m, train, test in rows]
    return "\n".join(lines)
