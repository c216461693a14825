"""Shadow a challenger before it answers anyone, and promote it only when it is better on the same rows.

* :func:`start_shadow` (``nb2prod promote NAME VERSION --shadow``): ``VERSION`` scores the
  rows the service answers, off the request path, and its answers are logged beside the
  champion's (same request id, ``monitor`` = ``shadow``). The switch is the control key
  :data:`CONTROL_SHADOW` of the model's prediction store (``{"version": V}``, or null to
  stop), which every worker follows as it follows ``active`` and ``canary``; running
  services recorded by ``nb2prod serve`` are also told over ``POST /admin/shadow`` when
  ``$NB2PROD_ADMIN_TOKEN`` is set. The ``challenger`` alias moves to ``VERSION`` (reason
  ``shadow``), so the alias history shows it and a re-export carries it.
* :func:`decide_shadow` (``nb2prod promote NAME VERSION --if-shadow-better``): the shadow
  rows with a feedback label are compared row for row with the answers the champion gave
  (:func:`nb2prod.monitoring.shadow.compare`: exact McNemar for accuracy, paired bootstrap
  for F1 and the regression errors). ``VERSION`` is promoted only when it is better by at
  least ``min_improvement`` and the one-sided p-value is under ``alpha``; either way the
  decision, with its figures, lands in the alias history.

The decision itself (:func:`decision_of`) is pure: rows in, :class:`ShadowDecision` out.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from nb2prod import metrics as m
from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExportError, LifecycleError
from nb2prod.lifecycle.served import carried_versions, served_manifest, store_location
from nb2prod.serving.redact import redact_uri

if TYPE_CHECKING:
    from nb2prod.lifecycle.switch import Switch
    from nb2prod.monitoring.shadow import Comparison
    from nb2prod.monitoring.window import ShadowRow
    from nb2prod.tracking.registry import AliasEvent

__all__ = [
    "ALPHA",
    "CONTROL_SHADOW",
    "ShadowDecision",
    "ShadowStart",
    "decide_shadow",
    "decision_of",
    "start_shadow",
]

CONTROL_SHADOW = "shadow"
"""The control key of the shadow: ``{"version": "<V>"}`` or null."""
ADMIN_PATH = "/admin/shadow"
TOKEN_ENV = "NB2PROD_ADMIN_TOKEN"
ALPHA = 0.05
"""Largest one-sided p-value at which a challenger counts as better."""
SHADOW_METRICS = (m.ACCURACY, m.F1_MACRO, m.MAE, m.RMSE)


@dataclass(frozen=True)
class ShadowStart:
    """A shadow started (or stopped): what the store and the running services were told.

    Attributes:
        name: Registered model.
        version: The shadowing version (None: the shadow stopped).
        event: The ``challenger`` alias move recorded in the history.
        bento: The newest Bento of the model (None when none was built).
        carried: The versions it carries.
        follows: The Bento carries ``version``: running services start scoring it.
        store: The prediction store whose control table was written (credentials hidden).
        services: Per running service: its URL and what ``POST /admin/shadow`` answered
            (``ok``, ``refused: ...``, ``unreachable``, or ``no token``).
    """

    name: str
    version: str | None
    event: AliasEvent | None
    bento: str | None
    carried: list[str]
    follows: bool
    store: str
    services: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["event"] = self.event.to_dict() if self.event else None
        return out


@dataclass(frozen=True)
class ShadowDecision:
    """Whether a shadowed challenger beat the champion on the same labelled rows, and what was done.

    Attributes:
        name: Registered model.
        version: The challenger.
        champion: The champion when deciding.
        comparison: The paired comparison (metric, test, rows, both values, improvement, p-value).
        min_improvement: The margin the challenger had to win by.
        alpha: The largest p-value counting as better.
        promote: Whether the challenger is promoted.
        reason: One line: why.
        switch: The promotion (None when refused or not applied).
        event: The history event that records the decision.
    """

    name: str
    version: str
    champion: str | None
    comparison: Comparison
    min_improvement: float
    alpha: float
    promote: bool
    reason: str
    switch: Switch | None = None
    event: AliasEvent | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "champion": self.champion,
            "comparison": self.comparison.to_dict(),
            "min_improvement": self.min_improvement,
            "alpha": self.alpha,
            "promote": self.promote,
            "reason": self.reason,
            "switch": self.switch.to_dict() if self.switch else None,
            "event": self.event.to_dict() if self.event else None,
        }


def decision_of(
    rows: Sequence[ShadowRow],
    version: str,
    classifier: bool,
    *,
    metric: str | None = None,
    min_improvement: float = 0.0,
    alpha: float = ALPHA,
    name: str = "",
    champion: str | None = None,
    min_rows: int = 30,
) -> ShadowDecision:
    """The promotion decision for shadow ``version`` from shadow rows (pure: no store, no registry).

    Promote when the challenger is better by at least ``min_improvement`` (in the metric's
    unit, whichever way it goes) and the paired test's one-sided p-value is under ``alpha``,
    on at least ``min_rows`` labelled shadow rows.

    Raises:
        LifecycleError: an unknown metric, or one that does not fit the task.
    """
    from nb2prod.monitoring.shadow import compare

    allowed = m.CLASSIFICATION if classifier else m.REGRESSION
    if metric is not None and metric not in allowed:
        raise LifecycleError(
            f"--metric {metric} does not apply to this {'classifier' if classifier else 'regressor'}",
            hint=f"use one of {', '.join(allowed)}",
        )
    cmp = compare(rows, classifier, metric, version=str(version))
    if cmp.rows < min_rows:
        ok, why = (
            False,
            f"only {cmp.rows} labelled shadow rows of {version} (need {min_rows}): wait for feedback",
        )
    elif cmp.improvement is None or cmp.improvement < min_improvement:
        gain = 0.0 if cmp.improvement is None else cmp.improvement
        ok, why = False, f"{cmp.metric} improves by {gain:+.4f}, less than the margin {min_improvement:g}"
    elif cmp.p_value >= alpha or cmp.improvement <= 0:
        ok, why = False, f"{cmp.test} p = {cmp.p_value:.4g} is not under {alpha:g}: not shown better"
    else:
        ok, why = (
            True,
            (
                f"{cmp.metric} {cmp.champion:.4f} -> {cmp.challenger:.4f} ({cmp.improvement:+.4f} >= "
                f"{min_improvement:g}), {cmp.test} p = {cmp.p_value:.4g} < {alpha:g}"
            ),
        )
    return ShadowDecision(
        name=name,
        version=str(version),
        champion=champion,
        comparison=cmp,
        min_improvement=min_improvement,
        alpha=alpha,
        promote=ok,
        reason=why,
    )


def _bento(settings: Settings, name: str) -> tuple[str | None, list[str], bool | None]:
    """(newest Bento tag, versions it carries, whether it is a classifier); (None, [], None) without one."""
    try:
        tag, manifest = served_manifest(settings, name)
    except (ExportError, LifecycleError):
        return None, [], None
    return tag, carried_versions(manifest), bool(manifest.model.is_classifier)


def _tell_services(settings: Settings, name: str, version: str | None) -> dict[str, str]:
    """``POST /admin/shadow`` to every recorded running service (needs ``$NB2PROD_ADMIN_TOKEN``)."""
    from nb2prod.lifecycle.services import recorded_services

    out: dict[str, str] = {}
    token = os.environ.get(TOKEN_ENV, "")
    for service in recorded_services(settings, name):
        url = str(service["url"]).rstrip("/")
        if not token:
            out[url] = "no token (the service follows the store's control table)"
            continue
        request = urllib.request.Request(
            url + ADMIN_PATH,
            data=json.dumps({"version": version}).encode(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Connection": "close",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                out[url] = "ok" if resp.status < 300 else f"refused: HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            out[url] = f"refused: HTTP {exc.code}"
        except (urllib.error.URLError, OSError):
            out[url] = "unreachable"
    return out


def start_shadow(name: str, version: str | None, *, settings: Settings | None = None) -> ShadowStart:
    """Let ``version`` shadow the champion of ``name`` (None: stop the shadow).

    Raises:
        LifecycleError: unknown version, or shadowing the champion itself.
    """
    from nb2prod.lifecycle.switch import _check_version, mlflow_client
    from nb2prod.serving.store import Store
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    client = mlflow_client(settings)
    if version is not None:
        version = str(version)
        _check_version(client, name, version)
        if version == registry.alias_version(client, name, registry.CHAMPION):
            raise LifecycleError(
                f"{name}/{version} is the champion: it cannot shadow itself", hint="shadow another version"
            )
    tag, carried, _ = _bento(settings, name)
    location = store_location(settings, name)
    store = Store(location)
    try:
        store.set_control(CONTROL_SHADOW, None if version is None else {"version": version})
    finally:
        store.close()
    event = registry.move_alias(
        client,
        name,
        registry.CHALLENGER,
        version,
        reason="shadow" if version else "shadow stopped",
        details={"shadow": version, "bento": tag},
    )
    return ShadowStart(
        name=name,
        version=version,
        event=event,
        bento=tag,
        carried=carried,
        follows=version is None or version in carried,
        store=redact_uri(location),
        services=_tell_services(settings, name, version),
    )


def decide_shadow(
    name: str,
    version: str,
    *,
    metric: str | None = None,
    min_improvement: float = 0.0,
    alpha: float = ALPHA,
    since: str | None = None,
    min_rows: int = 30,
    apply: bool = True,
    classifier: bool | None = None,
    settings: Settings | None = None,
    wait: float = 10.0,
) -> ShadowDecision:
    """Promote shadow ``version`` only if it beat the champion on the labelled shadow rows (see the module doc).

    The decision is recorded in the alias history either way: a promotion as the champion's
    move (its reason and figures), a refusal as a ``challenger`` event that leaves it where it is.

    ``classifier`` names the task when no Bento was built (default: the newest Bento's).

    Raises:
        LifecycleError: unknown version, no Bento to read the task from, or a bad metric.
        MonitorError: the store cannot be read, or a bad ``since``.
    """
    import dataclasses

    from nb2prod.lifecycle.switch import _check_version, mlflow_client, promote
    from nb2prod.monitoring.window import parse_since, read_shadow
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    client = mlflow_client(settings)
    version = str(version)
    _check_version(client, name, version)
    _, _, served_classifier = _bento(settings, name)
    if classifier is None:
        classifier = served_classifier
    if classifier is None:
        raise LifecycleError(
            f"no Bento of {name} was built: nothing served, no shadow rows", hint=f"nb2prod export {name}"
        )
    champion = registry.alias_version(client, name, registry.CHAMPION)
    now = time.time()
    rows = read_shadow(
        store_location(settings, name), parse_since(since, now=now) if since else None, now + 1
    )
    decision = decision_of(
        rows,
        version,
        classifier,
        metric=metric,
        min_improvement=min_improvement,
        alpha=alpha,
        name=name,
        champion=champion,
        min_rows=min_rows,
    )
    if not apply:
        return decision
    details = {"decision": "promote" if decision.promote else "refused", **decision.comparison.to_dict()}
    details.update(min_improvement=min_improvement, alpha=alpha)
    if decision.promote:
        switch = promote(
            name,
            version,
            reason=f"shadow better: {decision.reason}",
            details=details,
            settings=settings,
            wait=wait,
        )
        return dataclasses.replace(decision, switch=switch, event=switch.event)
    current = registry.alias_version(client, name, registry.CHALLENGER)
    event = registry.move_alias(
        client,
        name,
        registry.CHALLENGER,
        current,
        reason=f"shadow refused: {decision.reason}",
        details=details,
    )
    return dataclasses.replace(decision, event=event)
