"""``%nb2prod``: the IPython connectivity layer. It parses, resolves names, calls the core
(:mod:`nb2prod.session`, :mod:`nb2prod.export`, :mod:`nb2prod.lifecycle`) and shows what it returns
through :mod:`nb2prod.render.notebook`.

Errors: a user's mistake raises nb2prod's own usage error (imported here as
``Nb2ProdUsageError``), never IPython's ``IPython.core.error.UsageError``: ours carries a ``hint``,
belongs to the :class:`~nb2prod.exceptions.Nb2ProdError` tree that scripts catch, and IPython shows it
through its ``_render_traceback_`` (the message, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.magic import Magics, line_magic, magics_class

from nb2prod import session
from nb2prod.exceptions import StoreError, VariableNotFoundError
from nb2prod.exceptions import UsageError as Nb2ProdUsageError
from nb2prod.render import notebook as render
from nb2prod.render import notebook_html as html
from nb2prod.session import quiet

SUBCOMMANDS = ("start", "data", "model", "status", "end", "export", "score", "monitor", "trace")


class _HelpShown(Exception):
    """``--help`` printed the help: the magic ends there, successfully."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises nb2prod's usage error instead of exiting the kernel."""

    def error(self, message: str) -> NoReturn:
        raise Nb2ProdUsageError(
            f"%nb2prod {self.prog.split()[-1]}: {message}", hint=f"usage: {self.format_usage().strip()}"
        )

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # argparse exits after printing --help: end the magic there, without an error.
        if status == 0:
            raise _HelpShown
        raise Nb2ProdUsageError(message or self.format_usage())


def _parsers() -> dict[str, _Parser]:
    p: dict[str, _Parser] = {}
    start = p["start"] = _Parser(prog="%nb2prod start", add_help=True)
    start.add_argument("experiment", nargs="?", help="MLflow experiment (default: settings)")
    start.add_argument("--notebook", help="path of this notebook, when nb2prod cannot tell")
    start.add_argument("--run-name", help="MLflow run name")
    data = p["data"] = _Parser(prog="%nb2prod data")
    data.add_argument(
        "obj", metavar="DF", help="a DataFrame, Series or array variable, or a file/directory path"
    )
    data.add_argument("--name", help="dataset name (default: the variable name or file stem)")
    data.add_argument("--role", default="train", choices=list(session.ROLES))
    data.add_argument("--target", help="label column inside DF (its y)")
    model = p["model"] = _Parser(prog="%nb2prod model")
    model.add_argument("est", metavar="EST", help="the fitted model variable")
    model.add_argument("--X", dest="X", help="features it was fitted on (default: the tracked train frame)")
    model.add_argument("--y", dest="y", help="labels it was fitted on")
    model.add_argument("--name", help="registered model name (default: the variable name)")
    model.add_argument("--trust", action="append", default=[], help="a type to trust when loading (repeat)")
    model.add_argument(
        "--skip-identical",
        action="store_true",
        help="register nothing when a version with the same code, data and metrics exists",
    )
    model.add_argument(
        "--no-champion",
        action="store_true",
        help="do not make the model's first version its champion (setting: first_champion)",
    )
    status = p["status"] = _Parser(prog="%nb2prod status")
    status.add_argument(
        "--panel", action="store_true", help="also show the interactive panel (ipywidgets, not saved)"
    )
    end = p["end"] = _Parser(prog="%nb2prod end")
    end.add_argument("--failed", action="store_true", help="mark the run FAILED")
    export = p["export"] = _Parser(prog="%nb2prod export")
    export.add_argument("ref", metavar="NAME[@alias|/version]", help="the registered model to export")
    export.add_argument("--output", help="also write the Bento as an archive (FILE.bento)")
    score = p["score"] = _Parser(prog="%nb2prod score")
    score.add_argument(
        "ref",
        metavar="NAME[@alias|/version]",
        help="the registered model to score with (NAME alone: NAME@champion)",
    )
    score.add_argument("input", metavar="INPUT", help="a CSV or Parquet file (or a folder of them)")
    score.add_argument("-o", "--output", required=True, help="where the predictions go (.csv or .parquet)")
    score.add_argument("--rejects", help="keep refused rows, with their reasons, in this file")
    score.add_argument("--id-column", help="an input column to carry into the predictions")
    score.add_argument("--no-log", action="store_true", help="do not log the rows for monitoring")
    monitor = p["monitor"] = _Parser(prog="%nb2prod monitor")
    monitor.add_argument("name", metavar="NAME", help="the served model")
    monitor.add_argument(
        "--since", help="ISO-8601 time (UTC unless it says otherwise) or a duration: 30m, 2h"
    )
    monitor.add_argument("--until", help="end of the window, as --since")
    monitor.add_argument("--html", help="also write the HTML report to this file")
    trace = p["trace"] = _Parser(prog="%nb2prod trace")
    trace.add_argument("name", metavar="NAME", help="the served (or batch-scored) model")
    trace.add_argument("request_id", metavar="REQUEST_ID", help="the request id of one logged prediction")
    return p


@magics_class
class Nb2ProdMagics(Magics):
    """The ``%nb2prod`` line magic and its subcommands."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self._parsers = _parsers()
        # Variable name -> id() of the object tracked under it, to warn when it is rebound.
        self.tracked_ids: dict[str, int] = {}
        self._warned: set[str] = set()

    @line_magic
    def nb2prod(self, line: str) -> None:
        """%nb2prod start|data|model|status|end ... (``%nb2prod SUB --help`` for each)."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise Nb2ProdUsageError(f"cannot parse '{line}': {exc}", hint="check the quotes") from None
        if words and words[0] in ("-h", "--help", "help"):
            print(_overview(self._parsers))
            return
        if not words:
            raise Nb2ProdUsageError(
                "usage: %nb2prod {" + ",".join(SUBCOMMANDS) + "} ...", hint="e.g. %nb2prod start churn"
            )
        sub, rest = words[0], words[1:]
        if sub not in SUBCOMMANDS:
            close = difflib.get_close_matches(sub, SUBCOMMANDS, n=1)
            suggestion = f"did you mean '{close[0]}'? " if close else ""
            raise Nb2ProdUsageError(
                f"unknown subcommand '{sub}'", hint=f"{suggestion}valid: {', '.join(SUBCOMMANDS)}"
            )
        try:
            args = self._parsers[sub].parse_args(rest)
        except _HelpShown:
            return
        handler: Callable[[argparse.Namespace], None] = getattr(self, f"_{sub}")
        try:
            handler(args)
        except StoreError as exc:
            session.note_not_recorded(exc)
            open_session = session.active()
            if open_session is not None and open_session.settings.strict:
                raise
            # The store failed, not the user: warn, keep the notebook running, count it.
            print(f"nb2prod WARNING: {exc}", file=sys.stderr)

    @property
    def _ns(self) -> dict[str, Any]:
        """The notebook's namespace."""
        if self.shell is None:  # pragma: no cover - IPython gives every registered Magics its shell
            raise Nb2ProdUsageError(
                "%nb2prod runs only inside IPython", hint="use nb2prod.start() etc. in scripts"
            )
        ns: dict[str, Any] = self.shell.user_ns
        return ns

    # -- subcommands -----------------------------------------------------------------

    def _lookup(self, name: str, what: str) -> Any:
        ns = self._ns
        if name in ns:
            return ns[name]
        candidates = [k for k in ns if not k.startswith("_") and isinstance(k, str)]
        close = difflib.get_close_matches(name, candidates, n=1)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else f"define {name} in a cell above, or pass another {what}"
        )
        raise VariableNotFoundError(name, hint=hint)

    def _start(self, args: argparse.Namespace) -> None:
        with quiet.library_logs():
            result = session.start(args.experiment, notebook=args.notebook, run_name=args.run_name)
        self.tracked_ids.clear()
        self._warned.clear()
        _show(html.start_shown(result))

    def _data(self, args: argparse.Namespace) -> None:
        token: str = args.obj
        if token in self._ns:
            obj = self._ns[token]
            name = args.name or token
            record = session.data(obj, name=name, role=args.role, target=args.target)
            self.tracked_ids[token] = id(obj)
            self._warned.discard(token)
        elif Path(token).expanduser().exists():
            record = session.data(Path(token), name=args.name, role=args.role, target=args.target)
        else:
            self._lookup(token, "DataFrame or an existing path")
            return
        _show(html.dataset_shown(record))

    def _model(self, args: argparse.Namespace) -> None:
        est = self._lookup(args.est, "fitted model")
        X = self._lookup(args.X, "feature frame") if args.X else None
        y = self._lookup(args.y, "label series") if args.y else None
        progress = _Progress(in_kernel=getattr(self.shell, "kernel", None) is not None)
        try:
            record = session.model(
                est,
                X=X,
                y=y,
                name=args.name or args.est,
                trust=tuple(args.trust),
                variable=args.est,
                progress=progress,
                skip_identical=args.skip_identical,
                champion=False if args.no_champion else None,
            )
        except BaseException:
            progress.close()
            raise
        open_session = session.current()
        aliases = _aliases([record.model_uri])
        progress.finish(
            html.model_shown(
                record,
                aliases.get(record.model_uri, ()),
                html.ui_base(open_session.settings.tracking_uri),
                open_session.experiment_id,
            )
        )

    def _status(self, args: argparse.Namespace) -> None:
        report = session.status()
        uris = [m.model_uri for m in report.models]
        shown = html.status_shown(
            report, _aliases(uris), session.current().experiment_id, _bentos(report.models)
        )
        _show(shown)
        if args.panel:
            from nb2prod import widgets

            widgets.show_panel(report, self.shell)

    def _end(self, args: argparse.Namespace) -> None:
        _show(html.end_shown(session.end("FAILED" if args.failed else "FINISHED")))

    def _export(self, args: argparse.Namespace) -> None:
        from nb2prod.export import export_model

        _show(html.export_shown(export_model(args.ref, output=args.output)))

    def _score(self, args: argparse.Namespace) -> None:
        from nb2prod.batch import score

        result = score(
            args.ref,
            Path(args.input).expanduser(),
            Path(args.output).expanduser(),
            rejects=Path(args.rejects).expanduser() if args.rejects else None,
            id_column=args.id_column,
            log=not args.no_log,
        )
        _show(html.score_shown(result))

    def _monitor(self, args: argparse.Namespace) -> None:
        from IPython.display import display

        from nb2prod import lifecycle
        from nb2prod.render.report import render_html

        report = lifecycle.monitor(args.name, since=args.since, until=args.until)
        if args.html:
            Path(args.html).expanduser().write_text(render_html(report), encoding="utf-8")
        display(render.MonitorView(report))

    def _trace(self, args: argparse.Namespace) -> None:
        from nb2prod.lifecycle.trace import trace

        _show(html.trace_shown(trace(args.name, args.request_id)))

    # -- cell hook -------------------------------------------------------------------

    def post_run_cell(self, result: Any) -> None:
        """Warn once when a tracked variable is rebound to another object (its record is stale); log
        the parameters a cell set (``parameters`` cell) that the run does not have yet."""
        try:
            source = getattr(getattr(result, "info", None), "raw_cell", None)
            if isinstance(source, str) and session.active() is not None:
                for name in session.sync_parameters(source):
                    print(
                        f"nb2prod: parameter {name} changed after the run logged it; MLflow keeps a run's "
                        "parameters, so run %nb2prod start again to record a run with the new value",
                        file=sys.stderr,
                    )
            ns = self._ns
            for name, ident in self.tracked_ids.items():
                if name in ns and id(ns[name]) != ident and name not in self._warned:
                    self._warned.add(name)
                    print(
                        f"nb2prod: '{name}' now holds another object than the one tracked; "
                        f"run %nb2prod data {name} again to record its new content",
                        file=sys.stderr,
                    )
        except Exception as exc:  # capture never breaks the notebook
            print(f"nb2prod WARNING: cell hook failed: {exc}", file=sys.stderr)


def _overview(parsers: dict[str, _Parser]) -> str:
    """``%nb2prod --help``: every subcommand with its usage."""
    lines = ["usage: %nb2prod {" + ",".join(SUBCOMMANDS) + "} ...", ""]
    lines += [f"  {parsers[sub].format_usage().strip().removeprefix('usage: ')}" for sub in SUBCOMMANDS]
    lines += ["", "%nb2prod SUB --help tells more about one of them."]
    return "\n".join(lines)


def _show(shown: html.Shown) -> None:
    """Display text/html with its text/plain twin (both are saved in the notebook)."""
    from IPython.display import display

    display(shown)


def _aliases(model_uris: list[str]) -> dict[str, list[str]]:
    """Model URI (``models:/NAME/VERSION``) -> the aliases pointing at it; {} when the registry cannot tell."""
    out: dict[str, list[str]] = {}
    open_session = session.active()
    if open_session is None:
        return out
    names = {uri.split("/")[1] for uri in model_uris if uri.count("/") == 2 and uri.startswith("models:/")}
    for name in names:
        try:
            registered = open_session.client.get_registered_model(name)
        except Exception:  # aliases are an addition to the output: never fail it
            continue
        for alias, version in (getattr(registered, "aliases", None) or {}).items():
            out.setdefault(f"models:/{name}/{version}", []).append(alias)
    return out


def _bentos(models: list[Any]) -> dict[str, str]:
    """Model URI -> the newest Bento of its name, when that Bento carries the version ("tag, carries
    v2, v1"); {} when none was built. An addition to the status: never fails it."""
    out: dict[str, str] = {}
    open_session = session.active()
    if open_session is None:
        return out
    from nb2prod.exceptions import Nb2ProdError

    for name in {m.name for m in models if m.version}:
        try:
            from nb2prod.lifecycle.served import carried_versions, served_manifest

            tag, manifest = served_manifest(open_session.settings, name)
        except (Nb2ProdError, OSError, ImportError):
            continue
        carried = carried_versions(manifest)
        for m in models:
            if m.name == name and m.version in carried:
                out[m.model_uri] = f"{tag} (carries {', '.join(f'v{v}' for v in carried)})"
    return out


class _Progress:
    """What ``%nb2prod model`` is doing: in a kernel one output that updates in place and is
    replaced by the result at the end; elsewhere one line a step."""

    def __init__(self, in_kernel: bool) -> None:
        self.in_kernel = in_kernel
        self.done: list[str] = []
        self.current: str | None = None
        self.handle: Any = None

    def __call__(self, step: str) -> None:
        from IPython.display import display

        if self.current is not None:
            self.done.append(self.current)
        self.current = step
        if not self.in_kernel:
            print(f"nb2prod: {step}…")
            return
        shown = html.progress_shown(self.done, self.current)
        if self.handle is None:
            self.handle = display(shown, display_id=True)
        else:
            self.handle.update(shown)

    def close(self) -> None:
        """On failure: keep the steps done, without the one that failed (the error says it)."""
        if self.handle is not None and self.current is not None:
            self.handle.update(html.progress_shown(self.done, None))

    def finish(self, shown: html.Shown) -> None:
        if self.handle is None:
            _show(shown)
        else:
            self.handle.update(shown)
