"""The REST API of the panel under ``/nb2prod/api/``: thin ``APIHandler`` shells over :mod:`.core`.

Every route is a jupyter_server ``APIHandler`` with ``@tornado.web.authenticated``: the
server's token (or login cookie) and its XSRF check apply to each; there is no route
without them. Store reads run in a thread so the server's loop stays free. Errors are
JSON ``{"message", "hint"}`` (nb2prod's one-line message and fix), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from nb2prod.config import Settings
from nb2prod.exceptions import ExportError, LifecycleError, Nb2ProdError, StoreError, UsageError
from nb2prod.jupyter import core
from nb2prod.jupyter.actions import ActionManager
from nb2prod.serving.redact import redact_text

API = "nb2prod/api"
_VERSION = re.compile(r"^\d{1,9}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}$")


class OutsideHomeError(UsageError):
    """A path that resolves outside the project home (refused with 403)."""


def _status(exc: Nb2ProdError) -> int:
    if isinstance(exc, OutsideHomeError):
        return 403
    if isinstance(exc, StoreError):
        return 502
    if isinstance(exc, ExportError | LifecycleError):
        return 409
    return 400


class Base(APIHandler):
    """Shared: the project's settings, JSON answers and nb2prod errors as 4xx."""

    @property
    def nb2prod_settings(self) -> Settings:
        settings: Settings = self.settings["nb2prod_settings"]
        return settings

    @property
    def root_dir(self) -> Path:
        return Path(self.settings["nb2prod_root_dir"])

    @property
    def manager(self) -> ActionManager:
        manager: ActionManager = self.settings["nb2prod_actions"]
        return manager

    def answer(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data, default=str))

    def fail(self, status: int, message: str, hint: str | None = None) -> None:
        self.answer({"message": redact_text(message), "hint": hint and redact_text(hint)}, status)

    async def guarded(self, fn: Callable[[], Awaitable[Any]]) -> None:
        try:
            data = await fn()
        except Nb2ProdError as exc:
            self.fail(_status(exc), exc.message, exc.hint)
            return
        except tornado.web.HTTPError:
            raise
        except Exception as exc:  # a bug or a library's failure: one line here, the traceback in the log
            self.log.exception("nb2prod: %s failed", self.request.path)
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.fail(500, f"{type(exc).__name__}: {first}", "the Jupyter server's log has the details")
            return
        self.answer(data)

    def body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise UsageError("the request body is not JSON", hint='send e.g. {"model": "NAME"}') from None
        if not isinstance(data, dict):
            raise UsageError("the request body is not a JSON object", hint='send e.g. {"model": "NAME"}')
        return data

    def notebook(self, relative: str) -> Path:
        try:
            return core.resolve_notebook(self.nb2prod_settings, self.root_dir, relative)
        except UsageError as exc:
            if "outside the project home" in exc.message or "absolute path" in exc.message:
                raise OutsideHomeError(exc.message, hint=exc.hint) from None
            raise


def _in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
    return asyncio.to_thread(fn, *args, **kwargs)


def _model_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise UsageError(f"model name {value!r} is not valid", hint='send {"model": "NAME", ...}')
    return value


def _version(value: Any, *, required: bool) -> str | None:
    if value in (None, "") and not required:
        return None
    text = str(value)
    if not _VERSION.match(text):
        raise UsageError(f"version {value!r} is not a version number", hint='send e.g. {"version": "3"}')
    return text


class ProjectHandler(Base):
    @tornado.web.authenticated
    async def get(self) -> None:
        await self.guarded(lambda: _in_thread(lambda: core.to_json(core.project_view(self.nb2prod_settings))))


class NotebookHandler(Base):
    """``GET /nb2prod/api/notebook?path=NB.ipynb``: runs, datasets, models and parameters of a notebook."""

    @tornado.web.authenticated
    async def get(self) -> None:
        async def view() -> Any:
            path = self.notebook(self.get_argument("path", ""))
            return core.to_json(await _in_thread(core.notebook_view, self.nb2prod_settings, path))

        await self.guarded(view)


class ModelsHandler(Base):
    """``GET /nb2prod/api/models[/NAME]``: registered models, versions, aliases, timeline, Bentos."""

    @tornado.web.authenticated
    async def get(self, name: str | None = None) -> None:
        async def view() -> Any:
            if name is None:
                return core.to_json(await _in_thread(core.models_view, self.nb2prod_settings))
            models = await _in_thread(core.models_view, self.nb2prod_settings, _model_name(name))
            if not models:
                raise UsageError(
                    f"no registered model named {name!r}", hint="GET /nb2prod/api/models lists them"
                )
            return core.to_json(models[0])

        await self.guarded(view)


def _served_models(settings: Settings) -> list[str]:
    """Models ``nb2prod serve`` recorded services for in this project (folder names, no store query)."""
    from nb2prod.lifecycle.services import services_dir

    serving = services_dir(settings, "x").parent.parent
    if not serving.is_dir():
        return []
    return sorted(p.name for p in serving.iterdir() if (p / "services").is_dir())


class ServicesHandler(Base):
    """``GET``: reachable services; ``POST {"url"}``: add one; ``DELETE ?url=``: forget one."""

    @tornado.web.authenticated
    async def get(self) -> None:
        async def view() -> Any:
            wanted = self.get_arguments("model")
            settings = self.nb2prod_settings
            models = wanted or _served_models(settings)
            return core.to_json(await _in_thread(core.services_view, settings, models))

        await self.guarded(view)

    @tornado.web.authenticated
    async def post(self) -> None:
        async def add() -> Any:
            url = core.check_service_url(self.body().get("url", ""))
            settings = self.nb2prod_settings
            core.save_services(settings, [*core.added_services(settings), url])
            return {"added": core.redact_uri(url)}

        await self.guarded(add)

    @tornado.web.authenticated
    async def delete(self) -> None:
        async def forget() -> Any:
            url = core.check_service_url(self.get_argument("url", ""))
            settings = self.nb2prod_settings
            kept = [u for u in core.added_services(settings) if u != url]
            core.save_services(settings, kept)
            return {"removed": core.redact_uri(url)}

        await self.guarded(forget)


def _report(settings: Settings, name: str) -> dict[str, Any]:
    from nb2prod.lifecycle.served import monitor
    from nb2prod.render.report import render_html

    report = monitor(name, settings=settings)
    return {"model": name, "status": report.status, "rows": report.rows, "html": render_html(report)}


class ReportHandler(Base):
    """``GET /nb2prod/api/report/NAME``: the drift report of the model's service (HTML inside JSON)."""

    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        await self.guarded(lambda: _in_thread(_report, self.nb2prod_settings, _model_name(name)))


class ActionsHandler(Base):
    """``GET``: the actions of this server; ``POST {"action", ...}``: start one (202)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        self.answer([a.to_dict() for a in self.manager.list()])

    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = self.body()
            kind = body.get("action")
            args: dict[str, Any]
            if kind == "export":
                args = {
                    "model": _model_name(body.get("model")),
                    "version": _version(body.get("version"), required=False),
                }
            elif kind == "promote":
                args = {
                    "model": _model_name(body.get("model")),
                    "version": _version(body.get("version"), required=True),
                }
            elif kind == "rollback":
                args = {
                    "model": _model_name(body.get("model")),
                    "version": _version(body.get("version"), required=False),
                }
            elif kind == "rerun":
                params = body.get("parameters") or {}
                if not isinstance(params, dict):
                    raise UsageError(
                        "parameters must be an object", hint='send {"parameters": {"alpha": "0.5"}}'
                    )
                args = {"notebook": str(self.notebook(str(body.get("path", "")))), "parameters": params}
            else:
                raise UsageError(f"unknown action {kind!r}", hint="one of: export, promote, rollback, rerun")
            action = await self.manager.start(str(kind), args)
        except Nb2ProdError as exc:
            self.fail(_status(exc), exc.message, exc.hint)
            return
        self.answer(action.to_dict(), 202)


class ActionHandler(Base):
    """``GET /nb2prod/api/actions/ID``: progress, result or error; ``DELETE``: cancel it."""

    @tornado.web.authenticated
    async def get(self, action_id: str) -> None:
        action = self.manager.get(action_id)
        if action is None:
            self.fail(404, f"no action {action_id!r}", "GET /nb2prod/api/actions lists them")
            return
        self.answer(action.to_dict())

    @tornado.web.authenticated
    async def delete(self, action_id: str) -> None:
        action = await self.manager.cancel(action_id)
        if action is None:
            self.fail(404, f"no action {action_id!r}", "GET /nb2prod/api/actions lists them")
            return
        self.answer(action.to_dict())


def handlers(base_url: str) -> list[tuple[str, type[Base]]]:
    """The routes, under the server's ``base_url``."""

    def route(path: str) -> str:
        return url_path_join(base_url, API, path)

    return [
        (route("project"), ProjectHandler),
        (route("notebook"), NotebookHandler),
        (route("models"), ModelsHandler),
        (route(r"models/([^/]+)"), ModelsHandler),
        (route("services"), ServicesHandler),
        (route(r"report/([^/]+)"), ReportHandler),
        (route("actions"), ActionsHandler),
        (route(r"actions/([0-9a-f]{12})"), ActionHandler),
    ]
