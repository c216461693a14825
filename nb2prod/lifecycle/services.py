"""The running services of a model in this project, and whether they follow a switch.

``nb2prod serve NAME`` records the service it starts (:func:`record_service`: a small JSON
file under ``.nb2prod/serving/NAME/services/``, removed when its process is gone; it holds
the URL, the number of workers and the store it logs to with the password hidden, plus a
digest of the full store URL), so ``nb2prod promote`` and ``rollback`` can ask every one of
them, through ``/metadata``, whether it now serves what the control table says
(:func:`await_switch`). A service started some other way (``bentoml serve TAG``, another
machine) is not recorded: the switch still reaches it through the store, but nothing waits
for it. A recorded service that logs to another store than the one the command wrote is
named at once (the switch cannot reach it), not waited for.

Each ``/metadata`` answer comes from one worker (it names its ``worker_pid``); the wait asks
every service at once, on fresh connections, so the workers of one service answer in turn.
It ends for a service when as many workers as it runs (recorded by ``nb2prod serve``; else
every worker seen, over :data:`AGREEING_ANSWERS` agreeing answers) report the switch, or one
refused it (``control_refusals``: the version is not carried, or failed its integrity check),
or the time is up. A recorded service where nothing listens any more is not waited for (only
a reachable service can tell the truth). Each worker's answer comes with the seconds from the
start of the wait (the control table write) to its first answer showing the switch.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2prod.config import Settings
from nb2prod.export.bento_store import process_alive
from nb2prod.serving.redact import redact_uri

__all__ = [
    "ServiceAck",
    "await_switch",
    "record_service",
    "recorded_services",
    "services_dir",
    "store_digest",
]

SERVICES_DIR = "services"
# consecutive answers that must agree before a service of unknown size counts as switched
# (its workers answer in turn on fresh connections)
AGREEING_ANSWERS = 4
# between two questions to one service
_POLL_S = 0.05


def services_dir(settings: Settings, name: str) -> Path:
    """Where the services of ``name`` started in this project are recorded."""
    return settings.bentoml_home.parent / "serving" / name / SERVICES_DIR


def store_digest(location: str) -> str:
    """A digest that tells two store locations apart without keeping the password in a file."""
    return hashlib.sha256(str(location).encode()).hexdigest()[:16]


def record_service(
    settings: Settings,
    name: str,
    *,
    url: str,
    pid: int,
    tag: str,
    workers: int | None = None,
    store: str | None = None,
) -> Path:
    """Record a service of ``name`` listening at ``url`` (process ``pid``, Bento ``tag``).

    ``workers``: its worker processes (the wait then knows how many must answer);
    ``store``: the prediction store it logs to (kept redacted, with a digest of the full URL).
    """
    folder = services_dir(settings, name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    record: dict[str, Any] = {"url": url, "pid": pid, "tag": tag, "started": time.time()}
    if workers is not None:
        record["workers"] = int(workers)
    if store is not None:
        record.update(store=redact_uri(store), store_digest=store_digest(store))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(path)
    return path


def recorded_services(settings: Settings, name: str) -> list[dict[str, Any]]:
    """The recorded services of ``name`` whose process is alive (the records of the dead are removed)."""
    folder = services_dir(settings, name)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid = int(record["pid"])
            url = str(record["url"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if not process_alive(pid):
            path.unlink(missing_ok=True)
            continue
        found.append({**record, "pid": pid, "url": url})
    return found


@dataclass(frozen=True)
class ServiceAck:
    """What one running service answered to a switch.

    Attributes:
        url: The service.
        followed: Every worker (as many as it runs, when recorded) reports the switch.
        workers: Worker pid -> the version it serves (``"?"`` when it does not say).
        refused: Why it did not follow (a worker's refusal, another store, no answer, or the
            time ran out); empty when it followed.
        reachable: False when nothing listens at ``url`` (a stopped service whose record
            remains): not waited for, and not a refusal.
        switched_after: Worker pid -> seconds from the start of the wait (the control table
            write) to that worker's first answer showing the switch.
        expected_workers: The workers the service runs (None when not recorded).
    """

    url: str
    followed: bool
    workers: dict[str, str] = field(default_factory=dict)
    refused: str = ""
    reachable: bool = True
    switched_after: dict[str, float] = field(default_factory=dict)
    expected_workers: int | None = None


class _Refused(Exception):
    """Nothing listens at the service's address."""


def _metadata(url: str, timeout: float) -> dict[str, Any] | None:
    request = urllib.request.Request(url.rstrip("/") + "/metadata", headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            raise _Refused from None
        return None
    except ConnectionRefusedError:
        raise _Refused from None
    except (OSError, ValueError):
        return None


def _matches(meta: dict[str, Any], active: str, canary: dict[str, Any] | None) -> bool:
    if str(meta.get("model_version")) != active:
        return False
    served = meta.get("canary")
    if canary is None:
        return served is None
    return (
        isinstance(served, dict)
        and str(served.get("version")) == str(canary["version"])
        and float(served.get("percent") or 0) == float(canary["percent"])
    )


def _refusal(meta: dict[str, Any], canary: dict[str, Any] | None) -> str:
    refusals = meta.get("control_refusals") or {}
    if not isinstance(refusals, dict):
        return ""
    for key in ("active", "canary") if canary else ("active",):
        if refusals.get(key):
            return str(refusals[key])
    return ""


def _await_one(
    service: dict[str, Any],
    active: str,
    canary: dict[str, Any] | None,
    *,
    started: float,
    deadline: float,
    timeout: float,
    store: str | None,
) -> ServiceAck:
    url = str(service["url"])
    expected = service.get("workers")
    expected = int(expected) if isinstance(expected, int) and expected > 0 else None
    recorded_store = service.get("store_digest")
    if store is not None and recorded_store and recorded_store != store_digest(store):
        return ServiceAck(
            url=url,
            followed=False,
            refused=f"it logs to another prediction store ({service.get('store', '?')}): set "
            "NB2PROD_PREDICTION_STORE (or --store) to it and switch again",
            expected_workers=expected,
        )
    workers: dict[str, str] = {}
    after: dict[str, float] = {}
    agreeing = 0
    reached = False
    refused = ""
    while True:
        try:
            meta = _metadata(url, timeout=max(0.5, min(2.0, deadline - time.monotonic())))
        except _Refused:
            if not reached:
                return ServiceAck(url=url, followed=False, reachable=False, expected_workers=expected)
            meta = None  # it answered before: restarting, keep asking
        if meta is not None:
            reached = True
            pid = str(meta.get("worker_pid", "?"))
            workers[pid] = str(meta.get("model_version"))
            if _matches(meta, active, canary):
                agreeing += 1
                after.setdefault(pid, round(time.monotonic() - started, 3))
            else:
                agreeing = 0
                after.pop(pid, None)
                refused = _refusal(meta, canary)
                if refused:
                    refused = f"worker {pid} refused: {refused}"
                    break
            switched = [p for p, v in workers.items() if v == active and p in after]
            if len(switched) == len(workers) and (
                len(switched) >= expected if expected else agreeing >= AGREEING_ANSWERS
            ):
                break
        if time.monotonic() >= deadline:
            if not reached:
                refused = "did not answer /metadata"
            else:
                late = {p: v for p, v in workers.items() if v != active} or workers
                serving = ", ".join(f"worker {p} serves v{v}" for p, v in sorted(late.items()))
                seen = f"; {len(workers)} of {expected} workers answered" if expected else ""
                refused = f"did not switch within {timeout:g} s ({serving}{seen})"
            break
        time.sleep(_POLL_S)
    return ServiceAck(
        url=url,
        followed=not refused,
        workers=workers,
        refused=refused,
        switched_after=after,
        expected_workers=expected,
    )


def await_switch(
    services: list[dict[str, Any]],
    active: str,
    canary: dict[str, Any] | None,
    *,
    timeout: float,
    store: str | None = None,
) -> list[ServiceAck]:
    """Wait (at most ``timeout`` seconds) until every service reports ``active`` and ``canary``.

    The services are asked at once (one thread each); the answers keep their order.
    ``store``: the store whose control table was written; a service recorded with another
    one is named at once.
    """
    started = time.monotonic()
    deadline = started + timeout
    acks: list[ServiceAck | None] = [None] * len(services)

    def ask(i: int) -> None:
        acks[i] = _await_one(
            services[i], active, canary, started=started, deadline=deadline, timeout=timeout, store=store
        )

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(len(services))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return [
        ack or ServiceAck(url=str(s["url"]), followed=False, refused="no answer in time")
        for ack, s in zip(acks, services, strict=True)
    ]
