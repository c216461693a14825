"""The served OpenAPI document, made to tell the truth about ``POST /predict``.

BentoML documents the API's internal input: ``{"rows": [...]}`` of rows that carry the
request id the guard adds. The guard (:mod:`.guard`) rewrites ``GET /docs.json`` with
:func:`document`: one row, a list of rows or ``{"rows": [...]}`` of the strict row model,
and every status it answers. :func:`error_response` documents the one error body
(:data:`ERROR_SCHEMA`) the guard and the service's other routes answer with.

Copied into the Bento with the rest of ``serving/``: it imports nothing from nb2prod.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from .schema import REQUEST_ID_FIELD

# X-Request-ID as the guard takes it: room for "-i" per row of a batch
HEADER_REQUEST_ID = r"^[A-Za-z0-9._-]{1,56}$"


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Nb2prodError",
    "description": "A refused or failed request: what, why (reason), and which field (detail).",
    "required": ["error", "reason", "message"],
    "properties": {
        "error": {"type": "string", "description": "invalid_input, unavailable, unauthorized, ..."},
        "reason": {"type": "string", "description": "e.g. missing_field, not_finite, too_large"},
        "message": {"type": "string", "description": "the first problem, naming the field"},
        "request_id": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {
                    "field": {"type": "string"},
                    "problem": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}

PREDICTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Prediction",
    "required": ["request_id", "prediction", "model_version"],
    "properties": {
        "request_id": {"type": "string", "description": "send it back with the label to /feedback"},
        "prediction": {"description": "the model's answer (a class label or a number)"},
        "model_version": {
            "type": "string",
            "description": "the registered version that answered (a shadow version never answers: /admin/shadow)",
        },
        "probabilities": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "class -> probability (classifiers)",
        },
    },
}


def error_response(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is :data:`ERROR_SCHEMA`."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


def predict_operation(row: type[BaseModel], max_rows: int, base: Mapping[str, Any]) -> dict[str, Any]:
    """The ``POST /predict`` operation as the guard serves it: three body forms, every status."""
    row_schema = row.model_json_schema()
    row_schema.pop("$defs", None)  # a row is flat: every column a scalar
    rows = {"type": "array", "items": row_schema, "minItems": 1, "maxItems": max_rows}
    body = {
        "oneOf": [
            row_schema,
            rows,
            {
                "type": "object",
                "title": "Rows",
                "properties": {"rows": rows},
                "required": ["rows"],
                "additionalProperties": False,
            },
        ]
    }
    keep = {k: v for k, v in base.items() if k in ("tags", "x-bentoml-name", "operationId", "description")}
    return {
        **keep,
        "summary": 'Predict one row, a list of rows, or {"rows": [...]}',
        "parameters": [
            {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": HEADER_REQUEST_ID},
                "description": "the request id to answer with (else one is made)",
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {
                "description": "one prediction per row, in order",
                "content": {"application/json": {"schema": {"type": "array", "items": PREDICTION_SCHEMA}}},
            },
            "400": error_response("not JSON, empty, or not a row / list of rows"),
            "413": error_response("body or row count over the service's limits"),
            "415": error_response("content type other than application/json (pickle is refused)"),
            "422": error_response("a row breaks the contract: the field and the problem are named"),
            "503": error_response("the model is not loaded, or no carried version could answer"),
        },
    }


def document(doc: dict[str, Any], path: str, row: type[BaseModel], max_rows: int) -> None:
    """Rewrite ``doc`` (BentoML's OpenAPI document) in place so ``path`` tells the truth.

    BentoML documents the API's internal input (``{"rows": [...]}`` of rows that carry the
    request id); the guard accepts three body forms, refuses the request-id field and answers
    400/413/415/422/503. Internal schemas that mention the request-id field are dropped.
    """
    paths = doc["paths"]
    base = paths.get(path, {}).get("post", {})
    paths[path] = {"post": predict_operation(row, max_rows, base)}
    schemas = doc.get("components", {}).get("schemas", {})
    internal = [name for name, schema in schemas.items() if REQUEST_ID_FIELD in json.dumps(schema)]
    for name in internal:
        del schemas[name]
    # and whatever referred to them (BentoML's API input wrapper)
    refs = tuple(f"#/components/schemas/{name}" for name in internal)
    for name in [n for n, sc in schemas.items() if any(r in json.dumps(sc) for r in refs)]:
        del schemas[name]
