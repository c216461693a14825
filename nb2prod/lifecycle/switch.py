"""Switching what serves: promote, rollback, the alias history, and the service's control table.

The registry is the source of truth: ``NAME@champion`` is what should serve, and every
move of an alias is kept in the model's history (:mod:`nb2prod.tracking.registry`).
A running service follows the ``control`` table of its prediction store (every worker
polls it each second): ``promote`` and ``rollback`` write it, so a service whose Bento
carries the version switches within seconds, with no rebuild and no restart.

``promote NAME VERSION`` (and ``rollback NAME --to VERSION``) writes the control table
*before* it asks the registry when the newest Bento carries VERSION (``import mlflow`` and
the registry calls take seconds; the services need only the table), and puts the table back
if the registry then refuses; every other switch moves the alias first and writes the table
right after (the store is opened before the move, so the write is quick).

When a service of the model runs in this project (``nb2prod serve`` records it,
:mod:`nb2prod.lifecycle.services`), ``promote`` and ``rollback`` wait, bounded, until
every one of its workers reports the new state, and the :class:`Switch` says which did
not (a version it does not carry, one that failed its integrity check, no answer).

The history is one list whatever made the switch: the registry's alias moves, plus the
switches made over HTTP (``POST /admin/active`` and ``/admin/canary``, recorded by the
service as ``switch`` events of its store).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExportError, LifecycleError
from nb2prod.lifecycle.served import carried_versions, served_manifest, store_location
from nb2prod.lifecycle.services import ServiceAck, await_switch, recorded_services
from nb2prod.serving.redact import redact_text, redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.serving.store import Store
    from nb2prod.tracking.registry import AliasEvent

__all__ = ["Switch", "history", "promote", "rollback"]


@dataclass(frozen=True)
class Switch:
    """A move of the champion (or a canary), and whether the newest Bento can follow it.

    Attributes:
        name: Registered model.
        event: The alias move recorded in the history (None for a canary change only).
        active: The version that should answer now.
        canary: ``{"version", "percent"}`` or None.
        bento: The newest Bento of the model (None when none was built).
        carried: Versions that Bento carries.
        follows: The Bento carries the active (and canary) version: a running service switches
            within seconds.
        store: The prediction store whose control table was written (credentials hidden).
        services: What each running service of the model answered (empty when none is recorded
            or nothing waited), each worker with the seconds it took to follow.
        published_at: When the control table was written (epoch seconds).
    """

    name: str
    event: AliasEvent | None
    active: str
    canary: dict[str, Any] | None
    bento: str | None
    carried: list[str]
    follows: bool
    store: str
    services: tuple[ServiceAck, ...] = ()
    published_at: float = 0.0

    @property
    def refused(self) -> list[ServiceAck]:
        """The running services that did not report the switch."""
        return [ack for ack in self.services if ack.reachable and not ack.followed]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["event"] = self.event.to_dict() if self.event else None
        out["services"] = [asdict(ack) for ack in self.services]
        return out


def mlflow_client(settings: Settings) -> MlflowClient:
    """The MLflow client of ``settings``' tracking store."""
    from nb2prod.tracking import client as tracking

    return tracking.client(settings)


def _check_version(client: MlflowClient, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        try:
            versions = sorted(int(mv.version) for mv in client.search_model_versions(f"name = '{name}'"))
        except MlflowException:
            versions = []
        raise LifecycleError(
            f"no version {version} of registered model {name!r}",
            hint=f"versions: {', '.join(map(str, versions))}"
            if versions
            else "register one with %nb2prod model",
        ) from None


def _no_model(name: str) -> LifecycleError:
    return LifecycleError(f"no registered model named {name!r}", hint="see the MLflow UI for names")


def _check_model(client: MlflowClient, name: str) -> None:
    """Raise the "no registered model" error when ``name`` is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        raise _no_model(name) from None


# How long promote/rollback wait for running services by default (they poll every second).
DEFAULT_WAIT_S = 10.0


@dataclass
class _Target:
    """Where a switch goes, made ready before the alias moves (the write right after it is quick)."""

    location: str
    store: Store
    tag: str | None
    carried: list[str]
    # set when the control table was written before the registry was asked (see _write_early)
    written_at: float = 0.0
    before: dict[str, tuple[Any, float]] = dataclasses.field(default_factory=dict)
    keep: bool = False  # the early write agrees with the registry after all: not undone
    # what the Bento serves when its control table has no switch (active, canary)
    starts: tuple[str | None, dict[str, Any] | None] = (None, None)


def _prepare(settings: Settings, name: str) -> _Target:
    """The model's store, opened and migrated, and the versions its newest Bento carries."""
    from nb2prod.serving.store import Store

    location = store_location(settings, name)
    tag: str | None
    starts: tuple[str | None, dict[str, Any] | None] = (None, None)
    try:
        tag, manifest = served_manifest(settings, name)
        carried = carried_versions(manifest)
        canary = manifest.serving.canary
        starts = (manifest.model_version, canary.to_dict() if canary else None)
    except (ExportError, LifecycleError):  # no Bento (or none with a manifest): nothing follows yet
        tag, carried = None, []
    store = Store(location)
    store.control()  # connect (and migrate a new or older store) now, not after the alias move
    return _Target(location=location, store=store, tag=tag, carried=carried, starts=starts)


def _write_early(settings: Settings, name: str, version: str) -> _Target | None:
    """Switch the services to ``version`` before MLflow is even imported, when that is safe.

    ``import mlflow`` and the registry calls take seconds; the running services need only
    the control table. When the newest Bento carries ``version`` (so it is registered) and
    the store's active version is another one, the table is written first; the registry
    then moves the alias, and if that fails :func:`_undo_early` puts the table back.
    None: nothing written (no Bento, a version it does not carry, the store unreachable).
    """
    from nb2prod.serving.store import CONTROL_ACTIVE, CONTROL_CANARY, SQL_UPSERT_CONTROL

    try:
        target = _prepare(settings, name)
    except Exception:  # the store or the Bento unreadable: the registry path says why
        return None
    try:
        before = target.store.control()
        current = before.get(CONTROL_ACTIVE, (None, 0.0))[0]
        if version not in target.carried or (
            current == version and before.get(CONTROL_CANARY, (None,))[0] is None
        ):
            target.store.close()
            return None
        now = time.time()
        target.store.write(
            SQL_UPSERT_CONTROL,
            [
                {"name": CONTROL_ACTIVE, "value": json.dumps(version), "updated_at": now},
                {"name": CONTROL_CANARY, "value": json.dumps(None), "updated_at": now},
            ],
        )
    except Exception:
        target.store.close()
        return None
    return dataclasses.replace(target, written_at=now, before=before)


def _undo_early(target: _Target) -> None:
    """Put back the control rows :func:`_write_early` replaced (the registry refused the move)."""
    from nb2prod.serving.store import CONTROL_ACTIVE, CONTROL_CANARY, SQL_UPSERT_CONTROL

    now = time.time()
    # a row the table did not have: what the Bento serves without one
    defaults = dict(zip((CONTROL_ACTIVE, CONTROL_CANARY), target.starts, strict=True))
    rows = [
        {"name": key, "value": json.dumps(target.before.get(key, (defaults[key],))[0]), "updated_at": now}
        for key in (CONTROL_ACTIVE, CONTROL_CANARY)
    ]
    try:
        target.store.write(SQL_UPSERT_CONTROL, rows)
    finally:
        target.store.close()


def _publish_switch(
    settings: Settings,
    name: str,
    target: _Target,
    active: str,
    canary: dict[str, Any] | None,
    event: AliasEvent | None,
) -> Switch:
    """Write the control table every worker follows; the :class:`Switch` (no service waited for yet)."""
    from nb2prod.serving.store import CONTROL_ACTIVE, CONTROL_CANARY, SQL_UPSERT_CONTROL

    now = target.written_at or time.time()
    # one transaction: no worker reads the new active version with the old canary
    try:
        if not target.written_at:
            target.store.write(
                SQL_UPSERT_CONTROL,
                [
                    {"name": CONTROL_ACTIVE, "value": json.dumps(active), "updated_at": now},
                    {"name": CONTROL_CANARY, "value": json.dumps(canary), "updated_at": now},
                ],
            )
    finally:
        target.store.close()
    wanted = [active] + ([str(canary["version"])] if canary else [])
    return Switch(
        name=name,
        event=event,
        active=active,
        canary=canary,
        bento=target.tag,
        carried=target.carried,
        follows=bool(target.carried) and all(v in target.carried for v in wanted),
        store=redact_uri(target.location),
        published_at=now,
    )


def _await_services(settings: Settings, switch: Switch, location: str, wait: float) -> Switch:
    """``switch`` with the answers of the running services of its model (waited up to ``wait`` s)."""
    running = recorded_services(settings, switch.name) if wait > 0 else []
    if not running:
        return switch
    acks = await_switch(running, switch.active, switch.canary, timeout=wait, store=location)
    return dataclasses.replace(switch, services=tuple(acks))


def promote(
    name: str,
    version: str,
    *,
    canary: float | None = None,
    reason: str = "promote",
    details: dict[str, Any] | None = None,
    settings: Settings | None = None,
    wait: float = DEFAULT_WAIT_S,
) -> Switch:
    """Make ``version`` the champion (history kept), or with ``canary`` send it that share of rows.

    A canary moves the ``challenger`` alias, not the champion; promote without ``--canary``
    to finish it. Running services of ``name`` are waited for up to ``wait`` seconds (0: not
    at all); ``Switch.refused`` names those that did not follow.

    Raises:
        LifecycleError: unknown version, a bad percent, or promoting the champion itself.
    """

    settings = settings or load_settings()
    version = str(version)
    early = _write_early(settings, name, version) if canary is None else None
    try:
        return _promote(settings, name, version, canary, reason, details, wait, early)
    except Exception:
        # the registry refused (or was away): services go back to what they served, unless
        # the version was the champion already (the table now agrees with the registry)
        if early is not None and not early.keep:
            _undo_early(early)
        raise


def _promote(
    settings: Settings,
    name: str,
    version: str,
    canary: float | None,
    reason: str,
    details: dict[str, Any] | None,
    wait: float,
    early: _Target | None,
) -> Switch:
    from nb2prod.tracking import registry

    client = mlflow_client(settings)
    _check_version(client, name, version)
    champion = registry.alias_version(client, name, registry.CHAMPION)
    if canary is not None:
        if not 0 <= canary <= 100:
            raise LifecycleError(
                f"canary percent {canary:g} is not between 0 and 100", hint="e.g. --canary 10"
            )
        if version == champion:
            raise LifecycleError(
                f"{name}/{version} is the champion already", hint="a canary needs another version"
            )
        if champion is None:
            raise LifecycleError(
                f"{name} has no champion to split traffic with",
                hint=f"promote one first: nb2prod promote {name} VERSION",
            )
        target = _prepare(settings, name)
        event = registry.move_alias(
            client, name, registry.CHALLENGER, version, reason=f"canary {canary:g}%", details=details
        )
        split = {"version": version, "percent": float(canary)} if canary > 0 else None
        published = _publish_switch(settings, name, target, champion, split, event)
        return _await_services(settings, published, target.location, wait)
    if version == champion:
        error = LifecycleError(f"{name}/{version} is the champion already", hint="nothing to do")
        if early is not None:
            early.store.close()
            early.keep = True
        raise error
    challenger = registry.alias_version(client, name, registry.CHALLENGER)
    target = early or _prepare(settings, name)
    event = registry.move_alias(client, name, registry.CHAMPION, version, reason=reason, details=details)
    published = _publish_switch(settings, name, target, version, None, event)
    if challenger == version:
        registry.move_alias(
            client, name, registry.CHALLENGER, None, reason=f"promoted to champion ({reason})"
        )
    return _await_services(settings, published, target.location, wait)


def rollback(
    name: str, *, to: str | None = None, settings: Settings | None = None, wait: float = DEFAULT_WAIT_S
) -> Switch:
    """Give the champion back to the version it replaced (or to ``to``); history kept.

    Like ``kubectl rollout undo``, a second rollback returns to the version rolled back from.

    Raises:
        LifecycleError: no champion, or no earlier champion in the history.
    """
    settings = settings or load_settings()
    # with --to the target is known before the registry is asked: the services switch first
    early = _write_early(settings, name, str(to)) if to else None
    try:
        return _rollback(settings, name, None if to is None else str(to), wait, early)
    except Exception:
        if early is not None and not early.keep:
            _undo_early(early)
        raise


def _rollback(settings: Settings, name: str, to: str | None, wait: float, early: _Target | None) -> Switch:
    from nb2prod.tracking import registry

    client = mlflow_client(settings)
    current = registry.alias_version(client, name, registry.CHAMPION)
    if current is None:
        _check_model(client, name)
        raise LifecycleError(f"{name} has no champion to roll back", hint=f"nb2prod promote {name} VERSION")
    target = to or registry.replaced_version(client, name, current)
    if target is None:
        raise LifecycleError(
            f"the history of {name}@champion has no version before {current}",
            hint=f"name one: nb2prod rollback {name} --to VERSION",
        )
    _check_version(client, name, target)
    if target == current:
        if early is not None:  # the table now agrees with the registry
            early.store.close()
            early.keep = True
        raise LifecycleError(f"{name}/{target} is the champion already", hint="nothing to do")
    prepared = early or _prepare(settings, name)
    event = registry.move_alias(client, name, registry.CHAMPION, target, reason=f"rollback from {current}")
    published = _publish_switch(settings, name, prepared, target, None, event)
    return _await_services(settings, published, prepared.location, wait)


# The service records a switch made over HTTP as an event of this kind in its store
# (``field``: ``active`` or ``canary``; ``model_version``: the version switched to).
SWITCH_EVENT = "switch"


def http_switches(location: str, *, timespec: str = "seconds") -> list[AliasEvent]:
    """The switches a service recorded in its store (``POST /admin/*``), oldest first.

    ``timespec`` of their ISO times: the history shows seconds; a trace needs microseconds (a
    row answered just before a switch must stay before it)."""
    from datetime import UTC, datetime

    from nb2prod.serving.store import Store, is_sqlite_file, store_path
    from nb2prod.tracking.registry import AliasEvent

    if is_sqlite_file(location) and not store_path(location).is_file():
        return []
    store = Store(location, readonly=is_sqlite_file(location))
    try:
        rows = store.query(
            "SELECT ts, model_version, reason, field FROM events WHERE kind = :kind ORDER BY ts",
            {"kind": SWITCH_EVENT},
        )
    finally:
        store.close()
    return [
        AliasEvent(
            seq=0,
            alias=f"service:{what or 'active'}",
            from_version=None,
            to_version=None if version is None else str(version),
            at=datetime.fromtimestamp(float(ts), UTC).isoformat(timespec=timespec),
            reason=str(reason or "switched over HTTP"),
            actor="http",
            details={"source": "http"},
        )
        for ts, version, reason, what in rows
    ]


def event_time(event: AliasEvent) -> float:
    """Unix seconds of an alias move or HTTP switch (0 when its time cannot be read)."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(event.at)
    except ValueError:
        return 0.0
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def history(name: str, *, settings: Settings | None = None) -> list[AliasEvent]:
    """Every switch of ``name``, oldest first: the registry's alias moves and the HTTP switches.

    HTTP switches (``POST /admin/active``, ``/admin/canary``) come from the service's store;
    their ``actor`` is ``http`` and their ``seq`` 0 (they are not alias moves).

    Raises:
        LifecycleError: no registered model of that name, or its store cannot be read.
    """
    from mlflow.exceptions import MlflowException

    from nb2prod.tracking import registry

    settings = settings or load_settings()
    try:
        moves = registry.alias_history(mlflow_client(settings), name)
    except MlflowException:
        raise _no_model(name) from None
    location = store_location(settings, name)
    try:
        switches = http_switches(location)
    except Exception as exc:  # a store away must not hide the registry's history: say so
        raise LifecycleError(
            f"the prediction store {redact_uri(location)} cannot be read for the HTTP switches: "
            f"{redact_text(str(exc))[:200]}",
            hint="check that the store is reachable",
        ) from None
    return sorted([*moves, *switches], key=event_time)
