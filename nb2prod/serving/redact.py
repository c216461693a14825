"""Credentials out of store URLs before they are shown, logged or recorded: the one redaction.

``postgresql+psycopg://user:secret@host/db`` becomes ``postgresql+psycopg://user:***@host/db``;
the user part of an HTTP URL without a password (``https://TOKEN@host``) is hidden whole, and secrets given as
query parameters (``?password=...``, ``token``) too. Used by the service (its log, /metadata)
and by nb2prod (CLI output, MLflow tags, the manifest). Copied into every Bento with the rest
of ``serving/``: it imports nothing from nb2prod.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_uri"]

MASK = "***"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_PARAMS = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|secret|token|access_token|api_key|sslpassword)=)[^&;#]*"
)


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the user part of ``rest`` (after ``scheme://``), or -1."""
    if rest.startswith("/"):
        return -1  # no authority (sqlite:////path): an '@' is part of the path
    query = len(rest)
    for sep in "?#":
        idx = rest.find(sep)
        if idx != -1:
            query = min(query, idx)
    last = rest.rfind("@", 0, query)
    # user:password@: the password may hold unencoded '@', '/' or ':': up to the last '@'
    if last != -1 and ":" in rest[:last].split("@", 1)[0]:
        return last
    end = query
    idx = rest.find("/")
    if idx != -1:
        end = min(end, idx)
    return rest.rfind("@", 0, end)


def redact_uri(uri: str) -> str:
    """``uri`` with its password (or token) replaced by ``***``; everything else unchanged."""
    text = str(uri)
    scheme = _SCHEME.match(text)
    if scheme:
        rest = text[scheme.end() :]
        at = _userinfo_end(rest)
        if at > 0:
            user, has_password, _ = rest[:at].partition(":")
            if has_password:
                shown = f"{user}:{MASK}" if user else MASK
            else:  # https://TOKEN@host carries a token; postgresql://user@host only a name
                shown = MASK if scheme.group(0).lower().startswith("http") else user
            text = f"{scheme.group(0)}{shown}{rest[at:]}"
    return _SECRET_PARAMS.sub(lambda m: m.group(1) + MASK, text)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it passed through :func:`redact_uri`."""
    return _URL_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), str(text))
