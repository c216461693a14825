"""File and directory digests (schemes in :mod:`nb2prod.capture.hashing`'s docstring).

A file digest is the XXH3-128 of its bytes (``xxhsum -H2`` gives the same);
a directory digest covers its regular files' relative paths, sizes and
digests. Files are streamed in 1 MiB pieces.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import xxhash

from nb2prod.capture.hash_encoding import ALGORITHM, fmt_digest, u64
from nb2prod.exceptions import DataError

__all__ = ["digest_directory", "digest_file", "directory_digest"]

_FILE_CHUNK = 1 << 20


def _file_digest_bytes(path: Path) -> tuple[bytes, int]:
    h = xxhash.xxh3_128()
    buf = bytearray(_FILE_CHUNK)
    view = memoryview(buf)
    size = 0
    try:
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
    except OSError as e:
        raise DataError(
            f"cannot read {path}: {e.strerror or e}", hint="check the path and its permissions"
        ) from e
    return h.digest(), size


def _check_path(path: str | os.PathLike[str], want: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"no such {want}: {p}", hint="check the path (relative paths start at the notebook's cwd)"
        )
    if want == "file" and not p.is_file():
        raise DataError(f"{p} is not a regular file", hint="use digest_directory() for a directory")
    if want == "directory" and not p.is_dir():
        raise DataError(f"{p} is not a directory", hint="use digest_file() for a file")
    return p


def digest_file(path: str | os.PathLike[str]) -> str:
    """Digest a file's bytes, streamed in 1 MiB pieces (equals ``xxhsum -H2``).

    Args:
        path: The file.

    Returns:
        ``"xxh3_128:<32 hex>"``.
    """
    d, _ = _file_digest_bytes(_check_path(path, "file"))
    return f"{ALGORITHM}:{d.hex()}"


def directory_digest(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Digest a directory tree and count what it covered.

    Args:
        path: The directory.

    Returns:
        ``(digest, number of files, total bytes)``; the digest as in :func:`digest_directory`.
    """
    root = _check_path(path, "directory")
    files: list[tuple[bytes, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in filenames:
            full = Path(dirpath) / fn
            if full.is_file():
                rel = full.relative_to(root).as_posix()
                files.append((rel.encode("utf-8", "surrogatepass"), full))
    files.sort(key=lambda t: t[0])
    h = xxhash.xxh3_128(b"nb2prod-dir-v1\0")
    h.update(u64(len(files)))
    total = 0
    for rel_bytes, full in files:
        d, size = _file_digest_bytes(full)
        total += size
        h.update(struct.pack("<I", len(rel_bytes)) + rel_bytes + u64(size) + d)
    return fmt_digest(h), len(files), total


def digest_directory(path: str | os.PathLike[str]) -> str:
    """Digest a directory: sorted relative paths, sizes and per-file digests (``nb2prod-dir-v1``).

    Args:
        path: The directory.

    Returns:
        ``"xxh3_128:<32 hex>"``.
    """
    return directory_digest(path)[0]
