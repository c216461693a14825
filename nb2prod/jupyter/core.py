"""What the JupyterLab panel shows, as dataclasses: the pure core behind the REST handlers.

Every function reads the project's stores through nb2prod's own modules (tracking,
lifecycle, export's Bento store) and returns data; the handlers only turn it into JSON.
Nothing here writes. The store URL is always shown redacted (:func:`redact_uri`): a
password in ``MLFLOW_TRACKING_URI`` never reaches the browser.

Store reads are batched so a project with hundreds of runs and versions answers fast: one
``search_experiments``, one ``search_runs`` for the notebook's runs, one
``search_registered_models`` and one ``search_model_versions`` (no query per run or version).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings
from nb2prod.exceptions import StoreError, UsageError
from nb2prod.serving.redact import redact_text, redact_uri
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "BentoView",
    "DatasetView",
    "ModelView",
    "NotebookView",
    "ProjectView",
    "RunView",
    "ServiceView",
    "VersionView",
    "models_view",
    "notebook_view",
    "parameters_view",
    "project_view",
    "services_view",
]

# Runs shown for a notebook (newest first); older ones are counted, not listed.
RUN_LIMIT = 200
# The tracking store's answer for "every version" (one query).
VERSION_LIMIT = 10_000
# A service that does not answer in this time is shown as unreachable.
SERVICE_TIMEOUT_S = 2.0
SERVICES_FILE = "jupyter/services.json"


def _json(obj: Any) -> Any:
    return asdict(obj)


# ------------------------------------------------------------------------------------------ project


@dataclass(frozen=True)
class ProjectView:
    """The project the Jupyter server works in.

    Attributes:
        home: The project home (every path the panel may touch is inside it).
        tracking_uri: The MLflow store, credentials hidden.
        ui_url: The MLflow UI (for links) when the store is a tracking server, else None.
        version: nb2prod's version.
    """

    home: str
    tracking_uri: str
    ui_url: str | None
    version: str


def ui_base(tracking_uri: str) -> str | None:
    """The MLflow UI behind an http(s) tracking URI (credentials dropped)."""
    from nb2prod.render.notebook_html import ui_base as base

    return base(tracking_uri)


def project_view(settings: Settings) -> ProjectView:
    from nb2prod._version import __version__

    return ProjectView(
        home=str(settings.home),
        tracking_uri=redact_uri(settings.tracking_uri),
        ui_url=ui_base(settings.tracking_uri),
        version=__version__,
    )


# ------------------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class RunView:
    """One run of the notebook.

    Attributes:
        changes: What changed since the previous run of the notebook (``environment``,
            ``code``, ``data: NAME``); empty for the first run or when nothing changed.
        reproduced: The verdict of ``nb2prod reproduce`` on this run (None when never run);
            on a reproduction run, ``reproduces`` names the original.
    """

    run_id: str
    experiment_id: str
    kind: str
    status: str
    started: float | None
    duration_s: float | None
    params: dict[str, str]
    metrics: dict[str, float]
    env_digest: str | None
    notebook_digest: str | None
    git_commit: str | None
    data_digests: dict[str, str]
    changes: list[str]
    reproduced: bool | None
    reproduces: str | None
    url: str | None


@dataclass(frozen=True)
class DatasetView:
    """A dataset the notebook's latest run tracked: digest, shape, schema summary."""

    name: str
    role: str
    digest: str
    rows: int | None
    columns: int | None
    schema: list[dict[str, Any]]
    run_id: str


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias (the alias history), newest last."""

    alias: str
    from_version: str | None
    to_version: str | None
    at: str
    reason: str
    actor: str


@dataclass(frozen=True)
class BentoView:
    """A Bento built in this project: its tag and the versions it carries (the exported one first)."""

    tag: str
    model_version: str
    versions: list[str]
    latest: bool
    created: float


@dataclass(frozen=True)
class VersionView:
    run_id: str | None
    version: str
    aliases: list[str]
    created: float | None
    status: str
    description: str
    from_notebook: bool
    bentos: list[str]
    url: str | None


@dataclass(frozen=True)
class ModelView:
    """A registered model: versions (newest first), aliases, the alias timeline, the Bentos."""

    name: str
    aliases: dict[str, str]
    versions: list[VersionView]
    timeline: list[AliasMove]
    bentos: list[BentoView]
    url: str | None


@dataclass(frozen=True)
class ParameterView:
    name: str
    type_name: str
    default: str
    help: str


@dataclass(frozen=True)
class NotebookView:
    """Everything the panel shows for one notebook (one request: the first paint).

    Attributes:
        path: The notebook, relative to the project home.
        runs: Latest first (at most :data:`RUN_LIMIT`); ``more_runs`` counts the rest.
        datasets: What the latest run that tracked data tracked.
        models: Registered models with at least one version from this notebook.
        parameters: The notebook's ``parameters`` cell (None when it has none).
    """

    path: str
    project: ProjectView
    runs: list[RunView]
    more_runs: bool
    datasets: list[DatasetView]
    models: list[ModelView]
    parameters: list[ParameterView] | None
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


def resolve_notebook(settings: Settings, root_dir: Path, relative: str) -> Path:
    """The notebook at ``relative`` (to the Jupyter root), checked to lie inside the project home.

    Raises:
        UsageError: no path, not an ``.ipynb``, or a path outside the project home (``..``,
            an absolute path or a link elsewhere).
    """
    if not relative or "\x00" in relative:
        raise UsageError(
            "no notebook path given", hint="pass ?path=NOTEBOOK.ipynb (relative to Jupyter's root)"
        )
    if Path(relative).is_absolute():
        raise UsageError(f"{relative!r} is an absolute path", hint="give the path relative to Jupyter's root")
    path = (root_dir / relative).resolve()
    home = settings.home.resolve()
    if not path.is_relative_to(home) or not path.is_relative_to(root_dir.resolve()):
        raise UsageError(
            f"{relative!r} is outside the project home {home}",
            hint="open a notebook inside the project (set NB2PROD_HOME to change it)",
        )
    if path.suffix != ".ipynb":
        raise UsageError(f"{relative!r} is not a notebook", hint="give the path of an .ipynb file")
    return path


@contextlib.contextmanager
def _reading(settings: Settings, what: str) -> Iterator[None]:
    """A read of the tracking store; a failure is a :class:`StoreError` with every URL redacted.

    (The store's own exception text can carry the URL it called, credentials included.)
    """
    from nb2prod.tracking import client as tracking

    try:
        with tracking.store_call(settings, what=what, not_recorded="nothing (read only)"):
            yield
    except StoreError as exc:
        message = exc.message.rsplit("; not recorded: ", 1)[0]
        raise StoreError(
            redact_text(message), not_recorded=exc.not_recorded, hint=exc.hint and redact_text(exc.hint)
        ) from None


def _client(settings: Settings) -> MlflowClient:
    from nb2prod.tracking import client as tracking

    return tracking.client(settings)


def _run_url(ui: str | None, experiment_id: str, run_id: str) -> str | None:
    return f"{ui}/#/experiments/{experiment_id}/runs/{run_id}" if ui else None


def _version_url(ui: str | None, name: str, version: str) -> str | None:
    from urllib.parse import quote

    return f"{ui}/#/models/{quote(name, safe='')}/versions/{version}" if ui else None


def _changes(run: RunView, previous: RunView | None) -> list[str]:
    if previous is None:
        return []
    out = []
    if run.env_digest and previous.env_digest and run.env_digest != previous.env_digest:
        out.append("environment")
    if run.notebook_digest and previous.notebook_digest and run.notebook_digest != previous.notebook_digest:
        out.append("code")
    for name, digest in sorted(run.data_digests.items()):
        before = previous.data_digests.get(name)
        if before is None:
            out.append(f"data: {name} (new)")
        elif before != digest:
            out.append(f"data: {name}")
    return out


def _search_runs(client: MlflowClient, key: str, limit: int) -> list[Any]:
    from mlflow.entities import ViewType

    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    escaped = key.replace("'", "\\'")
    return list(
        client.search_runs(
            experiments,
            filter_string=f"tags.`{names.TAG_NOTEBOOK}` = '{escaped}'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    )


def _run_views(runs: list[Any], ui: str | None) -> list[RunView]:
    verdicts: dict[str, bool] = {}
    for run in runs:  # a reproduction run names what it reproduced and records the verdict
        tags = run.data.tags
        original, verdict = tags.get(names.TAG_REPRODUCES), tags.get(names.TAG_REPRODUCED)
        if original and verdict in ("true", "false") and original not in verdicts:
            verdicts[original] = verdict == "true"  # runs are newest first: the latest verdict wins
    views = []
    for run in runs:
        info, tags = run.info, run.data.tags
        end = info.end_time
        views.append(
            RunView(
                run_id=info.run_id,
                experiment_id=str(info.experiment_id),
                kind=tags.get(names.TAG_KIND, ""),
                status=str(info.status),
                started=info.start_time / 1000 if info.start_time else None,
                duration_s=(end - info.start_time) / 1000 if end and info.start_time else None,
                params={k: redact_text(v) for k, v in run.data.params.items()},
                metrics=dict(run.data.metrics),
                env_digest=tags.get(names.TAG_ENV_DIGEST),
                notebook_digest=tags.get(names.TAG_NOTEBOOK_DIGEST) or tags.get(names.TAG_SOURCE_DIGEST),
                git_commit=tags.get(names.TAG_GIT_COMMIT),
                data_digests=names.data_digests(tags),
                changes=[],
                reproduced=verdicts.get(info.run_id),
                reproduces=tags.get(names.TAG_REPRODUCES),
                url=_run_url(ui, str(info.experiment_id), info.run_id),
            )
        )
    # what changed: against the next older run (runs are newest first)
    return [
        RunView(**{**asdict(v), "changes": _changes(v, views[i + 1] if i + 1 < len(views) else None)})
        for i, v in enumerate(views)
    ]


def _datasets(runs: list[Any]) -> list[DatasetView]:
    """The datasets of the newest run that tracked any, from the run's inputs (no artifact read)."""
    for run in runs:
        inputs = getattr(run, "inputs", None)
        dataset_inputs = list(getattr(inputs, "dataset_inputs", None) or [])
        if not dataset_inputs:
            continue
        full = names.data_digests(run.data.tags)
        out = []
        for item in dataset_inputs:
            ds = item.dataset
            role = next((t.value for t in item.tags or [] if t.key == "mlflow.data.context"), "")
            try:
                profile = json.loads(ds.profile or "{}")
            except ValueError:
                profile = {}
            try:
                schema = json.loads(ds.schema or "{}").get("mlflow_colspec", [])
            except (ValueError, AttributeError):
                schema = []
            rows = profile.get("num_rows")
            elements = profile.get("num_elements")
            cols = len(schema) or (elements // rows if rows and elements else None)
            out.append(
                DatasetView(
                    name=ds.name,
                    role=role,
                    digest=full.get(ds.name, ds.digest),
                    rows=rows,
                    columns=cols,
                    schema=[
                        {"name": c.get("name"), "type": c.get("type"), "required": c.get("required", True)}
                        for c in schema
                    ],
                    run_id=run.info.run_id,
                )
            )
        return out
    return []


def _bentos(settings: Settings, name: str) -> list[BentoView]:
    """The Bentos of ``name`` in this project's store, newest first, and the versions each carries."""
    from nb2prod.exceptions import ExportError
    from nb2prod.export.bento_store import BENTOS, LATEST, bento_name, manifest_path

    try:
        bname = bento_name(name)
    except ExportError:
        return []
    folder = settings.bentoml_home / BENTOS / bname
    if not folder.is_dir():
        return []
    latest_file = folder / LATEST
    latest = latest_file.read_text(encoding="utf-8").strip() if latest_file.is_file() else ""
    out = []
    for version_dir in folder.iterdir():
        if not version_dir.is_dir():
            continue
        tag = f"{bname}:{version_dir.name}"
        path = manifest_path(settings.bentoml_home, tag)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        primary = str(data.get("model_version", ""))
        carried = [str(v) for v in (data.get("models") or {})] or [primary]
        out.append(
            BentoView(
                tag=tag,
                model_version=primary,
                versions=carried,
                latest=version_dir.name == latest,
                created=path.stat().st_mtime,
            )
        )
    return sorted(out, key=lambda b: -b.created)


def _model_views(
    settings: Settings,
    client: MlflowClient,
    ui: str | None,
    *,
    only_runs: set[str] | None = None,
    notebook_key: str | None = None,
    only_name: str | None = None,
) -> list[ModelView]:
    """Registered models (two store queries for all of them), newest version first."""
    from nb2prod.tracking.registry import history_from_tags

    if only_name is not None:
        escaped = only_name.replace("'", "\\'")
        models = list(client.search_registered_models(filter_string=f"name = '{escaped}'"))
        versions = list(client.search_model_versions(f"name = '{escaped}'", max_results=VERSION_LIMIT))
    else:
        models = list(client.search_registered_models(max_results=1000))
        versions = list(client.search_model_versions(max_results=VERSION_LIMIT))
    by_model: dict[str, list[Any]] = {}
    for mv in versions:
        by_model.setdefault(mv.name, []).append(mv)
    out = []
    for model in sorted(models, key=lambda m: m.name):
        mvs = by_model.get(model.name, [])

        def mine(mv: Any) -> bool:
            tags = mv.tags or {}
            return bool(
                (only_runs is not None and mv.run_id in only_runs)
                or (notebook_key is not None and tags.get(names.TAG_NOTEBOOK) == notebook_key)
            )

        if (only_runs is not None or notebook_key is not None) and not any(mine(mv) for mv in mvs):
            continue
        aliases = {str(k): str(v) for k, v in dict(getattr(model, "aliases", None) or {}).items()}
        for mv in mvs:
            for alias in mv.aliases or []:
                aliases[str(alias)] = str(mv.version)
        by_version: dict[str, list[str]] = {}  # search_model_versions leaves aliases out
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        timeline = [
            AliasMove(
                alias=e.alias,
                from_version=e.from_version,
                to_version=e.to_version,
                at=e.at,
                reason=e.reason,
                actor=e.actor,
            )
            for e in history_from_tags(model.tags)
        ]
        bentos = _bentos(settings, model.name)
        carried_by: dict[str, list[str]] = {}
        for bento in bentos:
            for v in bento.versions:
                carried_by.setdefault(v, []).append(bento.tag)
        version_views = [
            VersionView(
                version=str(mv.version),
                run_id=mv.run_id,
                aliases=sorted({*(str(a) for a in (mv.aliases or [])), *by_version.get(str(mv.version), [])}),
                created=mv.creation_timestamp / 1000 if mv.creation_timestamp else None,
                status=str(mv.status),
                description=mv.description or "",
                from_notebook=mine(mv) if (only_runs is not None or notebook_key is not None) else False,
                bentos=carried_by.get(str(mv.version), []),
                url=_version_url(ui, model.name, str(mv.version)),
            )
            for mv in sorted(mvs, key=lambda m: -int(m.version))
        ]
        out.append(
            ModelView(
                name=model.name,
                aliases=dict(sorted(aliases.items())),
                versions=version_views,
                timeline=timeline,
                bentos=bentos,
                url=f"{ui}/#/models/{model.name}" if ui else None,
            )
        )
    return out


def parameters_view(notebook: Path) -> list[ParameterView] | None:
    """The notebook's ``parameters`` cell (None without one): the re-run form."""
    from nb2prod.execute.parameters import inspect_parameters

    specs = inspect_parameters(notebook)
    if specs is None:
        return None
    return [ParameterView(s.name, s.type_name, s.default, s.help) for s in specs]


def notebook_view(settings: Settings, notebook: Path, *, limit: int = RUN_LIMIT) -> NotebookView:
    """Runs, datasets, models and parameters of ``notebook`` (an absolute path inside the home)."""
    started = time.perf_counter()
    project = project_view(settings)
    errors: list[str] = []
    try:
        parameters = parameters_view(notebook)
    except UsageError as exc:
        parameters, errors = None, [*errors, str(exc)]
    except Exception as exc:  # papermill cannot read it (no kernelspec, say): the rest still shows
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        parameters, errors = None, [*errors, f"cannot read the parameters cell: {first}"]
    with _reading(settings, "reading the notebook's runs"):
        client = _client(settings)
        runs = _search_runs(client, str(notebook), limit + 1)
        more = len(runs) > limit
        runs = runs[:limit]
        run_views = _run_views(runs, project.ui_url)
        models = _model_views(
            settings,
            client,
            project.ui_url,
            only_runs={r.info.run_id for r in runs},
            notebook_key=str(notebook),
        )
    return NotebookView(
        path=str(notebook.relative_to(settings.home.resolve())),
        project=project,
        runs=run_views,
        more_runs=more,
        datasets=_datasets(runs),
        models=models,
        parameters=parameters,
        seconds=round(time.perf_counter() - started, 4),
        errors=errors,
    )


def models_view(settings: Settings, name: str | None = None) -> list[ModelView]:
    """Every registered model of the store (or the one named), with versions, aliases, timeline, Bentos."""

    with _reading(settings, "reading the registry"):
        return _model_views(settings, _client(settings), ui_base(settings.tracking_uri), only_name=name)


# ------------------------------------------------------------------------------------------ services


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float | None
    drifted: bool


@dataclass(frozen=True)
class ServiceView:
    """A served model the panel can reach.

    Attributes:
        url: Where it listens (credentials hidden).
        source: ``recorded`` (``nb2prod serve`` in this project) or ``added`` (by the user).
        reachable: It answered ``/metadata``.
        active_version / canary: What it serves now.
        requests_per_minute: Rows logged over the last 10 minutes / 10 (None without a local store).
        drift_status: ``ok``, ``drift`` or ``insufficient_data`` (its ``/drift``).
        features: Per-feature drift, the drifted first, then by PSI.
        quality: Live quality from feedback (the store's report; empty without labels).
    """

    url: str
    model: str | None
    source: str
    reachable: bool
    error: str | None = None
    bento: str | None = None
    active_version: str | None = None
    canary: dict[str, Any] | None = None
    requests_per_minute: float | None = None
    drift_status: str | None = None
    features: list[FeatureDrift] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def check_service_url(url: str) -> str:
    """A service URL a user adds: ``http(s)://host[:port]``, no trailing slash.

    Raises:
        UsageError: another scheme or no host.
    """
    from urllib.parse import urlsplit

    text = str(url).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{redact_uri(text)!r} is not a service URL", hint="e.g. http://127.0.0.1:3000")
    return text


def added_services(settings: Settings) -> list[str]:
    """The service URLs the user added in the panel (kept in the project's state dir)."""
    path = settings.state_dir / SERVICES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(u) for u in data if isinstance(u, str)] if isinstance(data, list) else []


def save_services(settings: Settings, urls: list[str]) -> None:
    path = settings.state_dir / SERVICES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(sorted(set(urls))), encoding="utf-8")
    tmp.replace(path)


def _local_figures(settings: Settings, model: str) -> tuple[float | None, dict[str, Any]]:
    """Requests per minute (last 10 min) and live quality, from the model's prediction store here."""
    from nb2prod.lifecycle.served import monitor

    try:
        report = monitor(model, since="10m", settings=settings)
    except Exception:
        return None, {}
    quality = {k: v for k, v in dict(report.quality).items() if v is not None}
    return round(report.rows / 10.0, 2), quality


def _service_view(settings: Settings, url: str, source: str, model: str | None) -> ServiceView:
    shown = redact_uri(url)
    try:
        meta = _get_json(url + "/metadata", SERVICE_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return ServiceView(
            url=shown, model=model, source=source, reachable=False, error=redact_text(str(exc))[:200]
        )
    model = str(meta.get("model") or model or "") or None
    try:
        drift = _get_json(url + "/drift", SERVICE_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError):
        drift = {}
    drifted = set(drift.get("drifted") or [])
    features = [
        FeatureDrift(name=str(k), psi=(v or {}).get("psi"), drifted=k in drifted)
        for k, v in (drift.get("features") or {}).items()
    ]
    features.sort(key=lambda f: (not f.drifted, -(f.psi or 0.0), f.name))
    rpm, quality = _local_figures(settings, model) if model else (None, {})
    return ServiceView(
        url=shown,
        model=model,
        source=source,
        reachable=True,
        bento=meta.get("bento"),
        active_version=None if meta.get("model_version") is None else str(meta.get("model_version")),
        canary=meta.get("canary"),
        requests_per_minute=rpm,
        drift_status=drift.get("status"),
        features=features,
        quality=quality,
    )


def services_view(settings: Settings, models: list[str]) -> list[ServiceView]:
    """The services of ``models`` that ``nb2prod serve`` recorded, then those the user added."""
    from nb2prod.lifecycle.services import recorded_services

    seen: set[str] = set()
    out = []
    for model in models:
        for record in recorded_services(settings, model):
            url = str(record["url"]).rstrip("/")
            if url not in seen:
                seen.add(url)
                out.append(_service_view(settings, url, "recorded", model))
    for url in added_services(settings):
        if url not in seen:
            seen.add(url)
            out.append(_service_view(settings, url, "added", None))
    return out


def to_json(obj: Any) -> Any:
    """A view (dataclass or list of them) as JSON-ready data."""
    if isinstance(obj, list):
        return [to_json(o) for o in obj]
    return _json(obj)
