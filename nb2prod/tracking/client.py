"""MLflow runs: the one place that talks to the tracking store.

mlflow is imported inside functions: ``import nb2prod`` must stay light.
Every store call goes through :func:`store_call`, which turns whatever the
store raised (unreachable server, full disk, refused write) into a
:class:`~nb2prod.exceptions.StoreError` that says what was not recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings
from nb2prod.exceptions import Nb2ProdError, StoreError
from nb2prod.serving.redact import redact_text, redact_uri
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Remote stores: fail in seconds, not after MLflow's default minutes of retries.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def _describe_failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if len(first) > 300:
        first = first[:300] + "..."
    return redact_text(f"{type(exc).__name__}: {first}")


@contextlib.contextmanager
def store_call(settings: Settings, *, what: str, not_recorded: str) -> Iterator[None]:
    """Turn any store failure inside the block into a :class:`StoreError`."""
    try:
        yield
    except Nb2ProdError:
        raise
    except Exception as exc:
        raise StoreError(
            f"{what} failed at the tracking store {redact_uri(settings.tracking_uri)} "
            f"({_describe_failure(exc)})",
            not_recorded=not_recorded,
            hint="check that the store is reachable and has space, then run the same command again",
        ) from exc


def client(settings: Settings) -> MlflowClient:
    """An MLflow client on the settings' store, with MLflow's global URI set to match."""
    import mlflow

    if settings.tracking_uri.startswith(("http://", "https://")):
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
    # Progress bars for one small JSON file are noise in a notebook's output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if settings.is_local_store:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def check_reachable(settings: Settings, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when a remote tracking server does not answer."""
    uri = settings.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise StoreError(
            f"the MLflow tracking server {redact_uri(uri)} does not answer ({_describe_failure(exc)})",
            not_recorded="everything of this session (no run was opened)",
            hint="start the server, or unset MLFLOW_TRACKING_URI to use the local SQLite store",
        ) from exc


def ensure_experiment(settings: Settings, mlflow_client: MlflowClient, name: str) -> str:
    """Return the id of experiment ``name``, creating it with artifacts inside the project home."""
    from mlflow.exceptions import MlflowException

    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    location = None
    if settings.is_local_store:
        location = (settings.artifact_root / _safe_dirname(name)).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:
        # Another process created it between our lookup and create.
        again = mlflow_client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def _safe_dirname(name: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return keep or "experiment"


def log_json(mlflow_client: MlflowClient, run_id: str, data: Any, artifact_file: str) -> None:
    """Log a JSON artifact (sorted keys, indented) to a run."""
    mlflow_client.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)


def load_json_artifact(mlflow_client: MlflowClient, run_id: str, artifact_file: str) -> Any | None:
    """Read a JSON artifact of a run, or None when it is not there."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow_client.download_artifacts(run_id, artifact_file, dst_path=tmp)
        except Exception:
            return None
        try:
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None


def previous_run_id(
    mlflow_client: MlflowClient, experiment_id: str, notebook_key: str, exclude: str | None = None
) -> str | None:
    """The latest earlier capture run of the same notebook, if any."""
    escaped = notebook_key.replace("'", "\\'")
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{names.TAG_NOTEBOOK}` = '{escaped}'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        if run.info.run_id != exclude:
            return run.info.run_id
    return None


def load_holdouts(client: MlflowClient, run_id: str) -> list[tuple[dict[str, Any], Any, bool]]:
    """The test and reference frames a run stored (``datasets/NAME.parquet``, see
    ``nb2prod.session.datasets._log_holdout``): each as (dataset record, DataFrame, digest matches the record).

    Test frames come first. A run without stored frames gives an empty list.
    """
    import pandas as pd

    from nb2prod.capture.hashing import digest_object

    try:
        files = {f.path for f in client.list_artifacts(run_id, "datasets")}
    except Exception:
        return []
    found: list[tuple[dict[str, Any], Any, bool]] = []
    for path in sorted(files):
        stem = path[: -len(".json")] if path.endswith(".json") else None
        if stem is None or f"{stem}.parquet" not in files:
            continue
        record = load_json_artifact(client, run_id, path) or {}
        if record.get("role") not in ("test", "reference"):
            continue
        with tempfile.TemporaryDirectory(prefix="nb2prod-holdout-") as tmp:
            frame = pd.read_parquet(client.download_artifacts(run_id, f"{stem}.parquet", tmp))
        found.append((record, frame, digest_object(frame) == record.get("digest")))
    found.sort(key=lambda item: item[0].get("role") != "test")
    return found
