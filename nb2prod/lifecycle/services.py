"""The running services of a model in this project, and whether they follow a switch.

``nb2prod serve NAME`` records the service it starts (:func:`record_service`: a small JSON
file under ``.nb2prod/serving/NAME/services/``, removed when its process is gone), so
``nb2prod promote`` and ``rollback`` can ask every one of them, through ``/metadata``, whether
it now serves what the control table says (:func:`await_switch`). A service started some
other way (``bentoml serve TAG``, another machine) is not recorded: the switch still reaches
it through the store, but nothing waits for it.

Each ``/metadata`` answer comes from one worker (it names its ``worker_pid``); the wait asks
on fresh connections, so the workers of one service answer in turn, and it ends when every
worker seen reports the switch, or one refused it (``control_refusals``: the version is not
carried, or failed its integrity check), or the time is up. A recorded service where nothing
listens any more is not waited for (only a reachable service can tell the truth).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2prod.config import Settings
from nb2prod.export.bento_store import process_alive

__all__ = ["ServiceAck", "await_switch", "record_service", "recorded_services", "services_dir"]

SERVICES_DIR = "services"
# consecutive answers that must agree before a service counts as switched (its workers
# answer in turn on fresh connections)
AGREEING_ANSWERS = 4


def services_dir(settings: Settings, name: str) -> Path:
    """Where the services of ``name`` started in this project are recorded."""
    return settings.bentoml_home.parent / "serving" / name / SERVICES_DIR


def record_service(settings: Settings, name: str, *, url: str, pid: int, tag: str) -> Path:
    """Record a service of ``name`` listening at ``url`` (process ``pid``, Bento ``tag``)."""
    folder = services_dir(settings, name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"url": url, "pid": pid, "tag": tag, "started": time.time()}), encoding="utf-8")
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
        followed: Every worker seen reports the switch.
        workers: Worker pid -> the version it serves (``"?"`` when it does not say).
        refused: Why it did not follow (a worker's refusal, no answer, or the time ran out);
            empty when it followed.
        reachable: False when nothing listens at ``url`` (a stopped service whose record
            remains): not waited for, and not a refusal.
    """

    url: str
    followed: bool
    workers: dict[str, str] = field(default_factory=dict)
    refused: str = ""
    reachable: bool = True


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


def await_switch(
    services: list[dict[str, Any]], active: str, canary: dict[str, Any] | None, *, timeout: float
) -> list[ServiceAck]:
    """Wait (at most ``timeout`` seconds) until every service reports ``active`` and ``canary``."""
    deadline = time.monotonic() + timeout
    acks: list[ServiceAck] = []
    for service in services:
        url = str(service["url"])
        workers: dict[str, str] = {}
        agreeing = 0
        reached = False
        refused = ""
        while True:
            try:
                meta = _metadata(url, timeout=max(0.5, min(2.0, deadline - time.monotonic())))
            except _Refused:
                if not reached:
                    break
                meta = None  # it answered before: restarting, keep asking
            if meta is not None:
                reached = True
                pid = str(meta.get("worker_pid", "?"))
                workers[pid] = str(meta.get("model_version"))
                if _matches(meta, active, canary):
                    agreeing += 1
                else:
                    agreeing = 0
                    refused = _refusal(meta, canary)
                    if refused:
                        refused = f"worker {pid} refused: {refused}"
                        break
                if agreeing >= AGREEING_ANSWERS and all(v == active for v in workers.values()):
                    break
            if time.monotonic() >= deadline:
                if not reached:
                    refused = "did not answer /metadata"
                else:
                    late = {p: v for p, v in workers.items() if v != active} or workers
                    serving = ", ".join(f"worker {p} serves v{v}" for p, v in sorted(late.items()))
                    refused = f"did not switch within {timeout:g} s ({serving})"
                break
            time.sleep(0.2)
        if not reached and not refused:
            acks.append(ServiceAck(url=url, followed=False, reachable=False))
            continue
        acks.append(ServiceAck(url=url, followed=not refused, workers=workers, refused=refused))
    return acks
