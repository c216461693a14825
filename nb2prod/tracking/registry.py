"""The MLflow model registry: register versions, record candidates a runner registers later.

A capture logs a model and records it as a *candidate* of its run
(``registry/NAME.json``). Interactively it is registered at once; under a
runner (``nb2prod run``) registration waits until the whole notebook
succeeded, so a failed run registers nothing.
"""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nb2prod.tracking import client as tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATES_DIR = "registry"
TAG_REGISTERED = "nb2prod.registered"


def record_candidate(
    client: MlflowClient,
    run_id: str,
    name: str,
    model_uri: str,
    tags: dict[str, str],
    *,
    description: str | None = None,
    model_id: str | None = None,
) -> None:
    """Remember, in the run, a model that is ready to be registered under ``name``."""
    data: dict[str, Any] = {"name": name, "model_uri": model_uri, "tags": tags}
    if description is not None:
        data["description"] = description
    if model_id is not None:
        data["model_id"] = model_id
    tracking.log_json(client, run_id, data, f"{CANDIDATES_DIR}/{name}.json")


@dataclass(frozen=True)
class Registered:
    """A version just created: its number, and whether it became the champion (first version)."""

    version: str
    champion: bool = False


def _model_id_of(model_uri: str) -> str | None:
    """``m-...`` of a ``models:/m-...`` URI (a logged model), else None."""
    rest = model_uri.removeprefix("models:/")
    return rest if rest != model_uri and rest.startswith("m-") and "/" not in rest else None


def register(
    client: MlflowClient,
    run_id: str,
    name: str,
    model_uri: str,
    tags: dict[str, str],
    *,
    description: str | None = None,
    model_id: str | None = None,
    first_champion: bool = False,
) -> Registered:
    """Register ``model_uri`` as a new version of ``name``, linked to its logged model.

    With ``first_champion``, version 1 of a model without a champion becomes ``name@champion``
    (recorded in the alias history), so ``nb2prod export NAME@champion`` works on a new project.
    """
    import json as json_mod

    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    model_id = model_id or _model_id_of(model_uri)
    mv = client.create_model_version(
        name, model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    version = str(mv.version)
    if model_id:
        # What mlflow.register_model does too: the logged model's page lists its versions.
        try:
            logged = client.get_logged_model(model_id)
            listed = json_mod.loads(logged.tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
            listed.append({"name": name, "version": version})
            client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json_mod.dumps(listed)})
        except (MlflowException, ValueError):
            pass
    client.set_tag(run_id, f"{TAG_REGISTERED}.{name}", version)
    champion = False
    if first_champion and version == "1" and alias_version(client, name, CHAMPION) is None:
        move_alias(client, name, CHAMPION, version, reason="first registered version of the model")
        champion = True
    return Registered(version, champion)


def candidates(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """Models a run recorded as ready to register."""
    try:
        files = client.list_artifacts(run_id, CANDIDATES_DIR)
    except Exception:
        return []
    found = []
    for item in files:
        if item.path.endswith(".json"):
            data = tracking.load_json_artifact(client, run_id, item.path)
            if data:
                found.append(data)
    return found


def register_candidates(client: MlflowClient, run_id: str) -> dict[str, str]:
    """Register every candidate of a run not registered yet; returns name -> version."""
    run = client.get_run(run_id)
    done: dict[str, str] = {}
    for candidate in candidates(client, run_id):
        name = candidate["name"]
        existing = run.data.tags.get(f"{TAG_REGISTERED}.{name}")
        done[name] = (
            existing
            or register(
                client,
                run_id,
                name,
                candidate["model_uri"],
                candidate["tags"],
                description=candidate.get("description"),
                model_id=candidate.get("model_id"),
            ).version
        )
    return done


# -- aliases with history ------------------------------------------------------------------------

HISTORY_TAG = "nb2prod.alias_history"
CHAMPION = "champion"
CHALLENGER = "challenger"


@dataclass(frozen=True)
class AliasEvent:
    """One move of an alias: from which version to which, when, by whom and why.

    Kept as registered-model tags ``nb2prod.alias_history.<seq>.<random>`` (MLflow keeps only
    the current target of an alias), so any MLflow client sees the history. The random part
    keeps both events when two moves at once take the same sequence number (a plain
    ``<seq>`` key, as older versions wrote, is read too).
    """

    seq: int
    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    reason: str
    actor: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alias_history(client: MlflowClient, name: str, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded move of ``alias`` (all aliases when None) on model ``name``, oldest first."""
    return history_from_tags(client.get_registered_model(name).tags, alias)


def history_from_tags(tags: dict[str, str] | None, alias: str | None = None) -> list[AliasEvent]:
    """The alias history kept in a registered model's ``tags`` (as :func:`alias_history`), for a
    caller that already has the model (e.g. from ``search_registered_models``)."""
    events = []
    for key, value in (tags or {}).items():
        if not key.startswith(HISTORY_TAG + "."):
            continue
        try:
            data = json.loads(value)
            events.append(AliasEvent(**data))
        except (ValueError, TypeError):
            continue
    events.sort(key=lambda e: (e.seq, e.at))
    return [e for e in events if alias is None or e.alias == alias]


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``name@alias`` points at, or None when the alias is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _set_alias(client: MlflowClient, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Set an alias; two writers at once can collide on the store's unique key: retry, bounded."""
    import time

    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except MlflowException as exc:
            collided = "unique" in str(exc).lower() or "integrity" in str(exc).lower()
            if not collided or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def move_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    version: str | None,
    *,
    reason: str,
    details: dict[str, Any] | None = None,
) -> AliasEvent:
    """Point ``name@alias`` at ``version`` (None: remove the alias) and record the move."""
    current = alias_version(client, name, alias)
    if version is None:
        if current is not None:
            client.delete_registered_model_alias(name, alias)
    else:
        _set_alias(client, name, alias, str(version))
    history = alias_history(client, name)
    event = AliasEvent(
        seq=(history[-1].seq + 1) if history else 1,
        alias=alias,
        from_version=current,
        to_version=None if version is None else str(version),
        at=datetime.now(UTC).isoformat(timespec="seconds"),
        reason=reason,
        actor=f"{getpass.getuser()}@{socket.gethostname()}",
        details=dict(details or {}),
    )
    key = f"{HISTORY_TAG}.{event.seq:06d}.{uuid.uuid4().hex[:8]}"
    client.set_registered_model_tag(name, key, json.dumps(event.to_dict()))
    return event


def replaced_version(client: MlflowClient, name: str, version: str, alias: str = CHAMPION) -> str | None:
    """The version ``alias`` pointed at before it last moved to ``version`` (what a rollback restores)."""
    for event in reversed(alias_history(client, name, alias)):
        if event.to_version == str(version) and event.from_version and event.from_version != str(version):
            return event.from_version
    return None
