"""One panel action in its own process: ``python -m nb2prod.jupyter.worker`` (spec on stdin).

The Jupyter server starts this for export, promote, rollback and re-run, so a long action
never blocks the server and can be cancelled (the server ends the process group). It calls
the same core functions as the command line and speaks JSON lines on stdout:
``{"progress": TEXT}`` while it works, then ``{"result": {...}}`` or
``{"error": {"message", "hint"}}`` (nb2prod's one-line message and fix; the traceback of an
unexpected failure goes to stderr, the server's log, never to the browser).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nb2prod.config import load_settings
from nb2prod.exceptions import Nb2ProdError, UsageError
from nb2prod.serving.redact import redact_text

ACTIONS = ("export", "promote", "rollback", "rerun")


def emit(kind: str, payload: Any) -> None:
    sys.stdout.write(json.dumps({kind: payload}, default=str) + "\n")
    sys.stdout.flush()


def _export(spec: dict[str, Any]) -> dict[str, Any]:
    from nb2prod.export import export_model

    name, version = str(spec["model"]), spec.get("version")
    ref = f"{name}/{version}" if version else name
    emit("progress", f"exporting {ref}: checking the model files, rendering and building the Bento")
    result = export_model(ref, settings=load_settings())
    return {
        "tag": result.tag,
        "model": result.name,
        "model_version": result.model_version,
        "built": result.built,
        "versions": list(result.versions),
        "source_dir": str(result.source_dir),
        "seconds": round(result.seconds, 2),
    }


def _promote(spec: dict[str, Any]) -> dict[str, Any]:
    from nb2prod.lifecycle import promote

    name, version = str(spec["model"]), str(spec["version"])
    emit("progress", f"promoting {name}/{version} to champion")
    switch = promote(name, version, reason=str(spec.get("reason") or "promoted in JupyterLab"))
    return switch.to_dict()


def _rollback(spec: dict[str, Any]) -> dict[str, Any]:
    from nb2prod.lifecycle import rollback

    name = str(spec["model"])
    emit("progress", f"rolling back {name}@champion")
    switch = rollback(name, to=spec.get("version") or None)
    return switch.to_dict()


def _rerun(spec: dict[str, Any]) -> dict[str, Any]:
    from nb2prod.execute import check_parameters, run_notebook

    notebook = Path(str(spec["notebook"]))
    given = {str(k): str(v) for k, v in dict(spec.get("parameters") or {}).items()}
    params = check_parameters(notebook, given, from_text=given)
    emit("progress", f"running {notebook.name} in a fresh kernel")
    result = run_notebook(
        notebook,
        params,
        params_checked=True,
        progress=True,
        settings=load_settings(),
        on_preflight=lambda _: emit("progress", f"pre-flight checked; executing {notebook.name}"),
    )
    out = {
        "run_id": result.run_id,
        "status": result.status,
        "parameters": result.parameters,
        "seconds": round(result.seconds, 2),
        "registered": result.registered,
        "metrics": result.metrics,
    }
    if result.error is not None:
        raise result.error
    return out


def run(spec: dict[str, Any]) -> int:
    action = spec.get("action")
    handlers = {"export": _export, "promote": _promote, "rollback": _rollback, "rerun": _rerun}
    try:
        if action not in handlers:
            raise UsageError(f"unknown action {action!r}", hint=f"one of: {', '.join(ACTIONS)}")
        emit("result", handlers[str(action)](spec))
        return 0
    except Nb2ProdError as exc:
        emit("error", {"message": redact_text(exc.message), "hint": exc.hint and redact_text(exc.hint)})
        return 1
    except KeyError as exc:
        emit("error", {"message": f"{action}: missing field {exc}", "hint": "see the README's REST API"})
        return 1
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        emit(
            "error",
            {
                "message": redact_text(f"{action} failed: {type(exc).__name__}: {first}"),
                "hint": "the Jupyter server's log has the details",
            },
        )
        return 1


def _end_with_parent() -> None:
    """The server started this in its own process group: when the server is gone, end the group."""
    parent = os.getppid()
    if os.getpgid(0) != os.getpid():
        return  # not in a group of its own: nothing to end but itself

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os.killpg(0, signal.SIGTERM)
                return

    threading.Thread(target=watch, name="nb2prod-parent-watch", daemon=True).start()


def main() -> int:
    _end_with_parent()
    spec = json.loads(sys.stdin.read() or "{}")
    return run(spec if isinstance(spec, dict) else {})


if __name__ == "__main__":
    sys.exit(main())
