"""Comparing a run with its re-execution: environment, notebook code, data, metrics, predictions.

Every comparison is a :class:`~nb2prod.execute.results.Finding`. Models are compared by what
they predict: on the original's recorded input example and on every test/reference DataFrame
(:class:`ReferenceFrame`), with both the original and the re-run model loaded through MLflow.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.execute.results import Finding, RunResult
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _fmt(value: Any) -> str | None:
    return None if value is None else str(value)


def _one_sided(check: str, name: str, original: Any, new: Any, *, what: str = "") -> Finding:
    """The finding for what only one of the two runs has (``new`` None: the reproduction lacks it)."""
    where = "missing in the reproduction" if new is None else "new in the reproduction"
    return Finding(check, name, False, _fmt(original), _fmt(new), what + where)


def compare_runs(
    client: MlflowClient,
    original: Any,
    result: RunResult,
    *,
    rtol: float,
    atol: float = 1e-12,
    reference: Sequence[ReferenceFrame] = (),
) -> list[Finding]:
    """Every comparison between ``original`` (an MLflow run) and its re-execution ``result``.

    ``reference``: test/reference DataFrames of the re-execution, which every model pair
    re-predicts (see :func:`_compare_models`).
    """
    from nb2prod.capture import environment
    from nb2prod.tracking import client as tracking

    findings: list[Finding] = []
    if not result.ok:
        findings.append(
            Finding(
                "run",
                "status",
                False,
                original.info.status,
                result.status,
                result.error.message if result.error else "",
            )
        )
    new_id = result.run_id
    if new_id is None:
        return findings
    new = client.get_run(new_id)
    old_id = original.info.run_id

    # Environment: Python and what the notebook imported decide; other packages are listed.
    old_env = tracking.load_json_artifact(client, old_id, names.ENVIRONMENT_JSON)
    new_env = tracking.load_json_artifact(client, new_id, names.ENVIRONMENT_JSON)
    if old_env is None or new_env is None:
        which = "original" if old_env is None else "reproduction"
        findings.append(
            Finding("environment", "environment.json", False, detail=f"the {which} recorded no environment")
        )
    else:
        diff = environment.diff(
            environment.EnvironmentSnapshot.from_dict(old_env),
            environment.EnvironmentSnapshot.from_dict(new_env),
        )
        if diff.python:
            findings.append(Finding("environment", "python", False, diff.python[0], diff.python[1]))
        for change in diff.imported_changed:
            findings.append(
                Finding(
                    "environment",
                    change.name,
                    False,
                    change.old,
                    change.new,
                    f"imported by the notebook ({change.kind})",
                )
            )
        others = len(diff.changed) + len(diff.added) + len(diff.removed) - len(diff.imported_changed)
        findings.append(
            Finding(
                "environment",
                "other packages",
                True,
                detail=f"{others} installed packages the notebook does not import differ"
                if others
                else "identical",
            )
        )

    # Notebook code.
    old_digest = original.data.tags.get(names.TAG_NOTEBOOK_DIGEST)
    new_digest = new.data.tags.get(names.TAG_NOTEBOOK_DIGEST) or new.data.tags.get(names.TAG_SOURCE_DIGEST)
    if old_digest:
        findings.append(Finding("notebook", "code digest", old_digest == new_digest, old_digest, new_digest))

    # Data digests.
    old_data, new_data = names.data_digests(original.data.tags), names.data_digests(new.data.tags)
    for name in sorted(old_data.keys() | new_data.keys()):
        before, after = old_data.get(name), new_data.get(name)
        detail = (
            ""
            if before == after
            else (
                "not captured by the reproduction"
                if after is None
                else "new in the reproduction"
                if before is None
                else "content differs"
            )
        )
        findings.append(Finding("data", name, before == after, before, after, detail))

    # Metrics.
    old_metrics, new_metrics = dict(original.data.metrics), dict(new.data.metrics)
    for name in sorted(old_metrics.keys() | new_metrics.keys()):
        a, b = old_metrics.get(name), new_metrics.get(name)
        if a is None or b is None:
            findings.append(_one_sided("metric", name, a, b))
            continue
        same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol) or (math.isnan(a) and math.isnan(b))
        rel = abs(a - b) / max(abs(a), abs(b)) if not same and max(abs(a), abs(b)) > 0 else 0.0
        findings.append(
            Finding(
                "metric",
                name,
                same,
                repr(a),
                repr(b),
                "" if same else f"relative difference {rel:.3g} > rtol {rtol:g}",
            )
        )

    findings.extend(
        _compare_models(client, old_id, new_id, rtol=rtol, atol=atol, reference=reference, old_data=old_data)
    )
    return findings


def _model_records(client: MlflowClient, run_id: str) -> dict[str, dict[str, Any]]:
    from nb2prod.tracking import client as tracking

    records: dict[str, dict[str, Any]] = {}
    try:
        files = client.list_artifacts(run_id, names.MODELS_DIR)
    except Exception:
        return records
    for item in files:
        if item.path.endswith(".json"):
            data = tracking.load_json_artifact(client, run_id, item.path)
            if data and data.get("model_id"):
                records[str(data.get("name") or Path(item.path).stem)] = data
    return records


@dataclass(frozen=True)
class ReferenceFrame:
    """A test or reference DataFrame the re-execution tracked, to re-predict with both models.

    Attributes:
        name: Dataset name (as in ``%nb2prod data DF --name``).
        role: ``test`` or ``reference``.
        target: The label column (dropped before predicting), if recorded.
        digest: The frame's content digest in the re-execution.
        frame: The data.
    """

    name: str
    role: str
    target: str | None
    digest: str
    frame: Any


def _compare_models(
    client: MlflowClient,
    old_id: str,
    new_id: str,
    *,
    rtol: float,
    atol: float,
    reference: Sequence[ReferenceFrame] = (),
    old_data: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Predictions of each original model and its reproduction: on the original's input example,
    and on every test/reference frame of the reproduction (class labels exactly, probabilities and
    regression outputs within ``rtol``/``atol``), with the number of rows that differ."""
    old_models, new_models = _model_records(client, old_id), _model_records(client, new_id)
    findings: list[Finding] = []
    for name in sorted(old_models.keys() | new_models.keys()):
        a, b = old_models.get(name), new_models.get(name)
        if a is None or b is None:
            findings.append(
                _one_sided("prediction", name, a and a["model_id"], b and b["model_id"], what="model ")
            )
            continue
        findings.extend(
            _prediction_findings(name, a["model_id"], b["model_id"], reference, old_data or {}, rtol, atol)
        )
        same_files = a.get("artifact_sha256") == b.get("artifact_sha256")
        findings.append(
            Finding(
                "artifact",
                name,
                True,
                detail="saved model files are byte-identical"
                if same_files
                else "saved model files differ byte-wise (informative only)",
            )
        )
    return findings


def _why(exc: BaseException) -> str:
    return f"could not compare: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _prediction_findings(
    name: str,
    old_model: str,
    new_model: str,
    reference: Sequence[ReferenceFrame],
    old_data: Mapping[str, str],
    rtol: float,
    atol: float,
) -> list[Finding]:
    import mlflow
    from mlflow.models import Model

    findings: list[Finding] = []
    with tempfile.TemporaryDirectory(prefix="nb2prod-compare-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{old_model}", dst_path=tmp)
            example = Model.load(local).load_input_example(local)
            old = mlflow.pyfunc.load_model(local)
            new = mlflow.pyfunc.load_model(f"models:/{new_model}")
        except Exception as exc:
            return [Finding("prediction", name, False, old_model, new_model, _why(exc))]
        if example is None:
            detail: str | None = "the original model has no recorded input example"
        else:
            try:
                detail = _prediction_difference(old, new, example, rtol=rtol, atol=atol)
            except Exception as exc:
                detail = _why(exc)
        findings.append(
            Finding(
                "prediction",
                name,
                detail is None,
                old_model,
                new_model,
                detail or "same predictions on the recorded input example",
            )
        )
        for ref in reference:
            label = f"{name} on {ref.name}"
            try:
                features = _features_for(old, ref)
                detail = _prediction_difference(old, new, features, rtol=rtol, atol=atol)
            except Exception as exc:
                findings.append(Finding("prediction", label, False, old_model, new_model, _why(exc)))
                continue
            origin = (
                "the original's data (same digest)"
                if old_data.get(ref.name) == ref.digest
                else "the reproduction's data (its digest differs from the original's)"
            )
            findings.append(
                Finding(
                    "prediction",
                    label,
                    detail is None,
                    old_model,
                    new_model,
                    f"{detail} of {ref.role} data '{ref.name}', {origin}"
                    if detail
                    else f"same predictions on all {len(features)} rows of {ref.role} data '{ref.name}', {origin}",
                )
            )
    return findings


def _features_for(model: Any, ref: ReferenceFrame) -> Any:
    """The columns of ``ref`` the model takes: its signature's inputs, else all but the target."""
    frame = ref.frame
    if ref.target and ref.target in getattr(frame, "columns", ()):
        frame = frame.drop(columns=[ref.target])
    schema = model.metadata.get_input_schema() if model.metadata is not None else None
    names = schema.input_names() if schema is not None and schema.has_input_names() else None
    if names and all(n in frame.columns for n in names):
        frame = frame[list(names)]
    return frame


def _prediction_difference(old: Any, new: Any, data: Any, *, rtol: float, atol: float) -> str | None:
    """How the two pyfunc models' outputs on ``data`` differ (None: they agree)."""
    import numpy as np

    from nb2prod.capture.models import to_signature_types

    outputs = [("predictions", old.predict(data), new.predict(data))]
    raw_old, raw_new = old.get_raw_model(), new.get_raw_model()
    if hasattr(raw_old, "predict_proba") and hasattr(raw_new, "predict_proba"):
        frame = to_signature_types(data)
        outputs.append(("probabilities", raw_old.predict_proba(frame), raw_new.predict_proba(frame)))
    problems = []
    for label, x, y in outputs:
        xa, ya = np.asarray(x), np.asarray(y)
        if xa.shape != ya.shape:
            problems.append(f"{label}: shape {xa.shape} vs {ya.shape}")
            continue
        if xa.dtype.kind in "fc" and ya.dtype.kind in "fc":
            bad = ~np.isclose(xa, ya, rtol=rtol, atol=atol, equal_nan=True)
            how = f"beyond rtol {rtol:g}"
        else:
            bad = xa.astype(str) != ya.astype(str)
            how = "(exact)"
        if bad.any():
            rows = int(bad.reshape(bad.shape[0], -1).any(axis=1).sum()) if bad.ndim else 1
            total = xa.shape[0] if xa.ndim else 1
            problems.append(f"{label}: {rows} of {total} rows differ {how}")
    return "; ".join(problems) or None
