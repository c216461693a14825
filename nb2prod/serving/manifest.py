"""The Bento manifest (``nb2prod_manifest.json``): a typed, versioned structure, read and written here.

``nb2prod export`` builds a :class:`Manifest` and writes :meth:`Manifest.to_dict` as JSON
next to ``service.py``; the service, the monitor backend and the loop read it back with
:meth:`Manifest.load` / :meth:`Manifest.from_dict`. The JSON is the one written since the
first export (``format: nb2prod-bento-v1``): ``from_dict(d).to_dict() == d`` for every
manifest an export wrote, so Bentos built before this module keep working.

A manifest of a newer format (``nb2prod-bento-v2``...) or of an unknown one is refused
with :class:`ManifestError`: the service does not guess what a newer nb2prod meant.
Absent keys take their defaults (hand-written manifests in tests, a manifest without
``format`` is read as v1); keys this version does not know are kept as they are.

Column profiles (``reference``, ``target.profile``) stay mappings: they are the capture's
profile records (quantiles, drift bins, frequencies), read by ``drift`` and ``sketch``.

Copied into every Bento with the rest of ``serving/``: it imports nothing from nb2prod.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from .store import CONTROL_ACTIVE, PREDICTION_COLUMN

MANIFEST_FILE = "nb2prod_manifest.json"
FORMAT_PREFIX = "nb2prod-bento-v"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_PREFIX}{FORMAT_VERSION}"
_FORMAT_RE = re.compile(r"^nb2prod-bento-v(\d+)$")

Profile = Mapping[str, Any]


class ManifestError(ValueError):
    """A manifest this runtime cannot read: unknown or newer format, or not a JSON object."""


def _split(
    cls: type, data: Mapping[str, Any], skip: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` as (the keys that are fields of ``cls``, every other key kept verbatim)."""
    names = {f.name for f in fields(cls)} - {"extra", *skip}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names and k not in skip}
    return known, extra


_R = TypeVar("_R", bound="_Record")


class _Record:
    """A flat part of the manifest: its fields, and ``extra`` (keys this version does not know)."""

    extra: dict[str, Any]

    @classmethod
    def from_dict(cls: type[_R], data: Mapping[str, Any]) -> _R:
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)  # type: ignore[call-arg]

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {**values.pop("extra"), **values}


@dataclass(frozen=True)
class Column(_Record):
    """One input column of the service's contract (from the training dataset's schema).

    Attributes:
        name: Column name, as the request sends it.
        kind: ``float``, ``int``, ``bool``, ``category``, ``datetime`` or ``string``.
        dtype: The training frame's pandas dtype (``""`` when unknown).
        nullable: Whether the training data had missing values.
        categories: The categories, for categorical columns.
        ordered: Whether those categories are ordered.
        extra: Other keys of the capture's schema (``min``, ``max``), kept as they are.
    """

    name: str
    kind: str = "string"
    dtype: str = ""
    nullable: bool = False
    categories: list[Any] | None = None
    ordered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo(_Record):
    """One model version the Bento carries, as the capture described it.

    Attributes:
        flavor: MLflow flavor (``sklearn`` is loaded with skops).
        class_name: The estimator's class.
        is_classifier: Whether it predicts classes.
        has_proba: Whether it has ``predict_proba``.
        classes: Its classes (classifiers).
        feature_names: The columns it was fitted on.
        trusted_types: Types trusted by name at capture (beyond the shipped prefixes).
        artifact_sha256: sha256 of every model file, by relative path, recorded at capture.
        bento_model_tag: The BentoML model holding its files (``models`` entries only).
        run_id: The capture run (``models`` entries only).
        calibration: Per-class calibration map of a classifier's probabilities, fitted at
            capture on the tracked test set (``capture/calibration.py``); read by the
            label-free quality estimate of ``nb2prod monitor``. None: not fitted (written
            only when present, so manifests written before it read back unchanged).
        extra: Keys this version does not know, kept as they are.
    """

    flavor: str | None = None
    class_name: str | None = None
    is_classifier: bool = False
    has_proba: bool = False
    classes: list[Any] | None = None
    feature_names: list[str] | None = None
    trusted_types: list[str] = field(default_factory=list)
    artifact_sha256: dict[str, str] = field(default_factory=dict)
    bento_model_tag: str | None = None
    run_id: str | None = None
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        # the top-level ``model`` has neither: they are in its ``models`` entry
        for key in ("bento_model_tag", "run_id", "calibration"):
            if out[key] is None:
                del out[key]
        return out


@dataclass(frozen=True)
class Target(_Record):
    """The training labels: their name and profile (the reference of prediction drift)."""

    name: str | None = None
    profile: Profile = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance(_Record):
    """Where the served model came from: run, logged model, commit, environment, notebook, data."""

    run_id: str | None = None
    model_id: str | None = None
    git_commit: str | None = None
    env_digest: str | None = None
    notebook: str | None = None
    notebook_digest: str | None = None
    data_digests: dict[str, str] = field(default_factory=dict)
    python_version: str | None = None
    dataset: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Canary:
    """The share of rows (``percent``, 0-100] a canary ``version`` answers."""

    version: str
    percent: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Canary:
        return cls(version=str(data["version"]), percent=float(data["percent"]))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class ServingOptions:
    """How the service guards, batches and watches (``nb2prod export`` sets them).

    Attributes:
        max_body_bytes: Largest request body.
        max_rows: Most rows in one request.
        drift_window: Rows of the live drift window.
        psi_threshold: PSI above which a column drifted.
        max_batch_size: BentoML adaptive batching: most rows in a batch.
        max_latency_ms: BentoML adaptive batching: latency budget.
        drift_refresh_s: Seconds between refreshes of the drift gauges.
        canary: The canary split the service starts with.
        durable: Answer a prediction only after its log row is committed (group commit);
            ``$NB2PROD_DURABLE`` overrides it when the service starts. Written to the JSON
            only when true, so manifests written before it read back unchanged.
        extra: Keys this version does not know, kept as they are.
    """

    max_body_bytes: int = 1 << 20
    max_rows: int = 1000
    drift_window: int = 500
    psi_threshold: float = 0.25
    max_batch_size: int = 64
    max_latency_ms: int = 10_000
    drift_refresh_s: float = 15
    canary: Canary | None = None
    durable: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingOptions:
        known, extra = _split(cls, data, skip=("canary",))
        canary = data.get("canary")
        return cls(**known, canary=Canary.from_dict(canary) if canary else None, extra=extra)

    @classmethod
    def option_names(cls) -> list[str]:
        """The options an export may set."""
        return sorted(f.name for f in fields(cls) if f.name not in ("canary", "extra"))

    def defaults(self) -> dict[str, Any]:
        """Every option an export may set, with its value (no canary)."""
        return {name: getattr(self, name) for name in self.option_names()}

    @property
    def control_poll_s(self) -> float:
        """Seconds between two reads of the control table (not an export option)."""
        return float(self.extra.get("control_poll_s", 0.25))

    def to_dict(self) -> dict[str, Any]:
        out = {**self.extra, **self.defaults(), "canary": self.canary.to_dict() if self.canary else None}
        if not self.durable:
            del out["durable"]
        return out


def format_version(fmt: str | None) -> int:
    """The version number of a manifest ``format`` (a manifest without one is v1).

    Raises:
        ManifestError: an unknown format, or one newer than this runtime reads.
    """
    if fmt is None:
        return FORMAT_VERSION
    match = _FORMAT_RE.match(str(fmt))
    if match is None:
        raise ManifestError(f"unknown manifest format {fmt!r}: this runtime reads {FORMAT}")
    version = int(match[1])
    if version > FORMAT_VERSION:
        raise ManifestError(
            f"manifest format {fmt} is newer than this runtime reads ({FORMAT}): "
            "serve it with the nb2prod that exported it, or re-export with this one"
        )
    return version


def _map(cls: Any, value: Any) -> Any:
    return None if value is None else cls.from_dict(value)


@dataclass(frozen=True)
class Manifest:
    """Everything the service knows about what it serves (see the module doc).

    Attributes:
        name: Registered model name.
        bento_name: The Bento's name (lowercase).
        model_version: The exported version (the one active at start).
        model_uri: ``models:/NAME/VERSION``.
        alias: The alias the export named, if any.
        bento_model_tag: The BentoML model of the exported version.
        model: The exported version's description.
        models: Every version carried, by version (the exported one first).
        fallback: The version that answers when the active one raises.
        trusted_prefixes: Module prefixes whose types the loader trusts.
        schema: The input contract, one column each.
        reference: Profile of every input column (the drift reference).
        reference_rows: Rows of the training dataset.
        target: The training labels' name and profile.
        provenance: Where the model came from.
        serving: Serving options.
        exported_at: ISO time of the build (absent in the content hash).
        bento_version: The Bento's version (absent in the content hash).
        format: ``nb2prod-bento-v<N>``.
        extra: Keys this version does not know, kept as they are.
    """

    name: str = ""
    bento_name: str = ""
    model_version: str = ""
    model_uri: str | None = None
    alias: str | None = None
    bento_model_tag: str | None = None
    model: ModelInfo = field(default_factory=ModelInfo)
    models: dict[str, ModelInfo] = field(default_factory=dict)
    fallback: str | None = None
    trusted_prefixes: list[str] = field(default_factory=list)
    schema: list[Column] = field(default_factory=list)
    reference: dict[str, Profile] = field(default_factory=dict)
    reference_rows: int | None = None
    target: Target | None = None
    provenance: Provenance = field(default_factory=Provenance)
    serving: ServingOptions = field(default_factory=ServingOptions)
    exported_at: str | None = None
    bento_version: str | None = None
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading and writing --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Read a manifest (see the module doc for what is accepted).

        Raises:
            ManifestError: not a mapping, or an unknown or newer ``format``.
        """
        if not isinstance(data, Mapping):
            raise ManifestError(f"a manifest is a JSON object, not {type(data).__name__}")
        format_version(data.get("format"))
        nested = (
            "model",
            "models",
            "schema",
            "target",
            "provenance",
            "serving",
            "model_version",
            "reference",
        )
        known, extra = _split(cls, data, skip=nested)
        return cls(
            **known,
            model_version=str(data.get("model_version", "")),
            model=ModelInfo.from_dict(data.get("model") or {}),
            models={str(v): ModelInfo.from_dict(m) for v, m in (data.get("models") or {}).items()},
            schema=[Column.from_dict(c) for c in data.get("schema") or []],
            reference=dict(data.get("reference") or {}),
            target=_map(Target, data.get("target")),
            provenance=Provenance.from_dict(data.get("provenance") or {}),
            serving=ServingOptions.from_dict(data.get("serving") or {}),
            extra=extra,
        )

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read ``path`` (a manifest file, or the folder holding ``nb2prod_manifest.json``).

        Raises:
            ManifestError: the file is not JSON, or not a manifest this runtime reads.
            OSError: the file cannot be read.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ManifestError(f"{path} is not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, value: Manifest | Mapping[str, Any]) -> Manifest:
        """``value`` as a Manifest (a mapping is read with :meth:`from_dict`)."""
        return value if isinstance(value, Manifest) else cls.from_dict(value)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the manifest file (the same keys an export always wrote)."""
        out: dict[str, Any] = {
            **self.extra,
            "format": self.format,
            "name": self.name,
            "bento_name": self.bento_name,
            "model_version": self.model_version,
            "model_uri": self.model_uri,
            "alias": self.alias,
            "bento_model_tag": self.bento_model_tag,
            "model": self.model.to_dict(),
            "models": {v: m.to_dict() for v, m in self.models.items()},
            "fallback": self.fallback,
            "trusted_prefixes": self.trusted_prefixes,
            "schema": [c.to_dict() for c in self.schema],
            "reference": self.reference,
            "reference_rows": self.reference_rows,
            "target": self.target.to_dict() if self.target else None,
            "provenance": self.provenance.to_dict(),
            "serving": self.serving.to_dict(),
        }
        if self.exported_at is not None:
            out["exported_at"] = self.exported_at
        if self.bento_version is not None:
            out["bento_version"] = self.bento_version
        return out

    def to_json(self) -> str:
        """The manifest file's text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def built(self, exported_at: str, bento_version: str) -> Manifest:
        """This manifest stamped with its build time and Bento version."""
        return replace(self, exported_at=exported_at, bento_version=bento_version)

    # -- what the service asks of it --------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        """The input columns, in order."""
        return [c.name for c in self.schema]

    @property
    def kinds(self) -> dict[str, str]:
        """Column name -> kind."""
        return {c.name: c.kind for c in self.schema}

    def carried(self) -> dict[str, ModelInfo]:
        """Version -> description of every model the Bento carries (the exported one first).

        A manifest without ``models`` (a one-model Bento) carries its ``model``.
        """
        if self.models:
            return dict(self.models)
        return {self.model_version: replace(self.model, bento_model_tag=self.bento_model_tag)}

    @property
    def exported_ts(self) -> float:
        """Unix time of the build (0 when unknown): a switch of the control table older than the
        build is stale (the newer Bento's exported version answers)."""
        if not self.exported_at:
            return 0.0
        try:
            return datetime.fromisoformat(self.exported_at).timestamp()
        except ValueError:
            return 0.0

    def answering_version(self, control: Mapping[str, tuple[Any, float]]) -> str:
        """The version the Bento's services answer with, given its store's control table
        (:meth:`nb2prod.serving.store.Store.control`): the ``active`` switch when it is newer
        than the build and names a carried version, as the service follows it; else the
        exported version (a switch the service cannot follow leaves it there)."""
        value, at = control.get(CONTROL_ACTIVE, (None, 0.0))
        if value is not None and at > self.exported_ts and str(value) in self.carried():
            return str(value)
        return self.model_version

    def monitored_columns(self) -> dict[str, Profile]:
        """Column -> reference profile of what drift watches: the features, then the
        prediction as :data:`~.store.PREDICTION_COLUMN` (against the target's profile)."""
        out: dict[str, Profile] = dict(self.reference)
        if self.target is not None and self.target.profile:
            out[PREDICTION_COLUMN] = self.target.profile
        return out
