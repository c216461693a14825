"""The monitor's write-ahead spool: every answered prediction on local disk until the store has it.

Each writer process (one per BentoML worker) appends every prediction row, before the
request is answered, to its own segment file ``<host>-<pid>-<random>.jsonl`` in the spool
directory (:func:`spool_dir`: ``$NB2PROD_SPOOL_DIR``, else ``<store file>.spool/`` beside a
SQLite store, else ``spool/<digest of the URL>/`` in the serving directory, :func:`.store.serving_dir`). The
segment is held with an exclusive ``flock`` while its writer lives.

* A row is one JSON line: the ``predictions`` INSERT parameters. Appends go to the OS
  (``write``) in the request path; the writer thread ``fsync``\\ s the segment at most once
  a second (:data:`FSYNC_S`), and at once before a durable-mode answer that the store could
  not take. A killed process loses nothing (the OS has the file); a power loss loses at most
  the last second of rows the store had not committed yet.
* When every row appended to a segment is committed (nothing in flight), the segment is
  deleted and a new one started (:data:`ROTATE_BYTES`). A segment holding rows that never
  reached the store (the queue was full, the store stayed away) is *sealed* instead: its
  lock is released and it is replayed like a dead process's segment.
* :func:`replay` takes the segments no live process holds (a killed worker's, sealed
  ones), inserts the rows whose request id is not in the store yet, and deletes them. The
  request id is the key: a row is never written twice, however often a replay is retried.
  A shadow challenger's row shares its request id with the answered row: the key is the
  request id and whether the row is a shadow one (``monitor`` = ``shadow``).

Works with any backend of :class:`~.store.Store`: it only calls ``write`` and ``query``. Imports nothing from nb2prod (copied into every Bento).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pydantic_core

from .store import SQL_INSERT_PREDICTION, Store, is_sqlite_file, serving_dir, store_path

logger = logging.getLogger("nb2prod.serving")

SPOOL_ENV = "NB2PROD_SPOOL_DIR"
SUFFIX = ".jsonl"
FSYNC_S = 1.0
SHADOW_MONITOR = "shadow"  # the monitor of a shadow challenger's rows (shadow.py)
ROTATE_BYTES = 8 << 20


def spool_dir(store: str) -> Path:
    """The spool directory of the prediction store at ``store`` (see the module doc)."""
    env = os.environ.get(SPOOL_ENV)
    if env:
        return Path(env).expanduser().resolve()
    if is_sqlite_file(store):
        path = store_path(store)
        return path.with_name(path.name + ".spool")
    digest = hashlib.sha256(store.encode()).hexdigest()[:16]
    return serving_dir() / "spool" / digest


def _lock(handle: BinaryIO) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


class Spool:
    """One process's segment: appended by request threads, rotated by the writer thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.appended = 0  # rows appended to the current segment
        self.settled = 0  # of those: committed, or known to need a replay
        self.unsettled_lost = 0  # of those: not in memory any more (replay needed)
        self.dirty = False  # appended since the last fsync
        self.path, self._file = self._open()

    def _open(self) -> tuple[Path, BinaryIO]:
        name = f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        handle = path.open("ab", buffering=0)
        _lock(handle)
        return path, handle

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write ``rows`` (INSERT parameters) to the segment; in the OS before this returns."""
        # pydantic-core's encoder: ~4x json.dumps, and this runs in the request path
        data = b"".join(pydantic_core.to_json(r) + b"\n" for r in rows)
        with self._lock:
            self._file.write(data)
            self.appended += len(rows)
            self.dirty = True

    def sync(self) -> None:
        """``fsync`` the segment if anything was appended since the last one."""
        with self._lock:
            if not self.dirty:
                return
            self.dirty = False
            handle = self._file
        os.fsync(handle.fileno())

    def settle(self, n: int, *, lost: bool = False) -> None:
        """``n`` appended rows are done with: committed, or (``lost``) only the spool has them."""
        with self._lock:
            self.settled += n
            if lost:
                self.unsettled_lost += n

    def rotate_if_done(self, force: bool = False) -> bool:
        """Start a new segment when every appended row is settled (and the segment is big or ``force``).

        The old one is deleted, or sealed for :func:`replay` when rows of it never reached the
        store. Returns whether it rotated.
        """
        with self._lock:
            if self.settled != self.appended or self.appended == 0:
                return False
            if not force and self._file.tell() < ROTATE_BYTES and not self.unsettled_lost:
                return False
            old_path, old = self.path, self._file
            sealed = self.unsettled_lost > 0
            self.path, self._file = self._open()
            self.appended = self.settled = self.unsettled_lost = 0
            self.dirty = False
        if sealed:
            os.fsync(old.fileno())
        else:
            old_path.unlink(missing_ok=True)
        old.close()  # releases the lock: a sealed segment is now replayable
        return True

    def close(self) -> None:
        """Delete the segment when everything in it is settled and committed; else leave it for replay."""
        with self._lock:
            done = self.settled == self.appended and not self.unsettled_lost
            handle = self._file
        if done:
            self.path.unlink(missing_ok=True)
        else:
            with contextlib.suppress(OSError):
                os.fsync(handle.fileno())
        handle.close()


def read_segment(path: Path) -> list[dict[str, Any]]:
    """The rows of a segment; a torn last line (a process killed mid-write) is skipped."""
    rows = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "request_id" in row:
                rows.append(row)
    return rows


def replay(
    directory: Path,
    store: Store,
    *,
    skip: Path | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> int:
    """Insert the rows of every segment no live process holds that the store lacks; returns how many.

    Each segment is locked while replayed (two workers starting together replay each once),
    deleted once its rows are in the store. ``skip`` is the caller's own segment;
    ``on_rows`` sees the rows inserted (the drift sketches). Store errors propagate: the
    segment stays and the next replay tries again.
    """
    if not directory.is_dir():
        return 0
    inserted = 0
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if skip is not None and path == skip:
            continue
        try:
            handle = path.open("rb")
        except FileNotFoundError:  # another worker replayed it just now
            continue
        with handle:
            if not _lock(handle):  # a live writer's segment
                continue
            if not path.exists():
                continue
            rows = read_segment(path)
            missing = _missing(store, rows)
            for start in range(0, len(missing), 5000):
                store.write(SQL_INSERT_PREDICTION, missing[start : start + 5000])
            if missing and on_rows is not None:
                on_rows(missing)
            inserted += len(missing)
            path.unlink(missing_ok=True)
            if missing:
                logger.warning(
                    "nb2prod: replayed %d answered predictions from %s (%d were already stored)",
                    len(missing),
                    path.name,
                    len(rows) - len(missing),
                )
    return inserted


def _known(store: Store, ids: Sequence[str]) -> set[tuple[str, bool]]:
    """(request id, is a shadow row) of the stored rows among ``ids``."""
    found: set[tuple[str, bool]] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        params = {f"r{i}": rid for i, rid in enumerate(chunk)}
        marks = ", ".join(f":r{i}" for i in range(len(chunk)))
        rows = store.query(
            f"SELECT DISTINCT request_id, monitor FROM predictions WHERE request_id IN ({marks})", params
        )
        found.update((str(rid), monitor == SHADOW_MONITOR) for rid, monitor in rows)
    return found


def _missing(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` the store does not hold, by request id and shadow-or-not (first occurrence of each)."""
    ids = list(dict.fromkeys(str(r["request_id"]) for r in rows))
    known = _known(store, ids) if ids else set()
    seen: set[tuple[str, bool]] = set()
    out = []
    for row in rows:
        key = (str(row["request_id"]), row.get("monitor") == SHADOW_MONITOR)
        if key in known or key in seen:
            continue
        seen.add(key)
        out.append(
            {
                k: row.get(k)
                for k in ("request_id", "ts", "monitor", "model_version", "features", "prediction")
            }
        )
    return out


def missing_rows(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` the store lacks, by request id (for a retry after a write whose outcome is unknown)."""
    return _missing(store, rows)
