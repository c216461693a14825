"""Small helpers shared by the capture records: a tagged sha256 and reading a stored field."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from nb2prod.exceptions import UsageError


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def require_field(data: Mapping[str, Any], key: str, what: str) -> Any:
    """Return ``data[key]``, or raise a :class:`UsageError` naming the field and the record.

    Args:
        data: A dict written by ``<what>.to_dict()``.
        key: The field.
        what: The record's class name, for the message.
    """
    try:
        return data[key]
    except (KeyError, TypeError):
        raise UsageError(
            f"not a stored {what}: field '{key}' is missing",
            hint=f"pass the dict written by {what}.to_dict()",
        ) from None
