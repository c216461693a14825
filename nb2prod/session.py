"""The capture session of one notebook: the pure core behind ``%nb2prod``.

One :class:`Session` per kernel, bound to one MLflow run. Each public
function (``start``, ``data``, ``model``, ``status``, ``end``) is what the
magic of the same name calls, and what a script calls without IPython. They
return dataclasses, never formatted text.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import DataError, ModelError, NotStartedError, StoreError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.capture.data import DatasetRecord
    from nb2prod.capture.environment import EnvironmentDiff, EnvironmentSnapshot
    from nb2prod.capture.models import ModelInfo, RoundTrip

ROLES = ("train", "test", "reference", "other")
TAG_DATA_PREFIX = "nb2prod.data."
TAG_ARTIFACT_SHA256 = "nb2prod.artifact_sha256"
TAG_FLAVOR = "nb2prod.flavor"
TAG_RUN_ID = "nb2prod.run_id"
TAG_MODEL_ID = "nb2prod.model_id"
# Set by a runner (``nb2prod run``) in the kernel's environment: capture into this existing run,
# and leave registration to the runner, which registers only when the whole notebook succeeded.
ATTACH_ENV = "NB2PROD_RUN_ID"
DEFER_ENV = "NB2PROD_DEFER_REGISTRATION"


@dataclass(frozen=True)
class StartResult:
    """A capture session that has begun.

    Attributes:
        run_id: The MLflow run every capture of this session goes to.
        experiment: Experiment name.
        tracking_uri: Store, password hidden.
        environment: The environment snapshot logged as ``environment.json``.
        previous_run_id: The last earlier run of the same notebook, if any.
        diff: What changed since that run (None without one).
    """

    run_id: str
    experiment: str
    tracking_uri: str
    environment: EnvironmentSnapshot
    previous_run_id: str | None
    diff: EnvironmentDiff | None


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


@dataclass(frozen=True)
class StatusReport:
    """Everything a session has recorded so far."""

    run_id: str
    experiment: str
    tracking_uri: str
    environment: EnvironmentSnapshot
    previous_run_id: str | None
    diff: EnvironmentDiff | None
    datasets: list[DatasetRecord]
    models: list[ModelRecord]
    not_recorded: list[str]


@dataclass
class Session:
    """State of one capture session (one kernel, one MLflow run)."""

    settings: Settings
    client: MlflowClient
    run_id: str
    experiment: str
    experiment_id: str
    environment: EnvironmentSnapshot
    previous_run_id: str | None
    diff: EnvironmentDiff | None
    shell: Any = None
    datasets: dict[str, DatasetRecord] = field(default_factory=dict)
    frames: dict[str, Any] = field(default_factory=dict)
    models: list[ModelRecord] = field(default_factory=list)
    not_recorded: list[str] = field(default_factory=list)
    attached: bool = False


_current: Session | None = None


def current() -> Session:
    """The open session.

    Raises:
        NotStartedError: ``start`` has not been called in this kernel.
    """
    if _current is None:
        raise NotStartedError(
            "no capture session is open",
            hint="run %nb2prod start [EXPERIMENT] (Python: nb2prod.start()) first",
        )
    return _current


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def _executed_cells(shell: Any) -> list[str]:
    if shell is None:
        return []
    cells = shell.user_ns.get("In") or []
    return [c for c in cells if isinstance(c, str) and c.strip()]


def _notebook_path(shell: Any, explicit: str | Path | None) -> Path | None:
    candidates: list[Any] = [explicit, os.environ.get("NB2PROD_NOTEBOOK")]
    if shell is not None:
        candidates.append(shell.user_ns.get("__vsc_ipynb_file__"))
    candidates.append(os.environ.get("JPY_SESSION_NAME"))
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(str(candidate)).expanduser()
        if explicit is not None and candidate is explicit and not path.is_file():
            raise UsageError(
                f"notebook {path} does not exist", hint="pass the path of the .ipynb file you are running"
            )
        if path.suffix == ".ipynb" and path.is_file():
            return path.resolve()
    return None


def _user_modules(shell: Any) -> set[str]:
    """Top-level modules the notebook imported: import statements run, plus types of its objects."""
    from nb2prod.capture.environment import imports_in_code

    if shell is None:
        return {name.split(".")[0] for name in list(sys.modules) if not name.startswith("_")}
    names = set(imports_in_code(_executed_cells(shell)))
    hidden = set(getattr(shell, "user_ns_hidden", {}) or {})
    for key, value in list(shell.user_ns.items()):
        if key.startswith("_") or key in hidden:
            continue
        module = getattr(type(value), "__module__", None)
        if isinstance(value, type(sys)):
            module = value.__name__
        if module:
            names.add(module.split(".")[0])
    names.discard("nb2prod")
    names.discard("__main__")
    return names


def _snapshot(shell: Any, notebook: str | Path | None) -> EnvironmentSnapshot:
    from nb2prod.capture import environment

    path = _notebook_path(shell, notebook)
    cells = None if path is not None else _executed_cells(shell) or None
    return environment.snapshot(
        notebook_path=path,
        code_cells=cells,
        imported_modules=_user_modules(shell),
        cwd=path.parent if path is not None else Path.cwd(),
    )


def _notebook_key(env: EnvironmentSnapshot) -> str:
    if env.notebook is not None and env.notebook.path:
        return env.notebook.path
    return "<interactive>"


def start(
    experiment: str | None = None,
    *,
    notebook: str | Path | None = None,
    home: str | Path | None = None,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
) -> StartResult:
    """Open the capture session: environment snapshot, notebook digest, an MLflow run.

    A session already open in this kernel is finished first.

    Raises:
        StoreError: The tracking store could not be reached or written; no session was opened.
    """
    global _current
    from nb2prod.capture import environment as env_mod
    from nb2prod.tracking import client as tracking

    settings = load_settings(home, tracking_uri=tracking_uri, experiment=experiment)
    shell = _shell()
    if _current is not None:
        end()
    tracking.check_reachable(settings)
    snap = _snapshot(shell, notebook)
    key = _notebook_key(snap)
    run_tags = {
        tracking.TAG_KIND: "capture",
        tracking.TAG_NOTEBOOK: key,
        tracking.TAG_ENV_DIGEST: snap.digest,
        "mlflow.source.name": key,
        "mlflow.source.type": "NOTEBOOK",
    }
    if snap.notebook is not None:
        run_tags[tracking.TAG_NOTEBOOK_DIGEST] = snap.notebook.code_digest
    if snap.git is not None:
        run_tags[tracking.TAG_GIT_COMMIT] = snap.git.commit
        run_tags["mlflow.source.git.commit"] = snap.git.commit
    run_tags.update(tags or {})

    attach_to = os.environ.get(ATTACH_ENV) or None
    with tracking.store_call(settings, what="opening the MLflow run", not_recorded="the whole session"):
        client = tracking.client(settings)
        if attach_to:
            # A runner (nb2prod run) opened the run: capture into it, it owns the run's status.
            run = client.get_run(attach_to)
            experiment_id = run.info.experiment_id
            experiment_name = client.get_experiment(experiment_id).name
            if settings.experiment != experiment_name:
                run_tags["nb2prod.requested_experiment"] = settings.experiment
            settings = settings.with_(experiment=experiment_name)
            previous = tracking.previous_run_id(client, experiment_id, key, exclude=attach_to)
        else:
            experiment_id = tracking.ensure_experiment(settings, client, settings.experiment)
            previous = tracking.previous_run_id(client, experiment_id, key)
        if previous:
            run_tags[tracking.TAG_PREVIOUS_RUN] = previous
        if attach_to:
            for tag_key, value in run_tags.items():
                if tag_key != tracking.TAG_KIND:
                    client.set_tag(attach_to, tag_key, value)
        else:
            run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        with tracking.store_call(settings, what="logging the environment", not_recorded="environment.json"):
            tracking.log_json(client, run_id, snap.to_dict(), tracking.ENVIRONMENT_JSON)
            client.log_text(run_id, env_mod.requirements_txt(snap), tracking.REQUIREMENTS_TXT)
    except StoreError:
        if not attach_to:
            _fail_run(client, run_id)
        raise

    diff = None
    missed: list[str] = []
    if previous:
        old = tracking.load_json_artifact(client, previous, tracking.ENVIRONMENT_JSON)
        if old is not None:
            diff = env_mod.diff(env_mod.EnvironmentSnapshot.from_dict(old), snap)
            try:
                tracking.log_json(client, run_id, diff.to_dict(), tracking.ENVIRONMENT_DIFF_JSON)
            except Exception:
                missed.append(tracking.ENVIRONMENT_DIFF_JSON)
    _bind_fluent_run(run_id)
    _current = Session(
        settings=settings,
        client=client,
        run_id=run_id,
        experiment=settings.experiment,
        experiment_id=experiment_id,
        environment=snap,
        previous_run_id=previous,
        diff=diff,
        shell=shell,
        not_recorded=missed,
        attached=bool(attach_to),
    )
    return StartResult(
        run_id=run_id,
        experiment=settings.experiment,
        tracking_uri=tracking.redact_uri(settings.tracking_uri),
        environment=snap,
        previous_run_id=previous,
        diff=diff,
    )


def _bind_fluent_run(run_id: str) -> None:
    """Make our run MLflow's active run, so the user's own ``mlflow.log_*`` calls land in it."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id != run_id:
        mlflow.end_run()
    if mlflow.active_run() is None:
        mlflow.start_run(run_id=run_id)


def _fail_run(client: MlflowClient, run_id: str) -> None:
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status="FAILED")


def end(status: str = "FINISHED") -> str | None:
    """Finish the open session's run (``FINISHED`` or ``FAILED``); returns its id, None if none was open."""
    global _current
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise UsageError(f"unknown run status {status!r}", hint="use FINISHED, FAILED or KILLED")
    session = _current
    if session is None:
        return None
    _current = None
    import mlflow

    active = mlflow.active_run()
    if session.attached:
        # The runner that opened the run sets its final status.
        return session.run_id
    with tracking_call(session, f"ending run {session.run_id}", f"the run's {status} status"):
        if active is not None and active.info.run_id == session.run_id:
            mlflow.end_run(status=status)
        else:
            session.client.set_terminated(session.run_id, status=status)
    return session.run_id


def _resolve_path(obj: Any) -> Path | None:
    if isinstance(obj, Path):
        return obj
    if isinstance(obj, str):
        return Path(obj).expanduser()
    return None


def data(
    obj: Any,
    *,
    name: str | None = None,
    role: str = "train",
    target: str | None = None,
) -> DatasetRecord:
    """Record a dataset: full-content digest, schema and profile, logged as an MLflow input.

    ``obj`` is a DataFrame, Series, numpy array, or the path of a file or directory.

    Raises:
        NotStartedError: no session. DataError: unusable data. StoreError: the store failed.
    """
    from nb2prod.capture import data as data_mod

    session = current()
    if role not in ROLES:
        raise DataError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
    path = _resolve_path(obj)
    if path is not None:
        if not path.exists():
            raise DataError(f"no file or directory at {path}", hint="check the path, or pass a DataFrame")
        record = data_mod.describe_path(path, name=name or path.stem, role=role, target=target)
    else:
        record = data_mod.describe(obj, name=name or "data", role=role, target=target)
    _log_dataset(session, record)
    if path is None and role in HOLDOUT_ROLES:
        _log_holdout(session, record, obj)
    session.datasets[record.name] = record
    if path is None:
        session.frames[record.name] = obj
    return record


HOLDOUT_ROLES = ("test", "reference")
HOLDOUT_MAX_MB_ENV = "NB2PROD_HOLDOUT_MAX_MB"


def _log_holdout(session: Session, record: DatasetRecord, frame: Any) -> None:
    """Keep a test/reference frame as ``datasets/NAME.parquet``, so later runs and challengers
    can be scored on exactly these rows (``nb2prod retrain``, ``nb2prod reproduce``).

    Frames above ``NB2PROD_HOLDOUT_MAX_MB`` (default 50) are described but not stored.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return
    limit = float(os.environ.get(HOLDOUT_MAX_MB_ENV, "50"))
    if frame.memory_usage(deep=True).sum() > limit * 1e6:
        return
    what = f"holdout rows of '{record.name}'"
    with tempfile.TemporaryDirectory(prefix="nb2prod-holdout-") as tmp:
        file = Path(tmp) / f"{record.name}.parquet"
        try:
            frame.to_parquet(file)
        except Exception:
            return  # a frame parquet cannot hold (mixed object columns) is described, not stored
        with tracking_call(session, f"logging {what}", what):
            session.client.log_artifact(session.run_id, str(file), "datasets")


def _log_dataset(session: Session, record: DatasetRecord) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from nb2prod.tracking import client as tracking

    hex32 = record.digest.split(":", 1)[-1][:32]
    if record.path:
        source_type, source = "local", json.dumps({"uri": str(record.path)})
    else:
        source_type = "code"
        source = json.dumps({"tags": {"mlflow.source.name": _notebook_key(session.environment)}})
    schema = None
    if record.schema:
        colspec = [
            {"name": c.name, "type": _mlflow_type(c.kind, c.dtype), "required": not c.nullable}
            for c in record.schema
        ]
        schema = json.dumps({"mlflow_colspec": colspec})
    rows, cols = record.n_rows or 0, record.n_cols or 0
    profile = json.dumps({"num_rows": rows, "num_elements": rows * cols})
    dataset = Dataset(
        name=record.name, digest=hex32, source_type=source_type, source=source, schema=schema, profile=profile
    )
    tags = [InputTag("mlflow.data.context", record.role)]
    what = f"dataset '{record.name}'"
    with tracking.store_call(session.settings, what=f"logging {what}", not_recorded=what):
        session.client.log_inputs(session.run_id, datasets=[DatasetInput(dataset, tags=tags)])
        session.client.set_tag(session.run_id, f"{TAG_DATA_PREFIX}{record.name}.digest", record.digest)
        tracking.log_json(session.client, session.run_id, record.to_dict(), f"datasets/{record.name}.json")


def _mlflow_type(kind: str, dtype: str) -> str:
    if kind == "float":
        return "float" if "32" in dtype else "double"
    if kind == "int":
        return "integer" if "32" in dtype or "16" in dtype or "8" in dtype else "long"
    if kind == "bool":
        return "boolean"
    if kind == "datetime":
        return "datetime"
    return "string"


def _training_data(session: Session, variable: str) -> tuple[Any, Any, str]:
    train = [r for r in session.datasets.values() if r.role == "train" and r.name in session.frames]
    if not train:
        raise ModelError(
            f"no training data for model '{variable}'",
            hint="pass --X X_train [--y y_train], or first track the training frame with "
            "%nb2prod data DF --role train --target LABEL",
        )
    record = train[-1]
    frame = session.frames[record.name]
    if record.target:
        return frame.drop(columns=[record.target]), frame[record.target], record.name
    return frame, None, record.name


def model(
    estimator: Any,
    *,
    X: Any = None,
    y: Any = None,
    name: str | None = None,
    trust: tuple[str, ...] | list[str] = (),
    variable: str | None = None,
) -> ModelRecord:
    """Log, round-trip check and register a fitted model.

    Without ``X``, the last dataset tracked with role ``train`` is used (minus its
    target column, which becomes ``y``). The saved model is loaded in a fresh
    process and must predict as the live one before it is registered.

    Raises:
        NotStartedError, ModelError, RoundTripError, StoreError.
    """
    from nb2prod.capture import models as models_mod
    from nb2prod.capture.hashing import digest_object

    session = current()
    label = variable or name or "model"
    info = models_mod.inspect_model(estimator, variable=label, trust=tuple(trust))
    reg_name = name or label
    _check_model_name(reg_name)

    x_source = "--X"
    if X is None:
        if y is not None:
            raise ModelError("--y was given without --X", hint="pass both --X and --y, or neither")
        X, y, x_source = _training_data(session, label)
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
    for record in session.datasets.values():
        if record.digest in digests.values() or record.name == x_source:
            digests[f"dataset:{record.name}"] = record.digest

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
    metrics = _metrics(estimator, info, X, y, "training")
    test = [
        r for r in session.datasets.values() if r.role == "test" and r.target and r.name in session.frames
    ]
    if test:
        frame = session.frames[test[-1].name]
        try:
            features, labels = frame.drop(columns=[test[-1].target]), frame[test[-1].target]
            metrics.update(_metrics(estimator, info, features, labels, "test"))
        except Exception:
            pass  # a test frame that does not fit the model is not this model's test data

    requirements = _requirements(session, info)
    _refresh_imported(session)
    what = f"model '{reg_name}'"
    started = time.perf_counter()
    with tracking_call(session, f"logging {what}", what):
        logged = _log_model(session, estimator, info, sample, live_pred, requirements, reg_name)
    artifact_hashes = _artifact_hashes(session, logged.model_id)

    from nb2prod.exceptions import RoundTripError

    try:
        trip = models_mod.roundtrip_check(
            logged.model_uri,
            session.settings.tracking_uri,
            sample,
            live_pred,
            live_proba,
            variable=label,
            artifact_sha256=artifact_hashes,
        )
    except RoundTripError:
        with contextlib.suppress(Exception):
            session.client.set_logged_model_tags(logged.model_id, {"nb2prod.roundtrip": "failed"})
        raise

    with tracking_call(session, f"recording metrics of {what}", f"metrics and registration of {what}"):
        for key, value in metrics.items():
            session.client.log_metric(session.run_id, key, value, model_id=logged.model_id)
        session.client.set_logged_model_tags(
            logged.model_id, {"nb2prod.roundtrip": "passed", TAG_ARTIFACT_SHA256: json.dumps(artifact_hashes)}
        )
        tracking_json = {
            "name": reg_name,
            "model_id": logged.model_id,
            "info": info.to_dict(),
            "data_digests": digests,
            "artifact_sha256": artifact_hashes,
            "metrics": metrics,
            "requirements": requirements,
            "log_seconds": round(time.perf_counter() - started, 3),
        }
        from nb2prod.tracking import client as tracking

        tracking.log_json(session.client, session.run_id, tracking_json, f"models/{reg_name}.json")
    registry_tags = _registry_tags(session, logged.model_id, digests, artifact_hashes, info)
    deferred = os.environ.get(DEFER_ENV, "").strip().lower() in ("1", "true", "yes")
    with tracking_call(session, f"recording {what}", f"the registration of {what}"):
        from nb2prod.tracking import registry

        registry.record_candidate(session.client, session.run_id, reg_name, logged.model_uri, registry_tags)
        if deferred:
            version = None
        else:
            version = registry.register(
                session.client, session.run_id, reg_name, logged.model_uri, registry_tags
            )
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
    )
    session.models.append(record)
    return record


def tracking_call(session: Session, what: str, not_recorded: str) -> Any:
    from nb2prod.tracking import client as tracking

    return tracking.store_call(session.settings, what=what, not_recorded=not_recorded)


def _check_model_name(name: str) -> None:
    bad = [ch for ch in name if not (ch.isalnum() or ch in "-_.")]
    if not name or bad:
        raise ModelError(
            f"model name {name!r} is not allowed",
            hint="use letters, digits, '-', '_' or '.', e.g. --name churn-model",
        )


def _metrics(estimator: Any, info: ModelInfo, X: Any, y: Any, prefix: str) -> dict[str, float]:
    if y is None:
        return {}
    import numpy as np
    from sklearn import metrics as skm

    pred = estimator.predict(X)
    out: dict[str, float] = {}
    if info.is_classifier:
        out[f"{prefix}_accuracy"] = float(skm.accuracy_score(y, pred))
        out[f"{prefix}_f1_macro"] = float(skm.f1_score(y, pred, average="macro"))
        if info.has_proba and info.classes is not None and len(info.classes) == 2:
            proba = estimator.predict_proba(X)[:, 1]
            out[f"{prefix}_roc_auc"] = float(skm.roc_auc_score(y, proba))
            out[f"{prefix}_log_loss"] = float(skm.log_loss(y, np.clip(proba, 1e-15, 1 - 1e-15)))
    else:
        out[f"{prefix}_r2"] = float(skm.r2_score(y, pred))
        out[f"{prefix}_mae"] = float(skm.mean_absolute_error(y, pred))
        out[f"{prefix}_rmse"] = float(np.sqrt(skm.mean_squared_error(y, pred)))
    return out


def _requirements(session: Session, info: ModelInfo) -> list[str]:
    from nb2prod.capture.environment import imported_distributions

    modules = _user_modules(session.shell) | {info.class_name.split(".")[0], "numpy", "pandas"}
    if info.flavor == "sklearn":
        modules |= {"sklearn", "skops", "scipy"}
    pins = imported_distributions(modules)
    pins.pop("nb2prod", None)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _refresh_imported(session: Session) -> None:
    """Re-record the notebook's imports: cells run since ``start`` may have imported more."""
    from dataclasses import replace

    from nb2prod.capture.environment import imported_distributions, requirements_txt
    from nb2prod.tracking import client as tracking

    env = session.environment
    imported = dict(env.imported) | imported_distributions(_user_modules(session.shell))
    imported.pop("nb2prod", None)
    if imported == env.imported:
        return
    session.environment = replace(env, imported=dict(sorted(imported.items())))
    with tracking_call(session, "updating the environment record", "the notebook's latest imports"):
        tracking.log_json(
            session.client, session.run_id, session.environment.to_dict(), tracking.ENVIRONMENT_JSON
        )
        session.client.log_text(
            session.run_id, requirements_txt(session.environment), tracking.REQUIREMENTS_TXT
        )


@dataclass(frozen=True)
class _Logged:
    model_id: str
    model_uri: str


def _log_model(
    session: Session,
    estimator: Any,
    info: ModelInfo,
    sample: Any,
    predictions: Any,
    requirements: list[str],
    name: str,
) -> _Logged:
    import mlflow
    from mlflow.models import infer_signature

    _bind_fluent_run(session.run_id)
    example = sample.head(5) if hasattr(sample, "head") else sample[:5]
    signature = infer_signature(sample, predictions)
    common: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "input_example": example,
        "pip_requirements": requirements,
        "params": info.params or None,
        "tags": {TAG_FLAVOR: info.flavor, TAG_RUN_ID: session.run_id},
    }
    if info.flavor == "sklearn":
        result = mlflow.sklearn.log_model(
            estimator, serialization_format="skops", skops_trusted_types=info.trusted_types, **common
        )
    elif info.flavor == "xgboost":
        result = mlflow.xgboost.log_model(estimator, **common)
    elif info.flavor == "lightgbm":
        result = mlflow.lightgbm.log_model(estimator, **common)
    else:
        from nb2prod.capture.pyfunc import wrap

        result = mlflow.pyfunc.log_model(python_model=wrap(estimator), **common)
    return _Logged(model_id=result.model_id, model_uri=f"models:/{result.model_id}")


def _artifact_hashes(session: Session, model_id: str) -> dict[str, str]:
    import tempfile

    import mlflow

    from nb2prod.serving.integrity import sha256_tree

    with (
        tracking_call(session, "hashing the saved model", "the artifact hashes"),
        tempfile.TemporaryDirectory(prefix="nb2prod-artifacts-") as tmp,
    ):
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model_id}", dst_path=tmp, tracking_uri=session.settings.tracking_uri
        )
        return sha256_tree(Path(local))


def _registry_tags(
    session: Session,
    model_id: str,
    digests: dict[str, str],
    artifact_hashes: dict[str, str],
    info: ModelInfo,
) -> dict[str, str]:
    from nb2prod.tracking import client as tracking

    env = session.environment
    tags = {
        TAG_RUN_ID: session.run_id,
        TAG_MODEL_ID: model_id,
        TAG_FLAVOR: info.flavor,
        tracking.TAG_ENV_DIGEST: env.digest,
        TAG_ARTIFACT_SHA256: json.dumps(artifact_hashes, sort_keys=True),
        "nb2prod.class": info.class_name,
    }
    for key, value in digests.items():
        tags[f"{TAG_DATA_PREFIX}{key.replace(':', '.')}.digest"] = value
    if env.notebook is not None:
        tags[tracking.TAG_NOTEBOOK_DIGEST] = env.notebook.code_digest
        tags[tracking.TAG_NOTEBOOK] = _notebook_key(env)
    if env.git is not None and env.git.commit:
        tags[tracking.TAG_GIT_COMMIT] = env.git.commit
    return tags


def status() -> StatusReport:
    """Everything the open session has recorded."""
    from nb2prod.tracking import client as tracking

    session = current()
    return StatusReport(
        run_id=session.run_id,
        experiment=session.experiment,
        tracking_uri=tracking.redact_uri(session.settings.tracking_uri),
        environment=session.environment,
        previous_run_id=session.previous_run_id,
        diff=session.diff,
        datasets=list(session.datasets.values()),
        models=list(session.models),
        not_recorded=list(session.not_recorded),
    )


def note_not_recorded(error: StoreError) -> None:
    """Count a capture the store refused, so ``status`` shows it (nothing lost silently)."""
    if _current is not None:
        _current.not_recorded.append(error.not_recorded)
