"""Integrity of model files: sha256 of a file and of a tree, and the check before loading.

The one implementation of both: the capture records ``sha256_tree`` of the saved model,
export and the loop check a download against it, and the service checks its own copy
with :func:`verify_tree` before deserialising anything. Copied into every Bento with the
rest of this package, so it imports nothing from nb2prod.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path


class IntegrityError(Exception):
    """A model file does not match the hash recorded at capture."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def sha256_tree(root: Path) -> dict[str, str]:
    """``sha256:<hex>`` of every file under ``root``, keyed by POSIX relative path."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    }


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
