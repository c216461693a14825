"""Where ``nb2prod run`` records its own part of a run: through MLflow, or straight into SQLite.

The runner writes little into a run: tags, the parameters, a few artifacts (the source and
executed notebook, its HTML, the pre-flight diff), the final status; it reads the last finished
run of the notebook for the pre-flight check and the run's metrics and tags at the end. Through
MLflow that costs ``import mlflow`` and the SQLAlchemy store's start-up, ~5 CPU s here: more than
a small notebook's cells, and what made ``nb2prod run`` of a notebook that never touches MLflow
~1.2-1.4x plain papermill.

:class:`RunStore` is what the runner needs. :class:`MlflowRunStore` does it with an
``MlflowClient`` (any store: a server, PostgreSQL, another schema). :class:`SqliteRunStore`
does it with one ``sqlite3`` transaction per write, for the default case only: a local SQLite
store whose schema is the revision the SQL below was written against, an existing active
experiment, and artifacts on the local disk. It writes the rows and files MLflow's
``SqlAlchemyStore`` and ``LocalArtifactRepository`` write for the same calls (checked by
``tests/tracking/test_runstore.py`` against MLflow itself); any other store, schema revision or
artifact location gets :class:`MlflowRunStore`. This module is the one place nb2prod writes
MLflow's tables itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from nb2prod.config import Settings
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

# The alembic revision of MLflow 3.17's SQLite schema, the one the SQL here mirrors. Another
# revision (an older store, a newer MLflow) takes the MLflow path until the SQL is checked again.
SCHEMA_REVISION = "dc11669786a5"
_TIMEOUT = 30.0  # seconds to wait for another writer (the kernel writes to the same run)
_TAG_MAX = 8000  # MLflow's limits on a tag's and a parameter's value
_PARAM_MAX = 6000


class RunStore(Protocol):
    """What the runner reads and writes; every method may raise the store's own errors."""

    experiment_id: str

    def create_run(self, tags: Mapping[str, str]) -> str: ...

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None: ...

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None: ...

    def log_file(self, run_id: str, file: Path, artifact_file: str) -> None: ...

    def has_artifact(self, run_id: str, artifact_file: str) -> bool: ...

    def has_artifacts_under(self, run_id: str, folder: str) -> bool: ...

    def load_json(self, run_id: str, artifact_file: str) -> Any | None: ...

    def last_finished_run(self, notebook_key: str) -> str | None: ...

    def terminate(self, run_id: str, status: str) -> None: ...

    def outcome(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]: ...


def open_run_store(settings: Settings, experiment: str) -> RunStore:
    """The runner's store for ``experiment``: the SQLite fast path when it applies, else MLflow.

    Only the MLflow path imports mlflow; it creates the experiment when it does not exist.
    Store failures are the store's own errors (call it inside ``tracking.store_call``).
    """
    fast = SqliteRunStore.open(settings, experiment)
    if fast is not None:
        return fast
    from nb2prod.tracking import client as tracking

    mlflow_client = tracking.client(settings)
    return MlflowRunStore(mlflow_client, tracking.ensure_experiment(settings, mlflow_client, experiment))


def log_json(store: RunStore, run_id: str, data: Any, artifact_file: str) -> None:
    """A JSON artifact written like :func:`nb2prod.tracking.log_json` (sorted keys, indented)."""
    store.log_text(run_id, json.dumps(data, indent=2, sort_keys=True, default=str), artifact_file)


class MlflowRunStore:
    """:class:`RunStore` over an ``MlflowClient``: any tracking store."""

    def __init__(self, client: MlflowClient, experiment_id: str) -> None:
        self.client = client
        self.experiment_id = experiment_id

    def create_run(self, tags: Mapping[str, str]) -> str:
        return str(self.client.create_run(self.experiment_id, tags=dict(tags)).info.run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_file(self, run_id: str, file: Path, artifact_file: str) -> None:
        import tempfile

        # log_artifact keeps the file's own name: copy it under the name it must have.
        with tempfile.TemporaryDirectory(prefix="nb2prod-artifact-") as tmp:
            copy = Path(tmp) / Path(artifact_file).name
            shutil.copyfile(file, copy)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(run_id, str(copy), artifact_path=None if parent == "." else parent)

    def has_artifact(self, run_id: str, artifact_file: str) -> bool:
        parent = str(Path(artifact_file).parent)
        listed = self.client.list_artifacts(run_id, None if parent == "." else parent)
        return artifact_file in {item.path for item in listed}

    def has_artifacts_under(self, run_id: str, folder: str) -> bool:
        return bool(self.client.list_artifacts(run_id, folder))

    def load_json(self, run_id: str, artifact_file: str) -> Any | None:
        from nb2prod.tracking import client as tracking

        return tracking.load_json_artifact(self.client, run_id, artifact_file)

    def last_finished_run(self, notebook_key: str) -> str | None:
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return None
        escaped = notebook_key.replace("'", "\\'")
        runs = self.client.search_runs(
            experiments,
            filter_string=f"tags.`{names.TAG_NOTEBOOK}` = '{escaped}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def terminate(self, run_id: str, status: str) -> None:
        # against a tracking server MLflow prints "View run ... at: URL" to stdout here: the
        # runner's stdout is its own report (retrain's decision comes first), so not there
        with _env(_NO_RUN_LINKS, "true"):
            self.client.set_terminated(run_id, status=status)

    def outcome(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
        data = self.client.get_run(run_id).data
        return dict(data.metrics), dict(data.tags)


_NO_RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """``os.environ[name] = value`` for the block; what was there before afterwards."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def local_path(uri: str) -> Path | None:
    """The folder of a ``file:`` URI or plain path; None for any other scheme (s3:, mlflow-artifacts:)."""
    from urllib.request import url2pathname  # http.client and email with it: not on import

    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(url2pathname(unquote(parsed.path)))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):  # C:\... on Windows
        return Path(uri)
    return None


class SqliteRunStore:
    """:class:`RunStore` writing a local SQLite store's tables and artifact folders itself.

    Get one with :meth:`open`, which returns None whenever MLflow's own code must be used.
    """

    def __init__(self, path: Path, experiment_id: str, location: str) -> None:
        self.path = path
        self.experiment_id = experiment_id
        self.location = location.rstrip("/")  # the experiment's artifact location, as MLflow stored it

    @classmethod
    def open(cls, settings: Settings, experiment: str) -> SqliteRunStore | None:
        """The store for ``experiment`` when the fast path applies (see the module doc), else None."""
        uri = settings.tracking_uri
        if not uri.startswith("sqlite:///") or "?" in uri or os.environ.get("MLFLOW_WORKSPACE"):
            return None
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():
            return None  # a new store: MLflow creates its schema
        try:
            with contextlib.closing(sqlite3.connect(str(path), timeout=_TIMEOUT)) as con:
                version = con.execute("SELECT version_num FROM alembic_version").fetchone()
                if version is None or version[0] != SCHEMA_REVISION:
                    return None
                row = con.execute(
                    "SELECT experiment_id, artifact_location FROM experiments"
                    " WHERE name = ? AND workspace = 'default' AND lifecycle_stage = 'active'",
                    (experiment,),
                ).fetchone()
        except sqlite3.Error:
            return None
        if row is None or not row[1] or local_path(str(row[1])) is None:
            return None  # a new or deleted experiment, or artifacts elsewhere: MLflow decides
        return cls(path, str(row[0]), str(row[1]))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(str(self.path), timeout=_TIMEOUT, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _read(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(str(self.path), timeout=_TIMEOUT)) as con:
            return con.execute(sql, args).fetchall()

    @staticmethod
    def _check_active(con: sqlite3.Connection, run_id: str) -> None:
        row = con.execute("SELECT lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        if row is None:
            raise LookupError(f"run {run_id} is not in the store")
        if row[0] != "active":
            raise ValueError(f"run {run_id} is deleted")

    def create_run(self, tags: Mapping[str, str]) -> str:
        """What ``SqlAlchemyStore.create_run`` writes: a ``runs`` row and its tags."""
        run_id = uuid.uuid4().hex
        name = (
            tags.get("mlflow.runName")
            or f"{Path(str(tags.get(names.TAG_SOURCE_NAME, 'run'))).stem}-{run_id[:6]}"
        )
        all_tags = {**tags, "mlflow.runName": name}
        with self._write() as con:
            con.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id,"
                " status, start_time, end_time, source_version, lifecycle_stage, artifact_uri,"
                " experiment_id, deleted_time)"
                " VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, '', 'active', ?, ?, NULL)",
                (
                    run_id,
                    name,
                    all_tags.get("mlflow.user", "unknown"),
                    _now_ms(),
                    f"{self.location}/{run_id}/artifacts",
                    int(self.experiment_id),
                ),
            )
            con.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, str(v)[:_TAG_MAX], run_id) for k, v in all_tags.items()],
            )
        return run_id

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """What ``set_tag`` writes (``session.merge``: insert or replace the value)."""
        if "mlflow.runName" in tags:
            raise ValueError("renaming a run is not supported here")
        with self._write() as con:
            self._check_active(con, run_id)
            con.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)"
                " ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                [(k, str(v)[:_TAG_MAX], run_id) for k, v in tags.items()],
            )

    def log_params(self, run_id: str, params: Mapping[str, str]) -> None:
        """What ``log_batch(params=...)`` writes; like MLflow, a changed value is an error."""
        with self._write() as con:
            self._check_active(con, run_id)
            existing = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)))
            changed = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
            if changed:
                raise ValueError(f"changing param values is not allowed: {changed}")
            con.executemany(
                "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v[:_PARAM_MAX], run_id) for k, v in params.items() if k not in existing],
            )

    def artifact_dir(self, run_id: str) -> Path:
        rows = self._read("SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,))
        if not rows:
            raise LookupError(f"run {run_id} is not in the store")
        folder = local_path(str(rows[0][0]))
        if folder is None:
            raise ValueError(f"run {run_id} keeps its artifacts at {rows[0][0]}, not on this disk")
        return folder

    def _target(self, run_id: str, artifact_file: str) -> Path:
        relative = Path(artifact_file)
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"invalid artifact path {artifact_file!r}")
        target = self.artifact_dir(run_id) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._target(run_id, artifact_file).write_text(text, encoding="utf-8")

    def log_file(self, run_id: str, file: Path, artifact_file: str) -> None:
        shutil.copyfile(file, self._target(run_id, artifact_file))

    def has_artifact(self, run_id: str, artifact_file: str) -> bool:
        return (self.artifact_dir(run_id) / artifact_file).is_file()

    def has_artifacts_under(self, run_id: str, folder: str) -> bool:
        path = self.artifact_dir(run_id) / folder
        return path.is_dir() and any(path.iterdir())

    def load_json(self, run_id: str, artifact_file: str) -> Any | None:
        try:
            return json.loads((self.artifact_dir(run_id) / artifact_file).read_text(encoding="utf-8"))
        except (OSError, ValueError, LookupError):
            return None

    def last_finished_run(self, notebook_key: str) -> str | None:
        """What ``search_runs`` over the active experiments finds first for the notebook's tag."""
        rows = self._read(
            "SELECT r.run_uuid FROM runs r"
            " JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ?"
            " JOIN experiments e ON e.experiment_id = r.experiment_id"
            " WHERE t.value = ? AND r.status = 'FINISHED' AND r.lifecycle_stage = 'active'"
            " AND e.lifecycle_stage = 'active' AND e.workspace = 'default'"
            " ORDER BY r.start_time DESC, r.run_uuid ASC LIMIT 1",
            (names.TAG_NOTEBOOK, notebook_key),
        )
        return str(rows[0][0]) if rows else None

    def terminate(self, run_id: str, status: str) -> None:
        """What ``set_terminated`` writes (``update_run_info``)."""
        if status not in ("FINISHED", "FAILED", "KILLED"):
            raise ValueError(f"not a final run status: {status}")
        with self._write() as con:
            self._check_active(con, run_id)
            con.execute(
                "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?", (status, _now_ms(), run_id)
            )

    def outcome(self, run_id: str) -> tuple[dict[str, float], dict[str, str]]:
        """The run's latest metrics and its tags, as ``get_run(...).data`` gives them."""
        metrics = {
            str(key): math.nan if is_nan else float(value)
            for key, value, is_nan in self._read(
                "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,)
            )
        }
        tags = dict(self._read("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
        return metrics, {str(k): str(v) for k, v in tags.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)
