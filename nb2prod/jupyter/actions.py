"""Long panel actions as background tasks: one worker process each, progress, cancel.

An action (export, promote, rollback, re-run) runs :mod:`nb2prod.jupyter.worker` in its own
process group, so the Jupyter server stays responsive and a cancel ends the whole action
(papermill's kernel, BentoML's build) and nothing else. The panel polls
``GET /nb2prod/api/actions/ID`` for its progress, then its result or its one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from nb2prod.config import Settings
from nb2prod.exceptions import UsageError
from nb2prod.jupyter.worker import ACTIONS
from nb2prod.serving.redact import redact_text

__all__ = ["Action", "ActionManager"]

# Finished actions kept for the panel to read (oldest dropped first).
KEEP_FINISHED = 50
# After SIGTERM, how long a cancelled worker gets before SIGKILL.
CANCEL_GRACE_S = 5.0


@dataclass
class Action:
    """One action and where it is.

    Attributes:
        status: ``running``, ``done``, ``failed`` or ``cancelled``.
        progress: The worker's latest progress line (credentials hidden).
        error: ``{"message", "hint"}`` when it failed.
    """

    id: str
    kind: str
    args: dict[str, Any]
    status: str = "running"
    progress: str = "starting"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["elapsed_s"] = round((self.finished or time.time()) - self.started, 2)
        return out


class ActionManager:
    """The actions of one Jupyter server (in memory: they belong to this server's life)."""

    def __init__(self, settings: Settings, log: Any = None) -> None:
        self.settings = settings
        self.log = log
        self.actions: dict[str, Action] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, action_id: str) -> Action | None:
        return self.actions.get(action_id)

    def list(self) -> list[Action]:
        return sorted(self.actions.values(), key=lambda a: -a.started)

    async def start(self, kind: str, args: dict[str, Any]) -> Action:
        """Start ``kind`` with ``args`` (already checked by the handler) in a worker process."""
        if kind not in ACTIONS:
            raise UsageError(f"unknown action {kind!r}", hint=f"one of: {', '.join(ACTIONS)}")
        self._forget_old()
        action = Action(id=uuid.uuid4().hex[:12], kind=kind, args=dict(args))
        env = dict(os.environ, NB2PROD_HOME=str(self.settings.home))
        env.setdefault("MLFLOW_TRACKING_URI", self.settings.tracking_uri)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nb2prod.jupyter.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(self.settings.home),
            env=env,
            start_new_session=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({"action": kind, **args}).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        self.actions[action.id] = action
        self._procs[action.id] = proc
        task = asyncio.ensure_future(self._follow(action, proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return action

    async def _follow(self, action: Action, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        log_tail: list[str] = []

        async def read_stdout() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if "progress" in message:
                    action.progress = redact_text(str(message["progress"]))[:300]
                elif "result" in message:
                    action.result = message["result"]
                elif "error" in message:
                    action.error = message["error"]

        async def read_stderr() -> None:
            # papermill's and BentoML's own progress lines: the latest is shown as progress
            assert proc.stderr is not None
            async for raw in proc.stderr:
                for part in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                    line = part.strip()
                    if line:
                        log_tail.append(line)
                        del log_tail[:-40]
                        if action.status == "running" and action.error is None and len(line) < 300:
                            action.progress = redact_text(line)

        await asyncio.gather(read_stdout(), read_stderr())
        code = await proc.wait()
        self._procs.pop(action.id, None)
        action.finished = time.time()
        if action.status == "cancelled":
            return
        if code == 0 and action.result is not None:
            action.status = "done"
            action.progress = "done"
            return
        action.status = "failed"
        if action.error is None:
            action.error = {
                "message": f"{action.kind} stopped unexpectedly (exit code {code})",
                "hint": "the Jupyter server's log has the details",
            }
        if self.log is not None and log_tail:
            self.log.warning(
                "nb2prod %s %s failed:\n%s", action.kind, action.id, redact_text("\n".join(log_tail))
            )

    async def cancel(self, action_id: str) -> Action | None:
        """End a running action's worker (its whole process group); None when unknown."""
        action = self.actions.get(action_id)
        if action is None:
            return None
        proc = self._procs.get(action_id)
        if action.status != "running" or proc is None:
            return action
        action.status = "cancelled"
        action.progress = "cancelled"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), CANCEL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        action.finished = time.time()
        return action

    async def shutdown(self) -> None:
        for action_id in list(self._procs):
            await self.cancel(action_id)

    def _forget_old(self) -> None:
        done = [a for a in self.list() if a.status != "running"]
        for action in done[KEEP_FINISHED:]:
            self.actions.pop(action.id, None)
