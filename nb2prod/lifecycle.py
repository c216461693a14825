"""Closing the loop: feedback, monitoring, retraining, promotion and rollback of a served model.

Every function here returns a dataclass and prints nothing; the CLI and the magics show them.

* The registry is the source of truth: ``NAME@champion`` is what should serve, and every
  move of an alias is kept in the model's history (:mod:`nb2prod.tracking.registry`).
* A running service follows the ``control`` table of its prediction store (every worker
  polls it each second): ``promote`` and ``rollback`` write it, so a service whose Bento
  carries the version switches within seconds, with no rebuild and no restart. A Bento
  carries the champion, the version it replaced and the challenger (``nb2prod export``).
* ``retrain`` re-runs the notebook, scores challenger and champion on the same rows
  (the holdout the notebook tracked, a file, or labelled feedback), and moves the alias
  only when the challenger is better by the margin; the decision is recorded on the run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import ExportError, LifecycleError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nb2prod.tracking.registry import AliasEvent

HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "roc_auc": True, "r2": True, "rmse": False, "mae": False}


# ----------------------------------------------------------------------------------- the service side


def store_location(settings: Settings, name: str) -> str:
    """The prediction store ``nb2prod serve NAME`` logs to (``NB2PROD_PREDICTION_STORE`` overrides)."""
    from nb2prod.export.serve import prediction_store

    return prediction_store(settings, name)


def served_manifest(settings: Settings, name: str) -> tuple[str, dict[str, Any]]:
    """The tag and manifest of the newest Bento of ``name``.

    Raises:
        LifecycleError: no Bento of ``name`` was built in this project.
    """
    from nb2prod.export.builder import MANIFEST_FILE, bento_name, latest_bento

    try:
        tag = latest_bento(settings, name)
    except ExportError as exc:
        raise LifecycleError(str(exc), hint=exc.hint) from None
    bname, version = tag.split(":", 1)
    path = settings.bentoml_home / "bentos" / bname / version / "src" / MANIFEST_FILE
    if bname != bento_name(name) or not path.is_file():
        raise LifecycleError(
            f"the Bento {tag} has no nb2prod manifest", hint=f"re-export: nb2prod export {name}"
        )
    return tag, json.loads(path.read_text(encoding="utf-8"))


def _carried(manifest: Mapping[str, Any]) -> list[str]:
    return [str(v) for v in (manifest.get("models") or {str(manifest["model_version"]): {}})]


# ----------------------------------------------------------------------------------- promote / rollback


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
        store: The prediction store whose control table was written.
    """

    name: str
    event: AliasEvent | None
    active: str
    canary: dict[str, Any] | None
    bento: str | None
    carried: list[str]
    follows: bool
    store: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["event"] = self.event.to_dict() if self.event else None
        return out


def _client(settings: Settings) -> MlflowClient:
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


def _publish_switch(
    settings: Settings, name: str, active: str, canary: dict[str, Any] | None, event: AliasEvent | None
) -> Switch:
    from nb2prod.serving.store import CONTROL_ACTIVE, CONTROL_CANARY, Store

    location = store_location(settings, name)
    try:
        tag, manifest = served_manifest(settings, name)
        carried = _carried(manifest)
    except LifecycleError:
        tag, carried = None, []
    store = Store(location)
    now = time.time()
    store.set_control(CONTROL_ACTIVE, active, ts=now)
    store.set_control(CONTROL_CANARY, canary, ts=now)
    store.close()
    wanted = [active] + ([str(canary["version"])] if canary else [])
    return Switch(
        name=name,
        event=event,
        active=active,
        canary=canary,
        bento=tag,
        carried=carried,
        follows=bool(carried) and all(v in carried for v in wanted),
        store=location,
    )


def promote(
    name: str,
    version: str,
    *,
    canary: float | None = None,
    reason: str = "promote",
    details: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> Switch:
    """Make ``version`` the champion (history kept), or with ``canary`` send it that share of rows.

    A canary moves the ``challenger`` alias, not the champion; promote without ``--canary``
    to finish it.

    Raises:
        LifecycleError: unknown version, a bad percent, or promoting the champion itself.
    """
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    client = _client(settings)
    version = str(version)
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
                hint=f"promote one first: nb2prod promote {name} V",
            )
        event = registry.move_alias(
            client, name, registry.CHALLENGER, version, reason=f"canary {canary:g}%", details=details
        )
        split = {"version": version, "percent": float(canary)} if canary > 0 else None
        return _publish_switch(settings, name, champion, split, event)
    if version == champion:
        raise LifecycleError(f"{name}/{version} is the champion already", hint="nothing to do")
    event = registry.move_alias(client, name, registry.CHAMPION, version, reason=reason, details=details)
    if registry.alias_version(client, name, registry.CHALLENGER) == version:
        registry.move_alias(
            client, name, registry.CHALLENGER, None, reason=f"promoted to champion ({reason})"
        )
    return _publish_switch(settings, name, version, None, event)


def rollback(name: str, *, to: str | None = None, settings: Settings | None = None) -> Switch:
    """Give the champion back to the version it replaced (or to ``to``); history kept.

    Like ``kubectl rollout undo``, a second rollback returns to the version rolled back from.

    Raises:
        LifecycleError: no champion, or no earlier champion in the history.
    """
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    client = _client(settings)
    current = registry.alias_version(client, name, registry.CHAMPION)
    if current is None:
        raise LifecycleError(f"{name} has no champion to roll back", hint=f"nb2prod promote {name} VERSION")
    target = str(to) if to else registry.replaced_version(client, name, current)
    if target is None:
        raise LifecycleError(
            f"the history of {name}@champion has no version before {current}",
            hint=f"name one: nb2prod rollback {name} --to VERSION",
        )
    _check_version(client, name, target)
    if target == current:
        raise LifecycleError(f"{name}/{target} is the champion already", hint="nothing to do")
    event = registry.move_alias(client, name, registry.CHAMPION, target, reason=f"rollback from {current}")
    return _publish_switch(settings, name, target, None, event)


def history(name: str, *, settings: Settings | None = None) -> list[AliasEvent]:
    """Every recorded alias move of ``name``, oldest first."""
    from mlflow.exceptions import MlflowException

    from nb2prod.tracking import registry

    settings = settings or load_settings()
    try:
        return registry.alias_history(_client(settings), name)
    except MlflowException:
        raise LifecycleError(
            f"no registered model named {name!r}", hint="see the MLflow UI for names"
        ) from None


# ----------------------------------------------------------------------------------- feedback


@dataclass(frozen=True)
class FeedbackImport:
    """Labels stored from a file: how many, how many match a logged prediction, where."""

    stored: int
    matched: int
    unmatched_examples: list[str]
    store: str


def _native(text: str) -> Any:
    """A class label as the service answers it: ``"1"`` -> 1, ``"0.5"`` -> 0.5, ``"yes"`` -> "yes"."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _coerce_label(value: Any, classes: list[Any] | None, is_classifier: bool) -> Any:
    if isinstance(value, str):
        value = value.strip()
    if is_classifier and classes:
        # the capture records classes as text; predictions are JSON-native (1, not "1")
        by_text = {str(c): _native(str(c)) for c in classes}
        if str(value) in by_text:
            return by_text[str(value)]
        if isinstance(value, float) and value.is_integer() and str(int(value)) in by_text:
            return by_text[str(int(value))]
        raise LifecycleError(
            f"label {value!r} is not a class of the model ({', '.join(sorted(by_text))})",
            hint="labels must be classes the model predicts",
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise LifecycleError(
            f"label {value!r} is not a number", hint="a regressor's labels are numbers"
        ) from None


def import_feedback(
    name: str,
    file: str | Path,
    *,
    id_column: str = "request_id",
    label_column: str | None = None,
    settings: Settings | None = None,
) -> FeedbackImport:
    """Store ground truth from a CSV (or Parquet) file with a request id and a label per row.

    Every row is checked before anything is stored: one bad label stores nothing.

    Raises:
        LifecycleError: no such file, missing columns, empty ids, labels that are not classes.
    """
    import pandas as pd

    from nb2prod.serving.store import Store

    settings = settings or load_settings()
    path = Path(file).expanduser()
    if not path.is_file():
        raise LifecycleError(f"no file at {path}", hint="give a CSV with columns request_id and label")
    _, manifest = served_manifest(settings, name)
    target = (manifest.get("target") or {}).get("name")
    try:
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path, dtype=str)
    except Exception as exc:
        raise LifecycleError(
            f"cannot read {path}: {exc}", hint="a CSV with a header row, or Parquet"
        ) from None
    columns = [str(c) for c in frame.columns]
    label_column = label_column or next((c for c in ("label", target, "y") if c and c in columns), None)
    missing = [c for c in (id_column, label_column) if c is None or c not in columns]
    if missing:
        raise LifecycleError(
            f"{path.name} has no column {missing[0] or 'label'!r} (columns: {', '.join(columns)})",
            hint="name them with --id-column and --label-column",
        )
    info = manifest["model"]
    labels: list[tuple[str, Any]] = []
    for i, (rid, raw) in enumerate(zip(frame[id_column], frame[label_column], strict=True)):
        if rid is None or (isinstance(rid, float) and rid != rid) or not str(rid).strip():
            raise LifecycleError(f"row {i + 2} of {path.name} has no request id", hint="every row needs one")
        try:
            labels.append(
                (str(rid).strip(), _coerce_label(raw, info.get("classes"), bool(info.get("is_classifier"))))
            )
        except LifecycleError as exc:
            raise LifecycleError(f"row {i + 2} of {path.name}: {exc}", hint=exc.hint) from None
    location = store_location(settings, name)
    store = Store(location)
    try:
        stored = store.add_feedback(labels, source=f"file:{path.name}")
        ids = [rid for rid, _ in labels]
        known = store.known_request_ids(ids)
    finally:
        store.close()
    unmatched = [rid for rid in ids if rid not in known]
    return FeedbackImport(
        stored=stored, matched=len(ids) - len(unmatched), unmatched_examples=unmatched[:5], store=location
    )


# ----------------------------------------------------------------------------------- monitor


def monitor(
    name: str,
    *,
    since: str | None = None,
    until: str | None = None,
    psi_threshold: float | None = None,
    settings: Settings | None = None,
) -> Any:
    """The drift and quality report of the service of ``name`` (see :mod:`nb2prod.monitoring.report`)."""
    from nb2prod.monitoring.report import build_report, parse_since

    settings = settings or load_settings()
    _, manifest = served_manifest(settings, name)
    now = time.time()
    threshold = psi_threshold if psi_threshold is not None else float(manifest["serving"]["psi_threshold"])
    return build_report(
        store_location(settings, name),
        manifest,
        since=parse_since(since, now=now) if since else None,
        until=parse_since(until, now=now) if until else None,
        psi_threshold=threshold,
    )


# ----------------------------------------------------------------------------------- retrain


@dataclass(frozen=True)
class Decision:
    """What ``retrain`` decided and the figures it decided on.

    Attributes:
        name: Registered model.
        action: ``promoted``, ``canary``, ``refused`` or ``skipped`` (no drift).
        reason: One sentence a reviewer can check.
        challenger: The version the re-run registered (None when skipped).
        champion: The champion before the decision.
        metric: The score compared (``accuracy``, ``f1``, ``roc_auc``, ``r2``, ``rmse``, ``mae``).
        challenger_score / champion_score: On the same rows.
        improvement: Challenger minus champion, signed so that positive is better.
        min_improvement: The margin asked for.
        holdout: Where the rows came from, and ``rows`` how many.
        run_id: The re-run.
        bento: The Bento exported after a promotion.
        switch: The champion move (or canary) published to the service.
    """

    name: str
    action: str
    reason: str
    challenger: str | None = None
    champion: str | None = None
    metric: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None
    improvement: float | None = None
    min_improvement: float = 0.0
    holdout: str | None = None
    rows: int = 0
    run_id: str | None = None
    bento: str | None = None
    switch: Switch | None = None
    drift: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["switch"] = self.switch.to_dict() if self.switch else None
        return out


def load_registered(
    client: MlflowClient, settings: Settings, name: str, version: str
) -> tuple[Any, dict[str, Any]]:
    """A registered model, its files checked against the capture's sha256 before loading; and its info."""
    import mlflow

    from nb2prod.capture.models import TRUSTED_MODULE_PREFIXES
    from nb2prod.serving.runtime import IntegrityError, load_verified
    from nb2prod.tracking import client as tracking

    mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags)
    run_id = tags.get("nb2prod.run_id") or mv.run_id
    record = tracking.load_json_artifact(client, run_id, f"models/{name}.json") or {}
    info = dict(record.get("info") or {})
    try:
        recorded = json.loads(tags.get("nb2prod.artifact_sha256") or "{}")
    except ValueError:
        recorded = {}
    with tempfile.TemporaryDirectory(prefix="nb2prod-load-") as tmp:
        folder = Path(tmp) / "mlflow"
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{tags['nb2prod.model_id']}" if tags.get("nb2prod.model_id") else mv.source,
            dst_path=str(folder),
            tracking_uri=settings.tracking_uri,
        )
        manifest = {
            "name": name,
            "trusted_prefixes": list(TRUSTED_MODULE_PREFIXES),
            "model": {
                **info,
                "artifact_sha256": recorded,
                "flavor": info.get("flavor") or tags.get("nb2prod.flavor"),
            },
        }
        try:
            model = load_verified(manifest, Path(tmp))
        except IntegrityError as exc:
            raise LifecycleError(
                f"{name}/{version} does not match its capture record: {exc}",
                hint="the artifact changed after capture; re-capture the model",
            ) from None
    return model, info


def _holdout_from_run(client: MlflowClient, run_id: str) -> tuple[Any, str, str] | None:
    """The test (or reference) frame the run's notebook tracked, with its target and a label."""
    from nb2prod.tracking import client as tracking

    for record, frame, matches in tracking.load_holdouts(client, run_id):
        if not record.get("target"):
            continue
        if not matches:
            raise LifecycleError(
                f"the stored holdout {record.get('name')}.parquet of run {run_id} does not match its recorded digest",
                hint="the artifact changed after capture; score on a file with --holdout",
            )
        where = f"{record.get('name')} ({record.get('role')} rows of run {run_id[:12]})"
        return frame, str(record["target"]), where
    return None


def _holdout_from_feedback(location: str, manifest: Mapping[str, Any]) -> tuple[Any, str, str] | None:
    import pandas as pd

    from nb2prod.serving.store import Store

    rows = Store(location, readonly=True).query(
        "SELECT p.features, f.label FROM predictions p JOIN feedback f ON f.request_id = p.request_id"
    )
    if not rows:
        return None
    target = (manifest.get("target") or {}).get("name") or "label"

    def label_of(text: str) -> Any:
        value = json.loads(text)
        return _native(value) if isinstance(value, str) else value

    records = [{**json.loads(features), target: label_of(label)} for features, label in rows]
    return pd.DataFrame.from_records(records), target, f"labelled feedback ({len(records)} rows)"


def score(model: Any, info: Mapping[str, Any], frame: Any, target: str, metric: str) -> float:
    """``metric`` of ``model`` on ``frame`` (its feature columns) against ``frame[target]``."""
    import numpy as np
    from sklearn import metrics as skm

    features = info.get("feature_names") or [c for c in frame.columns if c != target]
    X, y = frame[list(features)], frame[target]
    if metric == "roc_auc":
        proba = model.predict_proba(X)
        return float(skm.roc_auc_score(y, proba[:, 1] if proba.shape[1] == 2 else proba, multi_class="ovr"))
    pred = model.predict(X)
    if metric == "accuracy":
        return float(skm.accuracy_score(y, pred))
    if metric == "f1":
        return float(skm.f1_score(y, pred, average="macro"))
    if metric == "r2":
        return float(skm.r2_score(y, pred))
    if metric == "rmse":
        return float(np.sqrt(skm.mean_squared_error(y, pred)))
    if metric == "mae":
        return float(skm.mean_absolute_error(y, pred))
    raise LifecycleError(f"unknown metric {metric!r}", hint=f"use one of {', '.join(HIGHER_IS_BETTER)}")


def retrain(
    name: str,
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    if_drift: bool = False,
    since: str | None = None,
    min_improvement: float = 0.0,
    metric: str | None = None,
    holdout: str | Path | None = None,
    target: str | None = None,
    on_feedback: bool = False,
    canary: float | None = None,
    export: bool = True,
    timeout: int | None = None,
    kernel: str | None = None,
    progress: bool = False,
    params_checked: bool = False,
    settings: Settings | None = None,
) -> Decision:
    """Re-run ``notebook``, compare the challenger with the champion on the same rows, decide.

    Raises:
        ExecutionError: the notebook failed (nothing registered, champion untouched).
        LifecycleError: the notebook registered no version of ``name``, no rows to score on,
            a bad metric or margin.
    """
    import pandas as pd

    from nb2prod import execute
    from nb2prod.tracking import client as tracking
    from nb2prod.tracking import registry

    settings = settings or load_settings()
    if metric is not None and metric not in HIGHER_IS_BETTER:
        raise LifecycleError(f"unknown metric {metric!r}", hint=f"use one of {', '.join(HIGHER_IS_BETTER)}")
    if min_improvement < 0:
        raise LifecycleError(f"--min-improvement {min_improvement:g} is negative", hint="give a margin >= 0")
    drift: dict[str, Any] = {}
    if if_drift:
        report = monitor(name, since=since, settings=settings)
        drift = {"status": report.status, "drifted": list(report.drifted)}
        if report.status != "drift":
            return Decision(
                name=name,
                action="skipped",
                reason=f"no drift in the served traffic (status {report.status}): nothing retrained",
                drift=drift,
            )
    if holdout is not None and not Path(holdout).expanduser().is_file():
        raise LifecycleError(
            f"no holdout file at {Path(holdout).expanduser()}",
            hint="a CSV or Parquet file with the label column",
        )
    client = _client(settings)
    champion = registry.alias_version(client, name, registry.CHAMPION)

    result = execute.run_notebook(
        notebook,
        parameters or {},
        settings=settings,
        timeout=timeout,
        kernel=kernel,
        progress=progress,
        params_checked=params_checked,
    )
    result.raise_for_failure()
    challenger = result.registered.get(name)
    if challenger is None:
        raise LifecycleError(
            f"the notebook registered no version of {name!r} (it registered: {', '.join(result.registered) or 'nothing'})",
            hint=f"the notebook must capture the model with %nb2prod model EST --name {name}",
        )
    new_model, new_info = load_registered(client, settings, name, challenger)
    metric = metric or ("accuracy" if new_info.get("is_classifier") else "rmse")

    if champion is None:
        decision = Decision(
            name=name,
            action="promoted",
            reason=f"{name} had no champion: version {challenger} becomes the first",
            challenger=challenger,
            metric=metric,
            min_improvement=min_improvement,
            run_id=result.run_id,
            drift=drift,
        )
    else:
        if holdout is not None:
            path = Path(holdout).expanduser()
            frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
            found: tuple[Any, str, str] | None = (frame, target or "", f"file {path.name}")
        elif on_feedback:
            _, manifest = served_manifest(settings, name)
            found = _holdout_from_feedback(store_location(settings, name), manifest)
        else:
            assert result.run_id is not None
            found = _holdout_from_run(client, result.run_id)
        if found is None:
            raise LifecycleError(
                "no rows to score challenger and champion on",
                hint="track the test split with %nb2prod data test --role test --target LABEL, "
                "or give --holdout FILE --target LABEL, or --on-feedback",
            )
        frame, label, where = found
        label = target or label
        if label not in frame.columns:
            raise LifecycleError(f"the holdout has no label column {label!r}", hint="name it with --target")
        old_model, old_info = load_registered(client, settings, name, champion)
        scores = []
        for version, model, info in ((challenger, new_model, new_info), (champion, old_model, old_info)):
            try:
                scores.append(score(model, info, frame, label, metric))
            except LifecycleError:
                raise
            except Exception as exc:
                raise LifecycleError(
                    f"cannot score {name}/{version} on {where}: {type(exc).__name__}: {exc}",
                    hint="the rows must carry the model's feature columns and a label column of its kind",
                ) from None
        new_score, old_score = scores
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        improvement = sign * (new_score - old_score)
        better = improvement > 0 and improvement >= min_improvement
        verdict = "better" if better else "not better"
        reason = (
            f"{metric} {new_score:.4f} (v{challenger}) vs {old_score:.4f} (v{champion}) on {len(frame)} rows of {where}: "
            f"{verdict} by the margin {min_improvement:g} (improvement {improvement:+.4f})"
        )
        decision = Decision(
            name=name,
            action=("canary" if canary else "promoted") if better else "refused",
            reason=reason,
            challenger=challenger,
            champion=champion,
            metric=metric,
            challenger_score=new_score,
            champion_score=old_score,
            improvement=improvement,
            min_improvement=min_improvement,
            holdout=where,
            rows=len(frame),
            run_id=result.run_id,
            drift=drift,
        )

    figures = {k: v for k, v in decision.to_dict().items() if k not in ("switch", "bento")}
    switch = None
    bento = None
    if decision.action == "canary":
        switch = promote(
            name, challenger, canary=canary, reason="retrain canary", details=figures, settings=settings
        )
    elif decision.action == "promoted":
        switch = promote(name, challenger, reason="retrain", details=figures, settings=settings)
    if export and decision.action in ("promoted", "canary"):
        from nb2prod.export.builder import export_model

        canary_pair = (challenger, float(canary)) if decision.action == "canary" and canary else None
        bento = export_model(f"{name}@champion", settings=settings, canary=canary_pair).tag
    decision = Decision(**{**asdict(decision), "switch": switch, "bento": bento})
    tracking.log_json(client, decision.run_id, decision.to_dict(), "retrain/decision.json")
    client.set_model_version_tag(name, challenger, "nb2prod.decision", decision.action)
    client.set_model_version_tag(name, challenger, "nb2prod.decision.reason", decision.reason[:4000])
    return decision
