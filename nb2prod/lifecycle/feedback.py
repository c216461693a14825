"""Ground truth in bulk: labels from a file, checked against the served model's classes, stored.

The service's ``/feedback`` takes labels one request at a time; ``nb2prod feedback`` takes
a file of them. Labels are joined with logged predictions by request id, in the prediction
store the service writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import LifecycleError
from nb2prod.lifecycle.served import served_manifest, store_location
from nb2prod.serving.feedback import native_label
from nb2prod.serving.redact import redact_uri

__all__ = [
    "FeedbackImport",
    "coerce_label",
    "import_feedback",
    "native_label",
    "read_table",
    "valid_request_id",
]


def valid_request_id(request_id: str) -> bool:
    """Whether ``request_id`` is one the service's ``/feedback`` accepts (the one check of both)."""
    from nb2prod.serving.schema import request_id_problem

    return request_id_problem(request_id) is None


def read_table(path: Path, *, text: bool = False) -> Any:
    """A pandas frame of a Parquet file (``.parquet``, ``.pq``) or else a CSV (every cell as text with ``text``)."""
    import pandas as pd

    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str) if text else pd.read_csv(path)


@dataclass(frozen=True)
class FeedbackImport:
    """Labels stored from a file: how many, how many match a logged prediction, where (credentials hidden)."""

    stored: int
    matched: int
    unmatched_examples: list[str]
    store: str


def coerce_label(value: Any, classes: list[Any] | None, is_classifier: bool) -> Any:
    """A label as the model predicts it: one of its classes (a classifier) or a number.

    Raises:
        LifecycleError: not a class of the model, or not a number.
    """
    if isinstance(value, str):
        value = value.strip()
    if is_classifier and classes:
        # the capture records classes as text; predictions are JSON-native (1, not "1")
        by_text = {str(c): native_label(str(c)) for c in classes}
        if str(value) in by_text:
            return by_text[str(value)]
        if isinstance(value, float) and value.is_integer() and str(int(value)) in by_text:
            return by_text[str(int(value))]
        raise LifecycleError(
            f"label {value!r} is not a class of the model ({', '.join(sorted(by_text))})",
            hint="labels must be classes the model predicts",
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LifecycleError(
            f"label {value!r} is not a number", hint="a regressor's labels are numbers"
        ) from None


def import_feedback(
    name: str,
    file: str | Path,
    *,
    id_column: str = "request_id",
    label_column: str | None = None,
    settings: Settings | None = None,
) -> FeedbackImport:
    """Store ground truth from a CSV (or Parquet) file with a request id and a label per row.

    Every row is checked before anything is stored: one bad label stores nothing.

    Raises:
        LifecycleError: no such file, missing columns, empty ids, labels that are not classes.
    """
    from nb2prod.serving.schema import request_id_problem
    from nb2prod.serving.store import Store

    settings = settings or load_settings()
    path = Path(file).expanduser()
    if not path.is_file():
        raise LifecycleError(f"no file at {path}", hint="give a CSV with columns request_id and label")
    _, manifest = served_manifest(settings, name)
    target = manifest.target.name if manifest.target else None
    try:
        frame = read_table(path, text=True)
    except Exception as exc:
        raise LifecycleError(
            f"cannot read {path}: {exc}", hint="a CSV with a header row, or Parquet"
        ) from None
    columns = [str(c) for c in frame.columns]
    label_column = label_column or next((c for c in ("label", target, "y") if c and c in columns), None)
    missing = [c for c in (id_column, label_column) if c is None or c not in columns]
    if missing:
        raise LifecycleError(
            f"{path.name} has no column {missing[0] or 'label'!r} (columns: {', '.join(columns)})",
            hint="name them with --id-column and --label-column",
        )
    info = manifest.model
    labels: list[tuple[str, Any]] = []
    for i, (rid, raw) in enumerate(zip(frame[id_column], frame[label_column], strict=True)):
        if rid is None or (isinstance(rid, float) and rid != rid) or not str(rid).strip():
            raise LifecycleError(f"row {i + 2} of {path.name} has no request id", hint="every row needs one")
        rid = str(rid).strip()
        problem = request_id_problem(rid)
        if problem is not None:
            raise LifecycleError(
                f"row {i + 2} of {path.name}: {problem}",
                hint="use the request ids the service answered with (the request_id of /predict)",
            )
        try:
            labels.append((rid, coerce_label(raw, info.classes, info.is_classifier)))
        except LifecycleError as exc:
            raise LifecycleError(f"row {i + 2} of {path.name}: {exc.message}", hint=exc.hint) from None
    location = store_location(settings, name)
    store = Store(location)
    try:
        stored = store.add_feedback(labels, source=f"file:{path.name}")
        ids = [rid for rid, _ in labels]
        known = store.known_request_ids(ids)
    finally:
        store.close()
    unmatched = [rid for rid in ids if rid not in known]
    return FeedbackImport(
        stored=stored,
        matched=len(ids) - len(unmatched),
        unmatched_examples=unmatched[:5],
        store=redact_uri(location),
    )
