"""Ground truth sent to the service's ``POST /feedback``: its body, and what becomes of a label.

* The body: one ``{request_id, label}`` or ``{"labels": [...]}``; the request id is checked
  by :func:`.schema.validate_request_id` (the check ``nb2prod feedback`` uses too).
* Only labels of logged predictions are stored, and only the first label of each
  (:func:`store_first`): a later label for the same request id is counted, not stored.
* A label that comes before its prediction is logged (the writer commits a moment after
  answering, later while the store is away) is held in memory by :class:`PendingLabels`,
  at most :data:`PENDING_MAX` per worker, stored once the prediction is logged and dropped
  (counted) after :data:`PENDING_TTL_S`. Labels for request ids that were never answered
  therefore cost bounded memory and no storage.

Copied into the Bento with the rest of ``serving/``: it imports nothing from nb2prod.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from .schema import REQUEST_ID_MAX, REQUEST_ID_RULE, validate_request_id

FEEDBACK_TOKEN_ENV = "NB2PROD_FEEDBACK_TOKEN"
MAX_LABELS = 10_000  # per request
PENDING_MAX = 10_000  # labels held per worker while their prediction is not logged yet
PENDING_TTL_S = 60.0

Label = Union[StrictBool, StrictInt, StrictFloat, Annotated[StrictStr, Field(max_length=1000)]]  # noqa: UP007
# The one request-id check, documented as its pattern.
RequestId = Annotated[
    StrictStr,
    Field(json_schema_extra={"pattern": REQUEST_ID_RULE, "minLength": 1, "maxLength": REQUEST_ID_MAX}),
    AfterValidator(validate_request_id),
]


class Feedback(BaseModel):
    """Ground truth of one predicted row, by the request id the prediction answered with."""

    model_config = ConfigDict(extra="forbid")
    request_id: RequestId
    label: Label


class FeedbackBatch(BaseModel):
    """Many labels in one request."""

    model_config = ConfigDict(extra="forbid")
    labels: Annotated[list[Feedback], Field(min_length=1, max_length=MAX_LABELS)]


class FeedbackStored(BaseModel):
    """What became of the labels: only the first label of a logged prediction is kept."""

    stored: int = Field(description="labels stored now")
    matched: int = Field(description="labels whose request id has a logged prediction")
    pending: int = Field(
        description=f"labels whose prediction is not logged yet: held (at most {PENDING_MAX}) and "
        f"stored once it is, dropped after {PENDING_TTL_S:.0f} s"
    )
    unknown: int = Field(description="labels refused: no logged prediction and no room to hold them")
    already_labelled: int = Field(description="labels of request ids labelled before: the first is kept")


def _inline(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its ``$defs`` written in place (FastAPI's document has no room for them)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    text = json.dumps(schema)
    for name, sub in defs.items():
        text = text.replace(json.dumps({"$ref": f"#/$defs/{name}"}), json.dumps(sub))
    out: dict[str, Any] = json.loads(text)
    return out


def native_label(text: str) -> Any:
    """A class label as the service answers it: ``"1"`` -> 1, ``"0.5"`` -> 0.5, ``"yes"`` -> "yes"."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def feedback_body(classes: Sequence[Any] | None, is_classifier: bool) -> dict[str, Any]:
    """The documented body of ``/feedback``: a classifier's label is one of its classes (as served, or as text)."""
    one, many = _inline(Feedback), _inline(FeedbackBatch)
    if is_classifier and classes:
        labels: list[Any] = []
        for c in classes:
            for value in (native_label(str(c)), str(c)):
                if value not in labels:
                    labels.append(value)
        label = {"enum": labels}
        one["properties"]["label"] = label
        many["properties"]["labels"]["items"]["properties"]["label"] = label
    return {"oneOf": [one, many]}


class LabelStore(Protocol):
    """What of :class:`.store.Store` the labels need."""

    def known_request_ids(self, request_ids: Sequence[str]) -> set[str]: ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def add_feedback(self, labels: Any, *, source: str, ts: float | None = None) -> int: ...


def labelled(store: LabelStore, request_ids: Sequence[str]) -> set[str]:
    """The request ids among ``request_ids`` that have a label already."""
    found: set[str] = set()
    for start in range(0, len(request_ids), 500):
        chunk = list(request_ids[start : start + 500])
        marks = ", ".join(f":r{i}" for i in range(len(chunk)))
        params = {f"r{i}": rid for i, rid in enumerate(chunk)}
        rows = store.query(f"SELECT request_id FROM feedback WHERE request_id IN ({marks})", params)
        found.update(str(r[0]) for r in rows)
    return found


def store_first(
    store: LabelStore, labels: Mapping[str, Any], *, source: str = "api"
) -> tuple[set[str], set[str], int]:
    """Store the labels of logged predictions that have none yet.

    Returns:
        (request ids with a logged prediction, those labelled before, labels stored now).
    """
    ids = list(labels)
    logged = store.known_request_ids(ids)
    before = labelled(store, [i for i in ids if i in logged])
    new = [(i, labels[i]) for i in ids if i in logged and i not in before]
    return logged, before, store.add_feedback(new, source=source) if new else 0


class PendingLabels:
    """Labels that came before their prediction was logged: held, bounded, stored later or dropped.

    Args:
        on_expired: Called with the number of labels dropped (their prediction never logged).
        limit: Most labels held.
        ttl_s: How long a label is held.
    """

    def __init__(
        self,
        on_expired: Callable[[int], None] | None = None,
        *,
        limit: int = PENDING_MAX,
        ttl_s: float = PENDING_TTL_S,
    ) -> None:
        self.items: dict[str, tuple[Any, float]] = {}
        self.on_expired = on_expired
        self.limit = limit
        self.ttl_s = ttl_s
        self._lock = threading.Lock()

    def add(self, labels: Mapping[str, Any]) -> int:
        """Hold what fits (a request id held already keeps its first label); how many were taken."""
        now = time.time()
        taken = 0
        with self._lock:
            for rid, label in labels.items():
                if rid in self.items:
                    taken += 1
                elif len(self.items) < self.limit:
                    self.items[rid] = (label, now)
                    taken += 1
        return taken

    def retry(self, store: LabelStore) -> None:
        """Store the held labels whose prediction is logged now; drop those held too long."""
        with self._lock:
            held = dict(self.items)
        if not held:
            return
        logged, _, _ = store_first(store, {rid: label for rid, (label, _) in held.items()})
        now = time.time()
        expired = [rid for rid, (_, at) in held.items() if rid not in logged and now - at > self.ttl_s]
        with self._lock:
            for rid in [*logged, *expired]:
                self.items.pop(rid, None)
        if expired and self.on_expired is not None:
            self.on_expired(len(expired))
