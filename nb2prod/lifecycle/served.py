"""The served Bento of a model: its prediction store, its manifest, the versions it carries, its report.

A model is served from the newest Bento built for it in this project. Every other part
of the loop (switches, feedback, retrain on feedback, ``nb2prod monitor``) starts here.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import LifecycleError
from nb2prod.serving.redact import redact_uri

if TYPE_CHECKING:
    from nb2prod.monitoring import MonitorReport
    from nb2prod.serving.manifest import Manifest

__all__ = ["carried_versions", "monitor", "served_manifest", "store_location"]


def store_location(settings: Settings, name: str) -> str:
    """The prediction store ``nb2prod serve NAME`` logs to (``NB2PROD_PREDICTION_STORE`` overrides)."""
    from nb2prod.serving.store import prediction_store

    return prediction_store(name, settings.bentoml_home)


def served_manifest(settings: Settings, name: str) -> tuple[str, Manifest]:
    """The tag and the (typed) manifest of the newest Bento of ``name``.

    Raises:
        ExportError: no Bento of ``name`` was built in this project (the hint says how to build one).
        LifecycleError: the newest Bento carries no nb2prod manifest, or one this version cannot read.
    """
    from nb2prod.export.bento_store import bento_name, latest_bento, manifest_path
    from nb2prod.serving.manifest import Manifest, ManifestError

    tag = latest_bento(settings, name)
    path = manifest_path(settings.bentoml_home, tag)
    if tag.split(":", 1)[0] != bento_name(name) or not path.is_file():
        raise LifecycleError(
            f"the Bento {tag} has no nb2prod manifest", hint=f"re-export: nb2prod export {name}"
        )
    try:
        return tag, Manifest.load(path)
    except ManifestError as exc:
        raise LifecycleError(
            f"the manifest of the Bento {tag} cannot be read: {exc}", hint=f"re-export: nb2prod export {name}"
        ) from exc


def carried_versions(manifest: Manifest) -> list[str]:
    """The model versions a Bento carries (the primary first)."""
    return list(manifest.models) or [manifest.model_version]


def monitor(
    name: str,
    *,
    since: str | None = None,
    until: str | None = None,
    psi_threshold: float | None = None,
    settings: Settings | None = None,
) -> MonitorReport:
    """The drift and quality report of the service of ``name`` (see :mod:`nb2prod.monitoring.report`).

    Raises:
        ExportError: no Bento of ``name`` was built.
        MonitorError: a bad time window or an unreadable store.
    """
    from nb2prod.monitoring.report import build_report, parse_since

    settings = settings or load_settings()
    _, manifest = served_manifest(settings, name)
    now = time.time()
    threshold = psi_threshold if psi_threshold is not None else manifest.serving.psi_threshold
    report = build_report(
        store_location(settings, name),
        manifest.to_dict(),
        since=parse_since(since, now=now) if since else None,
        until=parse_since(until, now=now) if until else None,
        psi_threshold=threshold,
    )
    # the report is printed and written to HTML/JSON: never with the store's password
    return dataclasses.replace(report, store=redact_uri(report.store))
