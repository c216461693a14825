"""Integrity of what a Bento serves: its model files and its own source, checked before use.

Model files: the capture records ``sha256_tree`` of the saved model, export and the loop
check a download against it, and the service checks its own copy with :func:`verify_tree`
before deserialising anything.

The service's source (``service.py``, ``nb2prod_manifest.json``, this package): export
writes ``nb2prod_source.json``, the sha256 of every file of the build context
(:func:`source_listing`), and the Bento version is ``v<model version>-<first 12 hex of the
sha256 of that listing>`` (:func:`listing_hash`). At start the service checks, before any
model is loaded (:func:`verify_source`), that the listing hashes to the version in its own
tag and that every file matches the listing; a missing, changed or unlisted file keeps every
model not ready and the log names the file.

Threat model. The anchor is the Bento tag: the version the operator deploys
(``bentoml serve NAME:VERSION``, the store's folder name) is not a file inside the Bento,
so editing the manifest (a column removed, a category added) and then fixing the listing
changes the hash and no longer matches the tag; renaming the folder to a matching tag changes
the tag the operator runs. This catches careless edits and tampering with the data files of a
built Bento. It does not stop someone who can rewrite the Python the service runs (an edited
``service.py`` or runtime can skip any in-process check): that is caught here only while the
check itself is intact, and is prevented by deploying from a read-only store or image, or by
checking the Bento from outside before serving it (:func:`verify_source` works on any
``src/`` folder). Where the Bento is not served from a store folder named by its version (a
container's ``/home/bentoml/bento``), the version is read from ``bento.yaml`` beside
``src/`` (and, for the source folder ``bentos/NAME/`` served in development, from the
manifest's stamp): anchors a tamperer of the folder can also edit. The build time, Bento version
and alias stamped into the manifest are not hashed (the same content exported as NAME/1 and
NAME@champion is one Bento). The hash is truncated to 48 bits in the tag: enough against
accidents and casual edits, not against a search for a second preimage.

Copied into every Bento with the rest of this package, so it imports nothing from nb2prod.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .manifest import MANIFEST_FILE

SOURCE_LIST = "nb2prod_source.json"
# BentoML rewrites bentofile.yaml into src/ in its own words: listed (its pins change the
# tag) but not compared in the built Bento.
BENTOFILE = "bentofile.yaml"
# Manifest keys that do not change what is served: NAME/1 and NAME@champion (-> 1) give the
# same Bento, whenever they were exported.
UNHASHED_KEYS = ("exported_at", "bento_version", "alias")
_VERSION = re.compile(r"^v[0-9]+-(?P<hash>[0-9a-f]{12})$")


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


def _text_digest(rel: str, text: str) -> str:
    if rel == MANIFEST_FILE:
        data: dict[str, Any] = json.loads(text)
        for key in UNHASHED_KEYS:
            data.pop(key, None)
        text = json.dumps(data, sort_keys=True)
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"


def source_listing(
    files: Mapping[str, str], artifact_sha256: Mapping[str, Mapping[str, str]]
) -> dict[str, Any]:
    """What a Bento serves: the sha256 of every build-context file, and of every model file.

    The manifest is hashed without its build stamps (:data:`UNHASHED_KEYS`).
    """
    return {
        "files": {rel: _text_digest(rel, files[rel]) for rel in sorted(files) if rel != SOURCE_LIST},
        "artifacts": {v: dict(sorted(h.items())) for v, h in sorted(artifact_sha256.items())},
    }


def listing_hash(listing: Mapping[str, Any]) -> str:
    """The hex sha256 of a source listing (its first 12 characters are in the Bento version)."""
    return hashlib.sha256(json.dumps(listing, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _bento_version(src: Path) -> str:
    """The version of the Bento ``src`` belongs to: its store folder's name, else bento.yaml's."""
    name = src.resolve().parent.name
    if _VERSION.match(name):
        return name
    bento_yaml = src.parent / "bento.yaml"
    if bento_yaml.is_file():
        for line in bento_yaml.read_text(encoding="utf-8").splitlines():
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    # the source folder itself (bentos/NAME/, served in development): the manifest's stamp
    try:
        stamped = json.loads((src / MANIFEST_FILE).read_text(encoding="utf-8")).get("bento_version")
    except (OSError, ValueError, AttributeError):
        stamped = None
    return str(stamped or name)


def verify_source(src: Path, *, version: str | None = None) -> None:
    """The Bento source under ``src`` is what was built as ``version`` (default: its own tag).

    Raises:
        IntegrityError: naming the listing (it does not hash to the tag) or the first file
            that is missing, changed or not listed.
    """
    listing_path = src / SOURCE_LIST
    if not listing_path.is_file():
        raise IntegrityError(
            f"{SOURCE_LIST} is missing: this Bento's source cannot be checked (re-export it with nb2prod export)"
        )
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
        files: dict[str, str] = dict(listing["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{SOURCE_LIST} cannot be read: {exc}") from None
    version = version or _bento_version(src)
    match = _VERSION.match(version)
    if match is None:
        raise IntegrityError(
            f"the Bento version {version!r} carries no content hash to check {SOURCE_LIST} against"
        )
    got = listing_hash(listing)[:12]
    if got != match.group("hash"):
        raise IntegrityError(
            f"{SOURCE_LIST} hashes to {got}, not to the Bento version {version}: it was edited"
        )
    for rel, want in sorted(files.items()):
        if rel == BENTOFILE:
            continue
        path = src / rel
        if not path.is_file():
            raise IntegrityError(f"file {rel} of the Bento source is missing")
        try:
            text = path.read_text(encoding="utf-8")
            digest = _text_digest(rel, text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise IntegrityError(f"file {rel} of the Bento source cannot be read: {exc}") from None
        if digest != want:
            raise IntegrityError(f"file {rel} of the Bento source differs from what was built")
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if "__pycache__" not in path.parts and rel not in files:
            raise IntegrityError(f"file {rel} is in the Bento source but was not built into it")
