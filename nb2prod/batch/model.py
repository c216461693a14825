"""The model a batch scores with: from the registry (verified like an export) or from a built Bento.

Either way it ends as a :class:`BatchModel`: the typed manifest the service would read
(input contract, drift reference, model description) and the model object the service's
own loader (:func:`nb2prod.serving.loading.load_model`) gave after checking every file's
sha256 against the capture's record.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2prod.config import Settings
from nb2prod.exceptions import Nb2ProdError
from nb2prod.serving.manifest import Manifest, ModelInfo
from nb2prod.serving.redact import redact_text, redact_uri

__all__ = ["BatchModel", "from_bento", "from_registry", "load"]


class ScoreError(Nb2ProdError):
    """A batch cannot be scored as asked (bad paths, columns that cannot match, no model)."""


@dataclass
class BatchModel:
    """A verified, loaded model version and the contract it is served under.

    Attributes:
        manifest: The contract, drift reference and model description (as a Bento carries them).
        model: The deserialised estimator.
        version: The registered version scoring.
        source: Where it came from (``models:/NAME/VERSION`` or the Bento tag).
    """

    manifest: Manifest
    model: Any
    version: str
    source: str

    @property
    def info(self) -> ModelInfo:
        return self.manifest.carried()[self.version]

    @property
    def classes(self) -> list[Any] | None:
        classes = getattr(self.model, "classes_", None)
        return [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None


def _load(path: Path, info: ModelInfo, trusted: list[str], what: str) -> Any:
    from nb2prod.exceptions import ModelIntegrityError
    from nb2prod.serving.loading import IntegrityError, load_model

    try:
        return load_model(path, info, trusted)
    except IntegrityError as exc:
        raise ModelIntegrityError(
            f"{what}: {exc}", hint="the model files changed after capture: re-capture or re-export it"
        ) from None


def from_registry(ref: str, settings: Settings) -> BatchModel:
    """``NAME[@alias|/version]`` from the registry, through the export's verified fetch; ``NAME``
    alone is ``NAME@champion``, the version production answers with (not the newest registered
    one, which may be a candidate that ``retrain`` refused).

    Raises:
        ExportError: no such model, alias or version; no input contract.
        ScoreError: ``NAME`` alone and the model has no champion.
        ModelIntegrityError: a file differs from the capture's record.
    """
    from nb2prod.export import manifest as records
    from nb2prod.export.builder import parse_ref
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import names, registry

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name, alias, version = parse_ref(ref)
    client = tracking.client(settings)
    if alias is None and version is None:
        mv = _champion(client, name)
        alias = registry.CHAMPION
    else:
        mv = records.resolve(client, name, alias, version)
    with tempfile.TemporaryDirectory(prefix="nb2prod-score-") as tmp:
        main = records.fetch(client, settings, name, mv, Path(tmp))
        found = records.contract(client, main)
        environment = tracking.load_json_artifact(client, main.verified.run_id, names.ENVIRONMENT_JSON) or {}
        manifest = records.build_manifest(
            alias=alias,
            main=main,
            carried=[main],
            fallback=None,
            found=found,
            environment=environment,
            serving=records.serving_options(None, None),
        )
        model = _load(main.files, main.info(), list(manifest.trusted_prefixes), f"{name}/{main.version}")
    return BatchModel(
        manifest=manifest,
        model=model,
        version=main.version,
        source=f"models:/{name}@{alias}" if alias else f"models:/{name}/{main.version}",
    )


def _champion(client: Any, name: str) -> Any:
    """The ``ModelVersion`` of ``name@champion``; a clear error when there is none."""
    from nb2prod.exceptions import ExportError
    from nb2prod.export import manifest as records
    from nb2prod.tracking import registry

    try:
        return records.resolve(client, name, registry.CHAMPION, None)
    except ExportError:
        newest = records.resolve(client, name, None, None)  # raises when no version is registered
        raise ScoreError(
            f"{name} has no champion: `nb2prod score {name}` scores with {name}@champion, the version "
            "production answers with",
            hint=f"name the version (nb2prod score {name}/{newest.version} ...), or promote one: "
            f"nb2prod promote {name} VERSION",
        ) from None


def from_bento(name: str, settings: Settings, store: str | None = None) -> BatchModel:
    """The model the newest Bento of ``name`` answers with, checked as the service does: the
    version its services were switched to (``promote``, ``rollback``: the control table of the
    prediction store ``store``, default the service's own) when the Bento carries it, else its
    exported version.

    Raises:
        ExportError: no Bento of ``name`` in this project.
        ScoreError: the Bento carries no manifest, or not its model's files; the store is unreadable.
        ModelIntegrityError: a file differs from the capture's record.
    """
    from nb2prod.export.bento_store import MODELS, bento_name, latest_bento, manifest_path
    from nb2prod.export.builder import parse_ref
    from nb2prod.serving.manifest import ManifestError
    from nb2prod.serving.store import prediction_store

    model_name, alias, version = parse_ref(name)
    if alias or version:
        raise ScoreError(
            f"--bento scores the newest Bento of a model, not {name!r}",
            hint=f"give the name alone (--bento {model_name}), or drop --bento to score {name} from the registry",
        )
    home = settings.bentoml_home
    tag = latest_bento(settings, model_name)
    try:
        manifest = Manifest.load(manifest_path(home, tag))
    except (OSError, ManifestError) as exc:
        raise ScoreError(
            f"the Bento {tag} has no readable nb2prod manifest: {exc}",
            hint=f"re-export: nb2prod export {model_name}",
        ) from None
    version = manifest.answering_version(_control(store or prediction_store(model_name, home), model_name))
    info = manifest.carried()[version]
    model_tag = info.bento_model_tag or ""  # carried() names each version's BentoML model
    folder = home / MODELS / bento_name(model_name) / model_tag.split(":", 1)[-1]
    if not model_tag or not folder.is_dir():
        raise ScoreError(
            f"the Bento {tag} names model {model_tag or '(none)'}, which is not in {home / MODELS}",
            hint=f"re-export: nb2prod export {model_name}",
        )
    model = _load(folder, info, list(manifest.trusted_prefixes), f"Bento {tag}")
    switched = (
        ""
        if version == manifest.model_version
        else f", active since a switch (exported with v{manifest.model_version})"
    )
    return BatchModel(manifest=manifest, model=model, version=version, source=f"{tag}{switched}")


def _control(location: str, name: str) -> dict[str, tuple[Any, float]]:
    """The control table the services of ``name`` follow ({} when none was written yet)."""
    from nb2prod.serving.store import Store, is_sqlite_file, store_path

    if is_sqlite_file(location) and not store_path(location).is_file():
        return {}
    try:
        handle = Store(location, readonly=is_sqlite_file(location))
        try:
            return handle.control()
        finally:
            handle.close()
    except Exception as exc:
        raise ScoreError(
            f"cannot read which version the services of {name} answer with (the control table of "
            f"{redact_uri(location)}: {redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})",
            hint="check that the store is reachable (--store), or name a registered version and drop --bento",
        ) from None


def load(ref: str, settings: Settings, *, bento: bool = False, store: str | None = None) -> BatchModel:
    """The model of ``ref``: from the newest Bento when ``bento`` (following the control table of
    ``store``), else from the registry."""
    return from_bento(ref, settings, store) if bento else from_registry(ref, settings)
