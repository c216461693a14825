"""The input guard: an ASGI middleware in front of ``POST /predict``.

It does what BentoML's own request parsing does not (see FIELD-NOTES): refuses any
content type but JSON (pickle above all), caps the body size, refuses NaN and inf
where the training data had none, refuses unknown fields, and answers every bad
request with a 4xx JSON body that names the field and the problem, without echoing
the payload and without a traceback in the log. A valid request is passed on to the
BentoML API as ``{"rows": [...]}`` with a request id on every row.

Accepted bodies: one row ``{...}``, a list of rows ``[{...}, ...]``, or ``{"rows": [...]}``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .schema import REQUEST_ID_FIELD, describe_errors

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A refused oversized body is still read (and dropped) up to this many times the limit.
DRAIN_FACTOR = 16
PICKLE_TYPES = ("pickle", "python-pickle", "x-python-pickle", "x-pickle", "octet-stream")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,56}$")  # room for "-i" per row of a batch


class BadRequest(Exception):
    """A request the guard refuses: HTTP status, reason label, message, field problems."""

    def __init__(
        self, status: int, reason: str, message: str, detail: Sequence[Mapping[str, str]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.detail = list(detail)


class InputGuard:
    """ASGI middleware validating ``POST {path}`` against the strict row model.

    Args:
        app: The wrapped ASGI app (BentoML's).
        row: The strict pydantic row model (``extra="forbid"``).
        kinds: Column name -> kind, for messages.
        path: The route to guard.
        max_body_bytes: Larger bodies get 413.
        max_rows: More rows in one request get 413.
        on_invalid: Called with the reason and the first field named of every refused request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        row: type[BaseModel],
        kinds: Mapping[str, str],
        path: str = "/predict",
        max_body_bytes: int = 1 << 20,
        max_rows: int = 1000,
        on_invalid: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.app = app
        self.path = path
        self.kinds = dict(kinds)
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.on_invalid = on_invalid
        self.rows_adapter = TypeAdapter(list[row])  # type: ignore[valid-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("path") != self.path or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        try:
            body = await self._read(headers, receive)
            forwarded = self._validate(body, request_id)
        except BadRequest as bad:
            if self.on_invalid is not None:
                self.on_invalid(bad.reason, bad.detail[0].get("field") if bad.detail else None)
            await _json_response(send, bad.status, _error_body(bad, request_id), request_id)
            return
        await self._forward(scope, send, forwarded, request_id)

    async def _read(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if any(ctype.endswith(p) for p in PICKLE_TYPES):
            raise BadRequest(
                415, "pickle_refused", f"content type {ctype!r} is refused: send JSON (application/json)"
            )
        if ctype != "application/json":
            shown = ctype[:60] or "none"
            raise BadRequest(
                415, "content_type", f"content type {shown!r} is not accepted: use application/json"
            )
        too_large = BadRequest(413, "too_large", f"body larger than {self.max_body_bytes} bytes")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            if int(length) <= self.max_body_bytes * DRAIN_FACTOR:
                await _drain(receive)
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "disconnected", "client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await _drain(receive, self.max_body_bytes * DRAIN_FACTOR - size)
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not body.strip():
            raise BadRequest(400, "empty_body", "the body is empty: send one row as a JSON object, or a list")
        return body

    def _validate(self, body: bytes, request_id: str) -> bytes:
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=float)
        except UnicodeDecodeError:
            raise BadRequest(400, "malformed_json", "the body is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise BadRequest(
                400,
                "malformed_json",
                f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            ) from None
        except RecursionError:
            raise BadRequest(400, "malformed_json", "the body is nested too deeply") from None
        if isinstance(data, dict) and set(data) == {"rows"}:
            rows, prefix = data["rows"], "rows"
        elif isinstance(data, dict):
            rows, prefix = [data], "row"
        elif isinstance(data, list):
            rows, prefix = data, "rows"
        else:
            raise BadRequest(
                400,
                "not_an_object",
                f"expected a JSON object (one row) or a list of rows, got {type(data).__name__}",
            )
        if not isinstance(rows, list):
            raise BadRequest(400, "not_an_object", "'rows' must be a list of objects")
        if not rows:
            raise BadRequest(400, "empty_batch", "the batch is empty: send at least one row")
        if len(rows) > self.max_rows:
            raise BadRequest(
                413, "too_many_rows", f"{len(rows)} rows in one request; the limit is {self.max_rows}"
            )
        try:
            parsed = self.rows_adapter.validate_python(rows)
        except ValidationError as exc:
            reason, detail = describe_errors(exc, self.kinds, prefix=prefix)
            if prefix == "row":
                for item in detail:
                    item["field"] = item["field"].replace("row[0]", "row", 1)
            first = detail[0] if detail else {"field": prefix, "problem": "invalid"}
            raise BadRequest(422, reason, f"{first['field']}: {first['problem']}", detail) from None
        out = []
        for i, item in enumerate(parsed):
            values = item.model_dump(mode="python")
            # every row gets its own id (feedback names rows): the request's id, plus -i in a batch
            values[REQUEST_ID_FIELD] = request_id if len(parsed) == 1 else f"{request_id}-{i}"
            out.append(values)
        return json.dumps({"rows": out}, default=str).encode()

    async def _forward(self, scope: Scope, send: Send, body: bytes, request_id: str) -> None:
        headers = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        inner = dict(scope, headers=headers)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(inner, replay, send_with_id)


async def _drain(receive: Receive, limit: int | None = None) -> None:
    """Read and drop the rest of a refused body, so the client gets to read the 413 instead of a
    broken pipe; bodies beyond ``limit`` bytes are cut off (the connection then closes)."""
    seen = 0
    while limit is None or seen <= limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _error_body(bad: BadRequest, request_id: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": "invalid_input",
        "reason": bad.reason,
        "message": bad.message,
        "request_id": request_id,
    }
    if bad.detail:
        body["detail"] = bad.detail
    return body


async def _json_response(send: Send, status: int, payload: Mapping[str, Any], request_id: str) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
