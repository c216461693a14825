"""Loading a carried model inside the service: integrity check first, then deserialisation.

The model files travel in the Bento as a BentoML model (``<model>/mlflow/``). Before
anything is deserialised, the sha256 of every file is compared with the value
recorded at capture (shipped in the manifest); a missing, extra or changed file
keeps the model not ready, and the log says which file and why. A scikit-learn
model is then loaded with skops, trusting only types under our allow-list (shipped
from nb2prod's code, never read from the artifact) or trusted by name at capture.

Copied into every Bento with the rest of ``serving/``: it imports nothing from nb2prod.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .integrity import IntegrityError, verify_tree
from .manifest import ModelInfo

logger = logging.getLogger("nb2prod.serving")

MODEL_SUBDIR = "mlflow"

__all__ = ["MODEL_SUBDIR", "IntegrityError", "ModelSlot", "load_model"]


def _model_file(folder: Path) -> str:
    import yaml

    spec = yaml.safe_load((folder / "MLmodel").read_text(encoding="utf-8"))
    sk = (spec.get("flavors") or {}).get("sklearn") or {}
    return str(sk.get("pickled_model") or "model.skops")


def load_model(model_path: Path, info: ModelInfo, trusted_prefixes: Sequence[str]) -> Any:
    """Verify every file of ``model_path/mlflow``, then deserialise it.

    scikit-learn models are read with skops, trusting the types under
    ``trusted_prefixes`` and those ``info`` trusted by name; other flavors through MLflow.

    Raises:
        IntegrityError: a file differs from the capture's record, the model is not a skops
            file, or it needs a type nobody trusted.
    """
    folder = model_path / MODEL_SUBDIR
    verify_tree(folder, info.artifact_sha256)
    if info.flavor == "sklearn":
        import skops.io as sio

        path = folder / _model_file(folder)
        if path.suffix != ".skops":
            raise IntegrityError(
                f"{path.name} is not a skops file: nb2prod serves only skops scikit-learn models"
            )
        needed = sio.get_untrusted_types(file=str(path))
        prefixes = tuple(trusted_prefixes)
        trusted_by_name = set(info.trusted_types)
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


class ModelSlot:
    """One model version the Bento carries: verified and loaded (in the background)."""

    def __init__(self, name: str, version: str, info: ModelInfo, path: Path, trusted: Sequence[str]) -> None:
        self.name = name
        self.version = version
        self.info = info
        self.path = path
        self.trusted = list(trusted)
        self.model: Any = None
        self.classes: list[Any] | None = None
        self.ready = False
        self.failure: str | None = None

    def load(self) -> None:
        try:
            model = load_model(self.path, self.info, self.trusted)
        except IntegrityError as exc:
            self.failure = f"integrity check failed: {exc}"
        except Exception as exc:
            self.failure = f"loading failed: {type(exc).__name__}: {exc}"
        if self.failure:
            logger.error("nb2prod: model %s version %s NOT LOADED: %s", self.name, self.version, self.failure)
            return
        self.model = model
        classes = getattr(model, "classes_", None)
        self.classes = (
            [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None
        )
        self.ready = True
        logger.info("nb2prod: model %s version %s verified and loaded", self.name, self.version)
