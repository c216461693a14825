"""The MLflow model registry: register versions, record candidates a runner registers later.

A capture logs a model and records it as a *candidate* of its run
(``registry/NAME.json``). Interactively it is registered at once; under a
runner (``nb2prod run``) registration waits until the whole notebook
succeeded, so a failed run registers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nb2prod import tracking

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATES_DIR = "registry"
TAG_REGISTERED = "nb2prod.registered"


def record_candidate(
    client: MlflowClient, run_id: str, name: str, model_uri: str, tags: dict[str, str]
) -> None:
    """Remember, in the run, a model that is ready to be registered under ``name``."""
    tracking.log_json(
        client, run_id, {"name": name, "model_uri": model_uri, "tags": tags}, f"{CANDIDATES_DIR}/{name}.json"
    )


def register(client: MlflowClient, run_id: str, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name``; returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags)
    client.set_tag(run_id, f"{TAG_REGISTERED}.{name}", str(version.version))
    return str(version.version)


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
        done[name] = existing or register(client, run_id, name, candidate["model_uri"], candidate["tags"])
    return done
