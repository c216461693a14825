"""The one verified-model fetch: a registered version's files, checked before anything loads them.

Capture records the sha256 of every file of the logged model (the run's artifact
:func:`~nb2prod.tracking.names.artifact_hashes`, named by its digest in the tag
:data:`~nb2prod.tracking.names.TAG_ARTIFACT_SHA256`). Whoever later needs the
files (export, retrain, reproduction, the fresh-process round trip) downloads them
here, and gets them only when every recorded file matches: a changed, missing or
unrecorded file is a :class:`~nb2prod.exceptions.ModelIntegrityError` naming it.
The hashing itself is :mod:`nb2prod.serving.integrity`, the same code the service
runs on its own copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.exceptions import ModelIntegrityError
from nb2prod.serving.integrity import sha256_tree
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "VerifiedModel",
    "check_tree",
    "download_verified",
    "fetch_verified",
    "hashes_digest",
    "recorded_hashes",
    "sha256_tree",
]


@dataclass
class VerifiedModel:
    """One registered version whose downloaded files match its capture record.

    Attributes:
        name: Registered model name.
        version: Registered version (text, as MLflow returns it).
        run_id: The capture run that logged it.
        tags: The model version's tags.
        record: The capture's model record (``models/NAME.json`` of the run), ``{}`` if absent.
        info: The model's description (flavor, class, classes, features, trusted types).
        recorded: sha256 of every saved file, by relative path, as recorded at capture.
        local: The downloaded logged-model folder (the ``MLmodel`` tree).
    """

    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    record: dict[str, Any]
    info: dict[str, Any]
    recorded: dict[str, str]
    local: Path
    source: str = field(default="")


def check_tree(local: Path, recorded: dict[str, str], what: str) -> None:
    """Every recorded file under ``local`` must exist and match.

    Raises:
        ModelIntegrityError: naming the first file that differs or is missing.
    """
    actual = sha256_tree(local)
    changed = [rel for rel, want in sorted(recorded.items()) if actual.get(rel) != want]
    if changed:
        raise ModelIntegrityError(
            f"model file {changed[0]} of {what} differs from what was recorded at capture"
            + (" (missing)" if changed[0] not in actual else ""),
            hint="the artifact was changed after capture; re-capture the model from the notebook",
        )


def download_verified(model_uri: str, recorded: dict[str, str], dst: Path, *, what: str) -> Path:
    """Download ``model_uri`` into ``dst`` and check it against ``recorded``; the local folder."""
    import mlflow.artifacts

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    check_tree(local, recorded, what)
    return local


def hashes_digest(hashes: dict[str, str]) -> str:
    """``sha256:<hex>`` of the hashes' canonical JSON: the one tag that names the hashes artifact."""
    import hashlib

    canonical = json.dumps(dict(sorted(hashes.items())), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def recorded_hashes(
    client: MlflowClient, run_id: str, tags: dict[str, str], record: dict[str, Any], what: str
) -> dict[str, str]:
    """The sha256 of every model file as recorded at capture; ``{}`` when none were recorded.

    Read from the run's artifact :func:`~nb2prod.tracking.names.artifact_hashes`, which must match
    the digest in :data:`~nb2prod.tracking.names.TAG_ARTIFACT_SHA256`; runs of older captures
    carry the JSON in the tag itself; the model record's copy is the last resort.

    Raises:
        ModelIntegrityError: the hashes artifact does not match the digest tag.
    """
    from nb2prod.tracking import client as tracking

    raw = (tags.get(names.TAG_ARTIFACT_SHA256) or "").strip()
    if raw.startswith("{"):  # written before the hashes became an artifact
        try:
            return dict(json.loads(raw))
        except ValueError:
            return {}
    fallback = dict(record.get("artifact_sha256") or {})
    if not raw:
        return fallback
    model_id = tags.get(names.TAG_MODEL_ID) or record.get("model_id")
    stored = (
        tracking.load_json_artifact(client, run_id, names.artifact_hashes(model_id)) if model_id else None
    )
    for candidate in (stored, fallback):
        if isinstance(candidate, dict) and candidate and hashes_digest(candidate) == raw:
            return dict(candidate)
    raise ModelIntegrityError(
        f"the recorded file hashes of {what} do not match their digest ({names.TAG_ARTIFACT_SHA256})",
        hint="the run's integrity record was changed or lost; re-capture the model with %nb2prod model",
    )


def fetch_verified(client: MlflowClient, tracking_uri: str, name: str, mv: Any, dst: Path) -> VerifiedModel:
    """Download registered version ``mv`` of ``name`` into ``dst`` and check every file.

    ``mv`` is a ``ModelVersion`` or a version number. The files come from the logged
    model as the capture hashed it (a registry download rewrites ``registered_model_meta``).

    Raises:
        ModelIntegrityError: no run, no recorded hashes, or a file that differs from capture.
    """
    import mlflow.artifacts

    from nb2prod.tracking import client as tracking

    if not hasattr(mv, "version"):
        mv = client.get_model_version(name, str(mv))
    what = f"{name}/{mv.version}"
    tags = dict(mv.tags)
    run_id = tags.get(names.TAG_RUN_ID) or mv.run_id
    if not run_id:
        raise ModelIntegrityError(f"{what} has no run", hint="register models through nb2prod capture")
    record = tracking.load_json_artifact(client, run_id, names.model_record(name)) or {}
    recorded = recorded_hashes(client, run_id, tags, record, what)
    if not recorded:
        raise ModelIntegrityError(
            f"{what} carries no artifact hashes ({names.TAG_ARTIFACT_SHA256})",
            hint="re-capture the model with %nb2prod model: nb2prod serves only models it can verify",
        )
    info = dict(record.get("info") or {})
    info.setdefault("flavor", tags.get(names.TAG_FLAVOR))
    info.setdefault("class_name", tags.get(names.TAG_CLASS))
    source = f"models:/{tags[names.TAG_MODEL_ID]}" if tags.get(names.TAG_MODEL_ID) else str(mv.source)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri)
    )
    check_tree(local, recorded, what)
    return VerifiedModel(
        name=name,
        version=str(mv.version),
        run_id=run_id,
        tags=tags,
        record=record,
        info=info,
        recorded=recorded,
        local=local,
        source=source,
    )
