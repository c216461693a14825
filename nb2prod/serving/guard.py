"""The input guard: an ASGI middleware in front of ``POST /predict`` (and the other POSTs).

It does what BentoML's own request parsing does not (see FIELD-NOTES): refuses any
content type but JSON (pickle above all), caps the body size, refuses NaN and inf
where the training data had none, refuses unknown fields, and answers every bad
request with a 4xx JSON body that names the field and the problem, without echoing
the payload and without a traceback in the log. A valid request is passed on to the
BentoML API as ``{"rows": [...]}`` with a request id on every row.

Accepted bodies: one row ``{...}``, a list of rows ``[{...}, ...]``, or ``{"rows": [...]}``.

Around that:

* an oversized body is read and dropped (for at most ``drain_seconds``, as nginx's
  lingering close) before the 413, so a client that writes its whole body before reading
  (Python's urllib) reads the 413 instead of a connection reset;
* unknown keys are counted before pydantic sees a row (a 100,000-key row costs a set
  lookup per key, not 100,000 errors), and large bodies are parsed off the event loop;
* a 5xx of the API (every carried version raised) becomes a 503 with a JSON body;
* ``capped_paths`` (``/feedback``, ``/admin/*``) get the same content-type check and
  body cap, then go on to their FastAPI routes untouched;
* ``GET /docs.json`` is rewritten to say what ``/predict`` really accepts and answers
  (:func:`predict_operation`);
* :func:`install_header_timeout` closes connections whose request head never completes.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from .openapi import HEADER_REQUEST_ID, document
from .schema import REQUEST_ID_FIELD, describe_errors
from .store import event_field

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A refused oversized body is still read (and dropped) for at most this long, then the
# connection is closed (nginx's lingering_time is 30 s).
DRAIN_SECONDS = 10.0
# Bodies larger than this are parsed and validated in a thread, off the event loop.
PARSE_OFF_LOOP_BYTES = 64 << 10
# A connection whose request head is not complete this long after it opened (or after its
# last answer) is closed.
HEADER_TIMEOUT_S = 10.0
# The API marks a row no carried version could answer with this key; the guard answers that
# request with a 503 JSON body (the marker never reaches a client).
UNANSWERED = "nb2prod_unanswered"
PICKLE_TYPES = ("pickle", "python-pickle", "x-python-pickle", "x-pickle", "octet-stream")
_REQUEST_ID = re.compile(HEADER_REQUEST_ID)  # room for "-i" per row of a batch


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
        self.close = False  # answer with "Connection: close" (the body was not read to its end)


class InputGuard:
    """ASGI middleware validating ``POST {path}`` against the strict row model.

    Args:
        app: The wrapped ASGI app (BentoML's).
        row: The strict pydantic row model (``extra="forbid"``).
        kinds: Column name -> kind, for messages.
        path: The route to guard.
        max_body_bytes: Larger bodies get 413.
        max_rows: More rows in one request get 413.
        on_invalid: Called with the reason and the column of the first field named
            (:func:`~.store.event_field`) of every refused request.
        capped_paths: Other POST routes that get the content-type check and the body cap only.
        docs_path: The OpenAPI document rewritten to describe ``path`` truthfully.
        drain_seconds: How long a refused oversized body is read and dropped.
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
        capped_paths: Sequence[str] = (),
        docs_path: str = "/docs.json",
        drain_seconds: float = DRAIN_SECONDS,
    ) -> None:
        self.app = app
        self.path = path
        self.row = row
        self.kinds = dict(kinds)
        self.max_body_bytes = max_body_bytes
        self.max_rows = max_rows
        self.on_invalid = on_invalid
        self.capped_paths = frozenset(capped_paths)
        self.docs_path = docs_path
        self.drain_seconds = drain_seconds
        self.fields = frozenset(row.model_fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path"), scope.get("method")
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
        elif method == "POST" and path == self.path:
            await self._predict(scope, receive, send)
        elif method == "POST" and path in self.capped_paths:
            await self._capped(scope, receive, send)
        elif method == "GET" and path == self.docs_path:
            await self._docs(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        try:
            body = await self._read(headers, receive)
            if len(body) > PARSE_OFF_LOOP_BYTES:
                forwarded = await asyncio.to_thread(self._validate, body, request_id)
            else:
                forwarded = self._validate(body, request_id)
        except BadRequest as bad:
            if self.on_invalid is not None:
                self.on_invalid(bad.reason, event_field(bad.detail[0].get("field")) if bad.detail else None)
            await _json_response(send, bad.status, _error_body(bad, request_id), request_id, close=bad.close)
            return
        await self._forward(scope, send, forwarded, request_id)

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A capped route: content type and size checked, the body replayed to the app as it came."""
        try:
            body = await self._read(_headers(scope), receive, allow_empty=True)
            if body.strip():
                _parse(body)  # 400 naming the problem, as /predict; the route parses it again
        except BadRequest as bad:
            if self.on_invalid is not None:
                self.on_invalid(bad.reason, None)
            payload = _error_body(bad, None)
            await _json_response(send, bad.status, payload, None, close=bad.close)
            return
        await self.app(scope, _replay(body), send)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's OpenAPI document with ``path``'s operation replaced by the truthful one."""
        start: Message = {}
        chunks: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, keep)
        body = b"".join(chunks)
        if start.get("status") == 200:
            try:
                doc = json.loads(body)
                document(doc, self.path, self.row, self.max_rows)
                body = json.dumps(doc).encode()
            except (ValueError, KeyError, TypeError, AttributeError):
                pass  # not the document expected: serve it as it came
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": start.get("status", 500), "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read(
        self, headers: Mapping[str, str], receive: Receive, *, allow_empty: bool = False
    ) -> bytes:
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        refused = None
        if any(ctype.endswith(p) for p in PICKLE_TYPES):
            refused = BadRequest(
                415, "pickle_refused", f"content type {ctype[:60]!r} is refused: send JSON (application/json)"
            )
        elif ctype != "application/json":
            shown = ctype[:60] or "none"
            refused = BadRequest(
                415, "content_type", f"content type {shown!r} is not accepted: use application/json"
            )
        if refused is not None:
            refused.close = not await _drain(receive, self.drain_seconds)
            raise refused
        too_large = BadRequest(
            413,
            "too_large",
            f"body larger than {self.max_body_bytes} bytes: split it into smaller requests",
        )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            too_large.close = not await _drain(receive, self.drain_seconds)
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
                    too_large.close = not await _drain(receive, self.drain_seconds)
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not allow_empty and not body.strip():
            raise BadRequest(400, "empty_body", "the body is empty: send one row as a JSON object, or a list")
        return body

    def _validate(self, body: bytes, request_id: str) -> bytes:
        data = _parse(body)
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
        parsed = []
        for i, candidate in enumerate(rows):
            where = "row" if prefix == "row" else f"rows[{i}]"
            if isinstance(candidate, dict) and len(candidate) > len(self.fields):
                self._refuse_unknown(candidate, where)
            try:
                parsed.append(self.row.model_validate(candidate))
            except ValidationError as exc:
                reason, detail = describe_errors(exc, self.kinds, prefix=where)
                first = detail[0] if detail else {"field": where, "problem": "invalid"}
                raise BadRequest(422, reason, f"{first['field']}: {first['problem']}", detail) from None
        out = []
        for i, item in enumerate(parsed):
            values = item.model_dump(mode="python")
            # every row gets its own id (feedback names rows): the request's id, plus -i in a batch
            values[REQUEST_ID_FIELD] = request_id if len(parsed) == 1 else f"{request_id}-{i}"
            out.append(values)
        # pydantic-core's encoder: ~4x faster than json.dumps, and NaN/±inf stay literals
        # (where the contract allows them) for the API's row model to read back
        return pydantic_core.to_json({"rows": out}, fallback=str)

    def _refuse_unknown(self, row: Mapping[str, Any], where: str) -> None:
        """422 for a row with more keys than the contract has columns, naming a few unknown ones."""
        unknown = [k for k in row if k not in self.fields]
        shown = [k if len(k) <= 60 else k[:57] + "..." for k in unknown[:3]]
        detail = [
            {"field": f"{where}.{k}", "problem": "Extra inputs are not permitted", "reason": "extra_field"}
            for k in shown
        ]
        message = (
            f"{where}: {len(unknown)} unknown fields ({', '.join(shown)}{', ...' if len(unknown) > 3 else ''}); "
            f"a row has at most the {len(self.fields)} columns of the contract"
        )
        raise BadRequest(422, "extra_field", message, detail)

    async def _forward(self, scope: Scope, send: Send, body: bytes, request_id: str) -> None:
        headers = [
            (k, v)
            for k, v in scope.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        inner = dict(scope, headers=headers)
        start: Message = {}
        chunks: list[bytes] = []
        done = False

        async def answer(message: Message) -> None:
            # the whole answer is held (it is at most max_rows small items) to look for the marker
            nonlocal done
            if done:
                return
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            done = True
            body = b"".join(chunks)
            status = int(start.get("status", 500))
            if status >= 500 or (status == 200 and UNANSWERED.encode() in body):
                # every carried version raised on a row (or worse): 503 with a JSON body, never a bare 500
                await _json_response(send, 503, _unavailable(request_id), request_id)
                return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers += [(b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(inner, _replay(body), answer)


def _parse(body: bytes) -> Any:
    """The JSON value of ``body``; BadRequest 400 ``malformed_json`` saying where it breaks.

    pydantic-core's parser first (~3x faster than json.loads on a row); anything it refuses
    (or nests deeper than it goes) is parsed again by json, whose answer and messages decide.
    """
    try:
        return pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError:
        pass
    try:
        return json.loads(body.decode("utf-8"), parse_constant=float)
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


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _replay(body: bytes) -> Receive:
    """A ``receive`` that hands the app ``body`` once, then a disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _drain(receive: Receive, seconds: float) -> bool:
    """Read and drop the rest of a refused body, so the client gets to read the 413 instead of a
    connection reset; True when the body was read to its end within ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return False
        if message["type"] == "http.disconnect":
            return False
        if not message.get("more_body", False):
            return True


def _error_body(bad: BadRequest, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": "invalid_input", "reason": bad.reason, "message": bad.message}
    if request_id is not None:
        body["request_id"] = request_id
    if bad.detail:
        body["detail"] = bad.detail
    return body


def _unavailable(request_id: str) -> dict[str, Any]:
    return {
        "error": "unavailable",
        "reason": "no_model_answered",
        "message": "no model version could answer this request: the service log and /metadata say why",
        "request_id": request_id,
    }


async def _json_response(
    send: Send, status: int, payload: Mapping[str, Any], request_id: str | None, *, close: bool = False
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ------------------------------------------------------------------------------ the header timeout


def install_header_timeout(seconds: float = HEADER_TIMEOUT_S) -> list[str]:
    """Close a connection whose request head is not complete ``seconds`` after it opened or after
    its last answer (uvicorn has no such timeout: a client that never finishes its headers
    holds the connection forever). Patches uvicorn's HTTP protocols in this process; returns
    the names of those patched (none when uvicorn is not importable)."""
    patched = []
    for module, name in (
        ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
        ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    ):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        _patch_protocol(cls, seconds)
        patched.append(name)
    return patched


def _patch_protocol(cls: Any, seconds: float) -> None:
    cls._nb2prod_header_timeout = seconds
    if getattr(cls, "_nb2prod_patched", False):
        return
    made, complete, lost = cls.connection_made, cls.on_response_complete, cls.connection_lost

    def arm(self: Any, idle: float = 0.0) -> None:
        timer = getattr(self, "_nb2prod_timer", None)
        if timer is not None:
            timer.cancel()
        # after an answer the connection may idle for the keep-alive time before its next request
        limit = max(float(cls._nb2prod_header_timeout), idle)
        # the cycle at arming time: a new request head creates a new cycle
        self._nb2prod_timer = self.loop.call_later(limit, check, self, getattr(self, "cycle", None))

    def check(self: Any, cycle: Any) -> None:
        transport = getattr(self, "transport", None)
        if transport is None or transport.is_closing():
            return
        current = getattr(self, "cycle", None)
        if current is cycle and (current is None or current.response_complete):
            transport.close()  # no complete request head since the timer was armed

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        arm(self)

    def on_response_complete(self: Any) -> None:
        complete(self)
        arm(self, float(getattr(self, "timeout_keep_alive", 0) or 0))

    def connection_lost(self: Any, exc: Exception | None) -> None:
        timer = getattr(self, "_nb2prod_timer", None)
        if timer is not None:
            timer.cancel()
        lost(self, exc)

    cls.connection_made = connection_made
    cls.on_response_complete = on_response_complete
    cls.connection_lost = connection_lost
    cls._nb2prod_patched = True
