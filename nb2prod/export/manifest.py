"""The manifest of an export, built from what the registry and the capture recorded.

Resolves ``NAME``/``NAME@alias``/``NAME/VERSION`` and the versions carried beside it,
fetches each one's files through the one verified-model path
(:func:`nb2prod.tracking.artifacts.fetch_verified`), reads the training dataset's
schema and profile (the input contract and the drift reference), and fills the typed
:class:`~nb2prod.serving.manifest.Manifest` the service reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings
from nb2prod.exceptions import ExportError
from nb2prod.export.bento_store import bento_name
from nb2prod.serving.loading import MODEL_SUBDIR
from nb2prod.serving.manifest import (
    Canary,
    Column,
    Manifest,
    ModelInfo,
    Profile,
    Provenance,
    ServingOptions,
    Target,
)
from nb2prod.serving.redact import redact_text
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.tracking.artifacts import VerifiedModel

# A model record's ``data_digests`` keys tracked datasets as ``dataset:NAME``.
DATASET_KEY = names.DATASET_KEY_PREFIX


def resolve(client: MlflowClient, name: str, alias: str | None, version: str | None) -> Any:
    """The registered ``ModelVersion`` a reference names (the newest when it names none).

    Raises:
        ExportError: no such model, alias or version.
    """
    from mlflow.exceptions import MlflowException

    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if version:
            return client.get_model_version(name, version)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        what = f"{name}@{alias}" if alias else f"{name}/{version}" if version else name
        # not "no such version": say what the store said (a server away, a locked file)
        detail = (
            ""
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST"
            else f": {redact_text(str(exc).splitlines()[0][:200])}"
        )
        raise ExportError(
            f"no registered model version {what} ({exc.error_code}{detail})",
            hint=(
                f"set it with: nb2prod promote {name} VERSION (the first version registered from a "
                "notebook becomes @champion); register one with %nb2prod model"
                if alias
                else "see its versions in the MLflow UI; register one with %nb2prod model"
            ),
        ) from None
    if not versions:
        raise ExportError(
            f"no registered model named {name!r}", hint="register one with %nb2prod model EST --name NAME"
        )
    return max(versions, key=lambda mv: int(mv.version))


def companions(
    client: MlflowClient, name: str, primary: str, alias: str | None, extra: Sequence[str]
) -> tuple[list[str], str | None]:
    """Versions the Bento carries beside ``primary``, and which one is the fallback.

    The fallback is the version the champion replaced (the alias history), so a rollback
    and the answer-from-previous fallback need no rebuild; the ``challenger`` alias rides
    along for a canary; ``extra`` are asked for by name.
    """
    from nb2prod.tracking import registry

    fallback = registry.replaced_version(client, name, primary, alias or registry.CHAMPION)
    out: list[str] = []
    for version in (fallback, registry.alias_version(client, name, registry.CHALLENGER), *extra):
        if version and str(version) != primary and str(version) not in out:
            out.append(str(version))
    return out, fallback


@dataclass
class Carried:
    """One registered version the Bento carries: verified files, copied for the BentoML model."""

    verified: VerifiedModel
    files: Path
    model_tag: str

    @property
    def version(self) -> str:
        return self.verified.version

    @property
    def feature_names(self) -> list[str] | None:
        return self.verified.info.get("feature_names")

    def info(self) -> ModelInfo:
        """The manifest's description of this model (its ``models`` entry)."""
        info = self.verified.info
        return ModelInfo(
            flavor=info.get("flavor"),
            class_name=info.get("class_name"),
            is_classifier=bool(info.get("is_classifier")),
            has_proba=bool(info.get("has_proba")),
            classes=info.get("classes"),
            feature_names=info.get("feature_names"),
            trusted_types=info.get("trusted_types") or [],
            artifact_sha256=self.verified.recorded,
            bento_model_tag=self.model_tag,
            run_id=self.verified.run_id,
            calibration=self.verified.record.get(names.MODEL_CALIBRATION) or None,
        )


def fetch(client: MlflowClient, settings: Settings, name: str, mv: Any, tmpdir: Path) -> Carried:
    """Download ``mv``'s model files, checked against the capture's record, for the Bento.

    Raises:
        ModelIntegrityError: no run, no recorded hashes, or a file that differs from capture.
    """
    from nb2prod.tracking.artifacts import fetch_verified

    verified = fetch_verified(client, settings.tracking_uri, name, mv, tmpdir / f"download-{mv.version}")
    files = tmpdir / f"model-{verified.version}"
    for rel in verified.recorded:
        dst = files / MODEL_SUBDIR / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(verified.local / rel, dst)
    model_hash = hashlib.sha256(json.dumps(verified.recorded, sort_keys=True).encode()).hexdigest()[:12]
    return Carried(
        verified=verified, files=files, model_tag=f"{bento_name(name)}:v{verified.version}-{model_hash}"
    )


@dataclass
class Contract:
    """The input contract and drift reference of a model, from its training dataset.

    Attributes:
        schema: The input columns (the model's features, in its order).
        reference: Profile of each input column.
        target: The labels' name and profile (prediction drift), if tracked.
        dataset: The training dataset's record (None: the contract came from the signature).
    """

    schema: list[Column]
    reference: dict[str, Profile] = field(default_factory=dict)
    target: Target | None = None
    dataset: dict[str, Any] | None = None


def _training_dataset(client: MlflowClient, run_id: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
    from nb2prod.tracking import client as tracking

    datasets = [k.split(":", 1)[1] for k in record.get("data_digests", {}) if k.startswith(DATASET_KEY)]
    found = []
    for ds in datasets:
        data = tracking.load_json_artifact(client, run_id, names.dataset_record(ds))
        if data and data.get("schema"):
            found.append(data)
    train = [d for d in found if d.get("role") == "train"]
    return (train or found or [None])[0]


def _schema_from_signature(folder: Path) -> list[Column]:
    """Fallback contract when no tracked dataset fed the model: the MLflow signature's columns."""
    import yaml

    spec = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    inputs = json.loads((spec.get("signature") or {}).get("inputs") or "[]")
    kinds = {"double": "float", "float": "float", "long": "int", "integer": "int", "boolean": "bool"}
    dtypes = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}
    return [
        Column(
            name=col["name"],
            dtype=dtypes.get(col["type"], ""),
            kind=kinds.get(col["type"], "string"),
            nullable=not col.get("required", True),
            categories=None,
            ordered=False,
        )
        for col in inputs
        if "name" in col
    ]


# A string column is a closed set of categories when the training data shows few distinct
# values, each seen several times (a region, a site, a grade): the service then refuses a
# value it never saw (422 unseen_category), as it does for a pandas categorical. A column
# of many distinct values (names, free text) stays an open string.
MAX_CLOSED_CATEGORIES = 20
MIN_ROWS_PER_CATEGORY = 5


def closed_categories(column: Column, profile: Mapping[str, Any] | None) -> Column:
    """``column`` as a category column when it is a low-cardinality string column.

    The categories are the values the profile saw (every one of them: a column whose
    profile lumps values into ``__other__`` stays a string). The training dtype is kept,
    so the model still receives the strings it was fitted on; the capture's records (and
    their digests) are unchanged: this is the export's reading of them.
    """
    from nb2prod.capture.profile import OTHER

    if column.kind != "string" or not profile:
        return column
    freqs = profile.get("frequencies") or {}
    n_unique = int(profile.get("n_unique") or 0)
    count = int(profile.get("count") or 0)
    values = sorted(k for k in freqs if k != OTHER)
    if (
        not 1 <= n_unique <= MAX_CLOSED_CATEGORIES
        or len(values) != n_unique
        or float(freqs.get(OTHER) or 0.0) > 0.0
        or count < MIN_ROWS_PER_CATEGORY * n_unique
    ):
        return column
    return replace(
        column,
        kind="category",
        categories=values,
        ordered=False,
        extra={**column.extra, "categories_from": "profile"},
    )


def contract(client: MlflowClient, main: Carried) -> Contract:
    """The input contract of ``main``: its training dataset's schema and profile, else its signature.

    Raises:
        ExportError: the dataset lacks a column the model uses, or there is no schema at all.
    """
    verified = main.verified
    dataset = _training_dataset(client, verified.run_id, verified.record)
    if dataset:
        target_name = dataset.get("target")
        features = main.feature_names or [c["name"] for c in dataset["schema"] if c["name"] != target_name]
        by_name = {c["name"]: c for c in dataset["schema"]}
        missing = [f for f in features if f not in by_name]
        if missing:
            raise ExportError(
                f"the training dataset {dataset['name']!r} has no column {missing[0]!r} the model uses",
                hint="track the frame the model was fitted on with %nb2prod data DF --role train",
            )
        profile = dataset.get("profile") or {}
        found = Contract(
            schema=[closed_categories(Column.from_dict(by_name[f]), profile.get(f)) for f in features],
            reference={f: profile[f] for f in features if f in profile},
            target=Target(name=target_name, profile=profile[target_name]) if target_name in profile else None,
            dataset=dataset,
        )
    else:
        found = Contract(schema=_schema_from_signature(verified.local))
    if not found.schema:
        raise ExportError(
            f"no input schema for {verified.name}/{verified.version}: no tracked training dataset and no signature",
            hint="track the training frame with %nb2prod data DF --role train before %nb2prod model",
        )
    return found


def serving_options(serving: Mapping[str, Any] | None, canary: tuple[str, float] | None) -> ServingOptions:
    """The service's options: the defaults, then ``serving``, and the canary it starts with.

    Raises:
        ExportError: an option that does not exist.
    """
    allowed = ServingOptions.option_names()
    unknown = set(serving or {}) - set(allowed)
    if unknown:
        raise ExportError(f"unknown serving options {sorted(unknown)}", hint=f"use {allowed}")
    return ServingOptions(
        **{**ServingOptions().defaults(), **(serving or {})},
        canary=Canary(version=str(canary[0]), percent=float(canary[1])) if canary else None,
    )


def build_manifest(
    *,
    alias: str | None,
    main: Carried,
    carried: Sequence[Carried],
    fallback: str | None,
    found: Contract,
    environment: Mapping[str, Any],
    serving: ServingOptions,
) -> Manifest:
    """The manifest of a Bento serving ``main`` (and ``carried``), before its build stamps it."""
    from nb2prod.capture.models import TRUSTED_MODULE_PREFIXES

    verified = main.verified
    name, version, tags = verified.name, verified.version, verified.tags
    dataset = found.dataset
    info = main.info()
    versions = {c.version: c.info() for c in carried}
    return Manifest(
        name=name,
        bento_name=bento_name(name),
        model_version=version,
        model_uri=f"models:/{name}/{version}",
        alias=alias,
        bento_model_tag=main.model_tag,
        model=replace(info, bento_model_tag=None, run_id=None),
        models=versions,
        fallback=fallback if fallback in versions else None,
        trusted_prefixes=list(TRUSTED_MODULE_PREFIXES),
        schema=found.schema,
        reference=found.reference,
        reference_rows=dataset.get("n_rows") if dataset else None,
        target=found.target,
        provenance=Provenance(
            run_id=verified.run_id,
            model_id=tags.get(names.TAG_MODEL_ID),
            git_commit=tags.get(names.TAG_GIT_COMMIT),
            env_digest=tags.get(names.TAG_ENV_DIGEST),
            notebook=tags.get(names.TAG_NOTEBOOK),
            notebook_digest=tags.get(names.TAG_NOTEBOOK_DIGEST),
            data_digests=verified.record.get("data_digests")
            or {k: v for k, v in tags.items() if k.startswith(names.TAG_DATA_PREFIX)},
            python_version=environment.get("python_version"),
            dataset=dataset.get("name") if dataset else None,
        ),
        serving=serving,
    )
