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
    """``NAME[@alias|/version]`` from the registry, through the export's verified fetch.

    Raises:
        ExportError: no such model, alias or version; no input contract.
        ModelIntegrityError: a file differs from the capture's record.
    """
    from nb2prod.export import manifest as records
    from nb2prod.export.builder import parse_ref
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import names

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    name, alias, version = parse_ref(ref)
    client = tracking.client(settings)
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
        manifest=manifest, model=model, version=main.version, source=f"models:/{name}/{main.version}"
    )


def from_bento(name: str, settings: Settings) -> BatchModel:
    """The model the newest Bento of ``name`` serves (its exported version), checked as the service does.

    Raises:
        ExportError: no Bento of ``name`` in this project.
        ScoreError: the Bento carries no manifest, or not its model's files.
        ModelIntegrityError: a file differs from the capture's record.
    """
    from nb2prod.export.bento_store import MODELS, bento_name, latest_bento, manifest_path
    from nb2prod.export.builder import parse_ref
    from nb2prod.serving.manifest import ManifestError

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
    info = manifest.carried()[manifest.model_version]
    model_tag = info.bento_model_tag or manifest.bento_model_tag or ""
    folder = home / MODELS / bento_name(model_name) / model_tag.split(":", 1)[-1]
    if not model_tag or not folder.is_dir():
        raise ScoreError(
            f"the Bento {tag} names model {model_tag or '(none)'}, which is not in {home / MODELS}",
            hint=f"re-export: nb2prod export {model_name}",
        )
    model = _load(folder, info, list(manifest.trusted_prefixes), f"Bento {tag}")
    return BatchModel(manifest=manifest, model=model, version=manifest.model_version, source=tag)


def load(ref: str, settings: Settings, *, bento: bool = False) -> BatchModel:
    """The model of ``ref``: from the newest Bento when ``bento``, else from the registry."""
    return from_bento(ref, settings) if bento else from_registry(ref, settings)
