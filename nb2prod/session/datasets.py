"""``data``: record a dataset in the capture session (digest, schema, profile, an MLflow input),
and keep the rows of test and reference frames as holdouts for later runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.exceptions import DataError, ModelError
from nb2prod.session import state
from nb2prod.tracking import names

if TYPE_CHECKING:
    from nb2prod.capture.data import DatasetRecord

ROLES = ("train", "test", "reference", "other")
HOLDOUT_ROLES = ("test", "reference")
HOLDOUT_MAX_MB_ENV = "NB2PROD_HOLDOUT_MAX_MB"
HOLDOUT_MAX_MB_DEFAULT = "50"


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

    session = state.current()
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


def _log_holdout(session: state.Session, record: DatasetRecord, frame: Any) -> None:
    """Keep a test/reference frame as ``datasets/NAME.parquet``, so later runs and challengers
    can be scored on exactly these rows (``nb2prod retrain``, ``nb2prod reproduce``).

    Frames above ``NB2PROD_HOLDOUT_MAX_MB`` (default 50) are described but not stored.
    """
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return
    limit = float(os.environ.get(HOLDOUT_MAX_MB_ENV, HOLDOUT_MAX_MB_DEFAULT))
    if frame.memory_usage(deep=True).sum() > limit * 1e6:
        return
    what = f"holdout rows of '{record.name}'"
    with tempfile.TemporaryDirectory(prefix="nb2prod-holdout-") as tmp:
        file = Path(tmp) / Path(names.dataset_rows(record.name)).name
        try:
            frame.to_parquet(file)
        except Exception:
            return  # a frame parquet cannot hold (mixed object columns) is described, not stored
        with state.tracking_call(session, f"logging {what}", what):
            session.client.log_artifact(session.run_id, str(file), names.DATASETS_DIR)


def _log_dataset(session: state.Session, record: DatasetRecord) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from nb2prod.tracking import client as tracking

    hex32 = mlflow_digest(record)
    if record.path:
        source_type, source = "local", json.dumps({"uri": str(record.path)})
    else:
        source_type = "code"
        key = state.notebook_key(session.environment)
        source = json.dumps({"tags": {names.TAG_SOURCE_NAME: key}})
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
    tags = [InputTag(MLFLOW_DATASET_CONTEXT, record.role)]
    what = f"dataset '{record.name}'"
    with tracking.store_call(session.settings, what=f"logging {what}", not_recorded=what):
        session.client.log_inputs(session.run_id, datasets=[DatasetInput(dataset, tags=tags)])
        session.client.set_tag(session.run_id, names.data_digest_tag(record.name), record.digest)
        tracking.log_json(session.client, session.run_id, record.to_dict(), names.dataset_record(record.name))


def mlflow_digest(record: DatasetRecord) -> str:
    """The digest MLflow holds for a dataset (32 hex characters: its field has room for 36)."""
    return record.digest.split(":", 1)[-1][:32]


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


def training_data(session: state.Session, variable: str) -> tuple[Any, Any, str]:
    """X, y and the dataset name of the last frame tracked with role ``train``.

    Raises:
        ModelError: no training frame was tracked.
    """
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


def labelled_test_data(session: state.Session) -> tuple[Any, Any] | None:
    """Features and labels of the last frame tracked with role ``test`` and a target, if any."""
    test = [
        r for r in session.datasets.values() if r.role == "test" and r.target and r.name in session.frames
    ]
    if not test:
        return None
    frame = session.frames[test[-1].name]
    return frame.drop(columns=[test[-1].target]), frame[test[-1].target]
