"""The models a Bento carries, which one answers each row, and the fallback when it raises.

Loading (integrity check, skops) is :mod:`.loading`; the manifest is :mod:`.manifest`.
This package is copied into the Bento as ``_nb2prod_serving``: it imports nothing
from nb2prod.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .integrity import IntegrityError, verify_source
from .loading import MODEL_SUBDIR, ModelSlot
from .manifest import MANIFEST_FILE, Manifest, ModelInfo

logger = logging.getLogger("nb2prod.serving")

# the names callers imported from here before loading.py existed
__all__ = [
    "MODEL_SUBDIR",
    "IntegrityError",
    "ModelSlot",
    "Routed",
    "Runtime",
    "canary_share",
]


@dataclass
class Routed:
    """A routed batch: per row the prediction, probabilities and the version that answered."""

    predictions: list[Any]
    probabilities: list[dict[str, float] | None] | None
    versions: list[str]
    fallbacks: int
    failed: dict[str, int] = field(default_factory=dict)


def canary_share(request_id: str) -> float:
    """Where a request id falls in [0, 100): the same id always takes the same route."""
    return (zlib.crc32(request_id.encode()) % 10_000) / 100.0


def bento_source_dir() -> Path | None:
    """The Bento's ``src/`` when this package runs inside one (as ``_nb2prod_serving``), else None."""
    here = Path(__file__).resolve().parent
    if here.name == "_nb2prod_serving" and (here.parent / MANIFEST_FILE).is_file():
        return here.parent
    return None


class Runtime:
    """The models the Bento carries, which one answers, and the fallback when it raises.

    Inside a Bento, the source (manifest, service, this package) is checked against the
    Bento's tag before any model is loaded (:func:`.integrity.verify_source`): a Bento whose
    source was edited serves nothing. The active version starts as the exported one; ``apply_control`` (the store's
    ``control`` table, written by ``nb2prod promote/rollback`` or the admin endpoints)
    switches it, sends a share of the rows to a canary, or has a shadow version score the
    answered rows off the request path (``shadow``), without a restart. Routing
    is per row, by a hash of its request id, so a retried request takes the same route.
    """

    def __init__(
        self,
        manifest: Manifest | Mapping[str, Any],
        model_paths: str | Path | Mapping[str, str | Path],
        *,
        background: bool = True,
        source_dir: str | Path | None = None,
    ) -> None:
        manifest = Manifest.coerce(manifest)
        self.source_dir = Path(source_dir) if source_dir is not None else bento_source_dir()
        self.manifest = manifest
        self.schema = list(manifest.schema)
        self.columns = manifest.columns
        self._all_float = all(c.kind == "float" and (c.dtype or "float64") == "float64" for c in self.schema)
        carried = manifest.carried()
        if not isinstance(model_paths, Mapping):
            model_paths = {next(iter(carried)): model_paths}
        self.slots = {
            v: ModelSlot(manifest.name, v, info, Path(model_paths[v]), manifest.trusted_prefixes)
            for v, info in carried.items()
            if v in model_paths
        }
        self.primary = manifest.model_version
        self.active = self.primary
        canary = manifest.serving.canary
        self.canary: tuple[str, float] | None = (canary.version, canary.percent) if canary else None
        # the version that scores the answered rows off the request path (shadow.py), never answering
        self.shadow: str | None = None
        self.exported_ts = manifest.exported_ts
        self.control_seen: dict[str, float] = {}
        self.control_refusals: dict[str, str] = {}
        self._waiting: set[str] = set()
        self.fallbacks: dict[str, int] = {}
        self.started_at = time.time()
        self._lock = threading.Lock()
        if background:
            threading.Thread(target=self._load, name="nb2prod-model-loader", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        if self.source_dir is not None:
            try:
                verify_source(self.source_dir)
            except IntegrityError as exc:
                # the contract itself is not what was built: no version may answer under it
                for slot in self.slots.values():
                    slot.failure = f"integrity check failed: {exc}"
                logger.error(
                    "nb2prod: model %s NOT SERVED: the Bento's source failed its integrity check: %s",
                    self.manifest.name,
                    exc,
                )
                return
            logger.info("nb2prod: the Bento's source matches its tag (%s)", self.source_dir)
        for slot in self.slots.values():
            slot.load()

    # -- compatibility with the one-model runtime --------------------------------------------
    @property
    def info(self) -> ModelInfo:
        return self.slots[self.active].info

    @property
    def model(self) -> Any:
        return self.slots[self.active].model

    @property
    def classes(self) -> list[Any] | None:
        return self.slots[self.active].classes

    @property
    def ready(self) -> bool:
        return self.slots[self.active].ready

    @property
    def failure(self) -> str | None:
        return self.slots[self.active].failure

    # -- switches ---------------------------------------------------------------------------
    def check_version(self, version: str) -> ModelSlot:
        """The slot of ``version``; ValueError naming what the Bento carries when it cannot serve it."""
        slot = self.slots.get(str(version))
        if slot is None:
            carried = ", ".join(self.slots)
            raise ValueError(
                f"version {version} is not in this Bento (it carries {carried}): "
                "export it (nb2prod export NAME@champion) and deploy the new Bento"
            )
        if not slot.ready:
            raise ValueError(
                f"version {version} is carried but not loaded: {slot.failure or 'still loading'}"
            )
        return slot

    def set_active(self, version: str) -> None:
        slot = self.check_version(version)
        with self._lock:
            self.active = slot.version
            if self.canary and self.canary[0] == slot.version:
                self.canary = None
            if self.shadow == slot.version:  # promoted: it answers now, nothing left to shadow
                self.shadow = None

    def set_canary(self, version: str | None, percent: float) -> None:
        if not version or percent <= 0:
            self.canary = None
            return
        if not 0 < percent <= 100:
            raise ValueError(f"canary percent must be in (0, 100], got {percent}")
        slot = self.check_version(version)
        if slot.version == self.active:
            raise ValueError(f"version {version} is already the active model")
        self.canary = (slot.version, float(percent))

    def set_shadow(self, version: str | None) -> None:
        """Score the answered rows with ``version`` too, off the request path (None: stop)."""
        if not version:
            self.shadow = None
            return
        slot = self.check_version(version)
        if slot.version == self.active:
            raise ValueError(
                f"version {version} is the active model: shadow another version the Bento carries"
            )
        self.shadow = slot.version

    def shadow_state(self) -> dict[str, Any] | None:
        return {"version": self.shadow} if self.shadow else None

    def score(self, version: str, rows: Sequence[Any]) -> list[Any]:
        """Predictions of ``version`` for validated rows (no fallback: the shadow's own answers)."""
        predictions, _ = self._predict_with(self.slots[version], self.frame(rows))
        return predictions

    def apply_control(self, control: Mapping[str, tuple[Any, float]]) -> list[str]:
        """Follow switches set after this Bento was exported; returns what changed (for the log).

        A switch to a version that is carried but still loading (a restart reads the control
        table before the models are verified) is retried on every call until the version is
        loaded, then applied: the service converges to the control table. A switch that cannot
        be followed (not carried, failed its integrity check) is logged once and recorded in
        ``control_refusals`` (shown in /metadata, read by ``nb2prod promote``).
        """
        changed: list[str] = []
        for name in ("active", "canary", "shadow"):
            if name not in control:
                continue
            value, at = control[name]
            if at <= self.exported_ts or self.control_seen.get(name) == at:
                continue
            try:
                if name == "active":
                    if self._still_loading(str(value)):
                        self._note_waiting(name, str(value))
                        continue
                    if str(value) != self.active:
                        self.set_active(str(value))
                        changed.append(f"active model is now version {self.active} (control table)")
                elif name == "shadow":
                    if value is not None and not isinstance(value, dict):
                        raise ValueError(
                            f"the shadow switch is {{'version': V}} or null, not a {type(value).__name__}"
                        )
                    version = (value or {}).get("version")
                    if version is not None and self._still_loading(str(version)):
                        self._note_waiting(name, str(version))
                        continue
                    if version is not None and str(version) == self.active:
                        self.shadow = None  # stale: the shadowed version was promoted since
                    else:
                        self.set_shadow(None if version is None else str(version))
                    changed.append(f"shadow: {self.shadow_state()} (control table)")
                else:
                    value = value or {}
                    version = value.get("version")
                    if version is not None and self._still_loading(str(version)):
                        self._note_waiting(name, str(version))
                        continue
                    if version is not None and str(version) == self.active:
                        # a canary of the active version is stale (the version was promoted since)
                        self.canary = None
                    else:
                        self.set_canary(version, float(value.get("percent") or 0))
                    changed.append(f"canary: {self.canary_state()} (control table)")
                self.control_refusals.pop(name, None)
            except ValueError as exc:
                self.control_refusals[name] = str(exc)
                logger.error("nb2prod: cannot follow the %s switch: %s", name, exc)
            self.control_seen[name] = at
            self._waiting.discard(name)
        return changed

    def _still_loading(self, version: str) -> bool:
        slot = self.slots.get(version)
        return slot is not None and not slot.ready and slot.failure is None

    def _note_waiting(self, name: str, version: str) -> None:
        if name not in self._waiting:
            self._waiting.add(name)
            logger.warning(
                "nb2prod: the %s switch to version %s waits until that version is loaded", name, version
            )

    def canary_state(self) -> dict[str, Any] | None:
        return {"version": self.canary[0], "percent": self.canary[1]} if self.canary else None

    def fallback_for(self, version: str) -> str | None:
        """The version that answers when ``version`` raises: the active one, else the one it replaced."""
        for candidate in (self.active, self.manifest.fallback, self.primary, *self.slots):
            slot = self.slots.get(str(candidate)) if candidate else None
            if slot is not None and slot.version != version and slot.ready:
                return slot.version
        return None

    def route(self, request_ids: Sequence[str]) -> list[str]:
        """The version that answers each row."""
        active, canary = self.active, self.canary
        if canary is None:
            return [active] * len(request_ids)
        version, percent = canary
        return [version if canary_share(rid) < percent else active for rid in request_ids]

    def frame(self, rows: Sequence[Any]) -> Any:
        """Rows (pydantic models or dicts) as a DataFrame with the training dtypes.

        Built column by column from arrays of the right dtype (no per-column ``astype``):
        this runs on every request and is most of the service's own CPU per row.
        """
        import numpy as np
        import pandas as pd

        records = [r if isinstance(r, dict) else r.__dict__ for r in rows]
        if self._all_float:
            matrix = np.array([[r[c] for c in self.columns] for r in records], dtype=np.float64)
            return pd.DataFrame(matrix, columns=self.columns, copy=False)
        data: dict[str, Any] = {}
        for column in self.schema:
            name, kind = column.name, column.kind
            dtype = column.dtype or ""
            values: list[Any] = [r.get(name) for r in records]
            if kind == "float":
                data[name] = np.array(values, dtype=np.float64 if dtype in ("", "object") else dtype)
            elif kind in ("int", "bool"):
                try:
                    data[name] = pd.array(values, dtype=dtype) if dtype else np.array(values)  # type: ignore[call-overload]
                except (TypeError, ValueError):
                    data[name] = np.array(values, dtype=object)
            elif kind == "category" and dtype in ("", "category"):
                cats = column.categories or None
                data[name] = pd.Categorical(values, categories=cats, ordered=bool(column.ordered))
            elif kind == "category" and dtype not in ("object", "str"):
                # a string column the export closed to its categories: the model's own dtype
                data[name] = pd.array(values, dtype=dtype)  # type: ignore[call-overload]
            elif kind == "datetime":
                data[name] = pd.to_datetime(values)
            else:
                data[name] = np.array(values, dtype=object)
        return pd.DataFrame(data, columns=self.columns, copy=False)

    def _predict_with(self, slot: ModelSlot, frame: Any) -> tuple[list[Any], list[dict[str, float]] | None]:
        import numpy as np

        raw = slot.model.predict(frame)
        predictions = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(raw).tolist()]
        probabilities = None
        if slot.info.has_proba and slot.classes is not None:
            proba = np.asarray(slot.model.predict_proba(frame), dtype=float)
            labels = [str(c) for c in slot.classes]
            probabilities = [dict(zip(labels, row, strict=True)) for row in proba.tolist()]
        return predictions, probabilities

    def predict(self, rows: Sequence[Any]) -> tuple[list[Any], list[dict[str, float] | None] | None]:
        """Predictions (JSON-native) and class probabilities of the active model for validated rows."""
        result = self.predict_routed(rows, [self.active] * len(rows))
        return result.predictions, result.probabilities

    def predict_routed(self, rows: Sequence[Any], versions: Sequence[str]) -> Routed:
        """Predict each row with its routed version; a version that raises hands its rows to the fallback.

        Raises:
            RuntimeError: the routed version and its fallback both failed on these rows.
        """
        out = Routed(predictions=[None] * len(rows), probabilities=None, versions=list(versions), fallbacks=0)
        any_proba = False
        probas: list[dict[str, float] | None] = [None] * len(rows)
        groups: dict[str, list[int]] = {}
        for i, version in enumerate(versions):
            groups.setdefault(version, []).append(i)
        for version, index in groups.items():
            part = [rows[i] for i in index]
            frame = self.frame(part)
            try:
                preds, proba = self._predict_with(self.slots[version], frame)
            except Exception as exc:
                fallback = self.fallback_for(version)
                if fallback is None:
                    raise RuntimeError(
                        f"model version {version} failed and no fallback is loaded: {exc}"
                    ) from exc
                logger.warning(
                    "nb2prod: version %s raised %s on %d rows; version %s answered",
                    version,
                    type(exc).__name__,
                    len(index),
                    fallback,
                )
                with self._lock:
                    self.fallbacks[version] = self.fallbacks.get(version, 0) + len(index)
                out.fallbacks += len(index)
                out.failed[version] = out.failed.get(version, 0) + len(index)
                preds, proba = self._predict_with(self.slots[fallback], frame)
                version = fallback
            for j, i in enumerate(index):
                out.predictions[i] = preds[j]
                out.versions[i] = version
                if proba is not None:
                    probas[i] = proba[j]
                    any_proba = True
        out.probabilities = probas if any_proba else None
        return out

    def metadata(self) -> dict[str, Any]:
        manifest, prov = self.manifest, self.manifest.provenance
        return {
            "model": manifest.name,
            "model_version": self.active,
            "exported_version": self.primary,
            "carried_versions": {
                v: {"ready": slot.ready, "failure": slot.failure, "class_name": slot.info.class_name}
                for v, slot in self.slots.items()
            },
            "canary": self.canary_state(),
            "shadow": self.shadow_state(),
            "control_refusals": dict(self.control_refusals),
            "worker_pid": os.getpid(),
            "fallbacks": dict(self.fallbacks),
            "model_uri": manifest.model_uri,
            "alias": manifest.alias,
            "bento": f"{manifest.bento_name}:{manifest.bento_version or ''}",
            "run_id": prov.run_id,
            "model_id": prov.model_id,
            "data_digests": prov.data_digests,
            "git_commit": prov.git_commit,
            "environment_digest": prov.env_digest,
            "notebook": prov.notebook,
            "notebook_digest": prov.notebook_digest,
            "exported_at": manifest.exported_at,
            "flavor": self.info.flavor,
            "class_name": self.info.class_name,
            "classes": self.info.classes,
            "features": self.columns,
            "ready": self.ready,
            "failure": self.failure,
        }
