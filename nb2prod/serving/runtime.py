"""What runs inside the exported service: integrity check, model loading, prediction, reports.

The model files travel in the Bento as a BentoML model (``<model>/mlflow/``). Before
anything is deserialised, the sha256 of every file is compared with the value
recorded at capture (shipped in the manifest); a missing, extra or changed file
keeps the service not ready, and the log says which file and why. A scikit-learn
model is then loaded with skops, trusting only types under our allow-list (shipped
from nb2prod's code, never read from the artifact) or trusted by name at capture.

This package is copied into the Bento as ``_nb2prod_serving``: it imports nothing
from nb2prod.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("nb2prod.serving")

MODEL_SUBDIR = "mlflow"
STORE_ENV = "NB2PROD_PREDICTION_STORE"


class IntegrityError(Exception):
    """A model file does not match the hash recorded at capture."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def verify_tree(root: Path, expected: Mapping[str, str]) -> None:
    """Every file under ``root`` must be recorded and match; every recorded file must exist.

    Raises:
        IntegrityError: naming the first file that differs, is missing or is unknown.
    """
    if not expected:
        raise IntegrityError(
            "no artifact hashes were recorded at capture: refusing to load an unverified model"
        )
    found = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    unknown = sorted(set(found) - set(expected))
    if unknown:
        raise IntegrityError(f"file {unknown[0]} is not among the files recorded at capture")
    for rel, want in sorted(expected.items()):
        path = found.get(rel)
        if path is None:
            raise IntegrityError(f"file {rel} recorded at capture is missing")
        got = sha256_file(path)
        if got != want:
            raise IntegrityError(f"file {rel} has {got[:23]}..., capture recorded {want[:23]}...")


def prediction_store(manifest: Mapping[str, Any]) -> str:
    """Where predictions are logged: ``$NB2PROD_PREDICTION_STORE``, else beside the BentoML home."""
    env = os.environ.get(STORE_ENV)
    if env:
        return env if "://" in env else str(Path(env).expanduser().resolve())
    home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    return str(home.resolve() / "nb2prod-monitoring" / manifest["bento_name"] / "predictions.db")


def _model_file(folder: Path) -> str:
    import yaml

    spec = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    sk = (spec.get("flavors") or {}).get("sklearn") or {}
    return str(sk.get("pickled_model") or "model.skops")


def load_verified(manifest: Mapping[str, Any], model_path: Path) -> Any:
    """Verify every file, then deserialise the model (scikit-learn via skops; others via MLflow)."""
    info = manifest["model"]
    folder = model_path / MODEL_SUBDIR
    verify_tree(folder, info["artifact_sha256"])
    if info["flavor"] == "sklearn":
        import skops.io as sio

        path = folder / _model_file(folder)
        if path.suffix != ".skops":
            raise IntegrityError(
                f"{path.name} is not a skops file: nb2prod serves only skops scikit-learn models"
            )
        needed = sio.get_untrusted_types(file=str(path))
        prefixes = tuple(manifest.get("trusted_prefixes") or ())
        trusted_by_name = set(info.get("trusted_types") or ())
        refused = [t for t in needed if not t.startswith(prefixes) and t not in trusted_by_name]
        if refused:
            raise IntegrityError(f"the model needs types nobody trusted: {', '.join(refused[:5])}")
        return sio.load(str(path), trusted=needed)
    import mlflow.pyfunc

    loaded = mlflow.pyfunc.load_model(str(folder))
    try:
        return loaded.get_raw_model()
    except Exception:
        return loaded


class Runtime:
    """The loaded model and its contract; ready once the files checked out and the model loaded."""

    def __init__(
        self, manifest: Mapping[str, Any], model_path: str | Path, *, background: bool = True
    ) -> None:
        self.manifest = manifest
        self.model_path = Path(model_path)
        self.schema: list[Mapping[str, Any]] = list(manifest["schema"])
        self.columns = [c["name"] for c in self.schema]
        self._all_float = all(
            c["kind"] == "float" and (c.get("dtype") or "float64") == "float64" for c in self.schema
        )
        self.info = manifest["model"]
        self.model: Any = None
        self.classes: list[Any] | None = None
        self.ready = False
        self.failure: str | None = None
        self.started_at = time.time()
        if background:
            threading.Thread(target=self._load, name="nb2prod-model-loader", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        name = self.manifest["name"]
        try:
            model = load_verified(self.manifest, self.model_path)
        except IntegrityError as exc:
            self.failure = f"integrity check failed: {exc}"
            logger.error("nb2prod: model %s NOT LOADED, the service stays not ready: %s", name, self.failure)
            return
        except Exception as exc:
            self.failure = f"loading failed: {type(exc).__name__}: {exc}"
            logger.error("nb2prod: model %s NOT LOADED, the service stays not ready: %s", name, self.failure)
            return
        self.model = model
        classes = getattr(model, "classes_", None)
        self.classes = (
            [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None
        )
        self.ready = True
        logger.info("nb2prod: model %s version %s verified and loaded", name, self.manifest["model_version"])

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
            name, kind = column["name"], column["kind"]
            dtype = column.get("dtype") or ""
            values = [r.get(name) for r in records]
            if kind == "float":
                data[name] = np.array(values, dtype=np.float64 if dtype in ("", "object") else dtype)
            elif kind in ("int", "bool"):
                try:
                    data[name] = pd.array(values, dtype=dtype) if dtype else np.array(values)
                except (TypeError, ValueError):
                    data[name] = np.array(values, dtype=object)
            elif kind == "category":
                cats = column.get("categories") or None
                data[name] = pd.Categorical(values, categories=cats, ordered=bool(column.get("ordered")))
            elif kind == "datetime":
                data[name] = pd.to_datetime(values)
            else:
                data[name] = np.array(values, dtype=object)
        return pd.DataFrame(data, columns=self.columns, copy=False)

    def predict(self, rows: Sequence[Any]) -> tuple[list[Any], list[dict[str, float]] | None]:
        """Predictions (JSON-native) and class probabilities for a batch of validated rows."""
        import numpy as np

        frame = self.frame(rows)
        raw = self.model.predict(frame)
        predictions = [v.item() if isinstance(v, np.generic) else v for v in np.asarray(raw).tolist()]
        probabilities = None
        if self.info.get("has_proba") and self.classes is not None:
            proba = np.asarray(self.model.predict_proba(frame), dtype=float)
            labels = [str(c) for c in self.classes]
            probabilities = [dict(zip(labels, row, strict=True)) for row in proba.tolist()]
        return predictions, probabilities

    def metadata(self) -> dict[str, Any]:
        prov = self.manifest.get("provenance", {})
        return {
            "model": self.manifest["name"],
            "model_version": self.manifest["model_version"],
            "model_uri": self.manifest.get("model_uri"),
            "alias": self.manifest.get("alias"),
            "bento": f"{self.manifest['bento_name']}:{self.manifest.get('bento_version', '')}",
            "run_id": prov.get("run_id"),
            "model_id": prov.get("model_id"),
            "data_digests": prov.get("data_digests", {}),
            "git_commit": prov.get("git_commit"),
            "environment_digest": prov.get("env_digest"),
            "notebook": prov.get("notebook"),
            "notebook_digest": prov.get("notebook_digest"),
            "exported_at": self.manifest.get("exported_at"),
            "flavor": self.info.get("flavor"),
            "class_name": self.info.get("class_name"),
            "classes": self.info.get("classes"),
            "features": self.columns,
            "ready": self.ready,
            "failure": self.failure,
        }
