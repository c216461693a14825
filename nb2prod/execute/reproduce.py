"""``nb2prod reproduce RUN``: re-run a run's stored notebook with its parameters, and compare.

The verdict (:class:`~nb2prod.execute.results.Reproduction`) comes from
:func:`~nb2prod.execute.compare.compare_runs`; this module fetches what the original run
stored (its notebook snapshot, parameters and test/reference rows) and runs it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nb2prod.config import Settings, load_settings
from nb2prod.exceptions import UsageError
from nb2prod.execute.compare import ReferenceFrame, compare_runs
from nb2prod.execute.parameters import check_parameters
from nb2prod.execute.results import Preflight, Reproduction
from nb2prod.execute.run import run_notebook
from nb2prod.tracking import names

if TYPE_CHECKING:
    from mlflow import MlflowClient


def reproduce(
    run_id: str,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    timeout: int | None = None,
    kernel: str | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    on_preflight: Callable[[Preflight], None] | None = None,
) -> Reproduction:
    """Re-run the notebook snapshot stored with ``run_id`` with its parameters, and compare.

    Raises:
        UsageError: no such run, or it has no notebook snapshot (and the notebook on disk changed).
        StoreError: the store failed.
    """
    from nb2prod.tracking import client as tracking

    settings = settings or load_settings()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tracking.store_call(settings, what=f"reading run {run_id}", not_recorded="nothing (read only)"):
        client = tracking.client(settings)
        try:
            original = client.get_run(run_id)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc):
                raise UsageError(
                    f"no run {run_id} in {tracking.redact_uri(settings.tracking_uri)}",
                    hint="copy the run id from nb2prod run's output or the MLflow UI",
                ) from None
            raise
        experiment = client.get_experiment(original.info.experiment_id).name
        workdir = Path(tempfile.mkdtemp(prefix="nb2prod-reproduce-"))
        frames_dir = workdir / "reference"
        frames_dir.mkdir(mode=0o700)
        snapshot = _snapshot_of(client, original, workdir)
        stored = tracking.load_json_artifact(client, run_id, names.PARAMS_ARTIFACT)
    key = original.data.tags.get(names.TAG_NOTEBOOK) or str(snapshot)
    if stored is None:
        # A run captured interactively: its notebook ran with its own defaults.
        params: dict[str, Any] = {}
    else:
        params = check_parameters(snapshot, stored)
    key_path = Path(key)
    cwd = key_path.parent if key_path.parent.is_dir() else snapshot.parent
    result = run_notebook(
        snapshot,
        params,
        experiment=experiment,
        timeout=timeout,
        kernel=kernel,
        against=run_id,
        settings=settings,
        reexecutes=run_id,
        notebook_key=key,
        cwd=cwd,
        extra_tags={names.TAG_REPRODUCES: run_id, names.TAG_KIND: "reproduce"},
        progress=progress,
        on_preflight=on_preflight,
        params_checked=True,
        register=False,
        keep_frames=frames_dir,
    )
    # The original's own stored test/reference rows first (recorded at capture, digest checked);
    # the frames the re-execution tracked for those it did not store.
    stored = [
        ReferenceFrame(
            str(rec.get("name")), str(rec.get("role")), rec.get("target"), str(rec.get("digest")), frame
        )
        for rec, frame, matches in tracking.load_holdouts(client, run_id)
        if matches
    ]
    dumped = [ref for ref in _load_reference(frames_dir) if ref.name not in {s.name for s in stored}]
    findings = compare_runs(client, original, result, rtol=rtol, atol=atol, reference=[*stored, *dumped])
    verdict = Reproduction(run_id, result, rtol, findings)
    if result.run_id is not None:
        with contextlib.suppress(Exception):
            tracking.log_json(client, result.run_id, verdict.to_dict(), names.REPRODUCTION_ARTIFACT)
            client.set_tag(result.run_id, names.TAG_REPRODUCED, str(verdict.reproduced).lower())
    shutil.rmtree(workdir, ignore_errors=True)
    return verdict


def _snapshot_of(client: MlflowClient, run: Any, folder: Path) -> Path:
    """The notebook as it was when ``run`` ran: its stored snapshot, else the file if unchanged."""
    from nb2prod.capture.notebook import notebook_info

    try:
        local = client.download_artifacts(run.info.run_id, names.SOURCE_ARTIFACT, dst_path=str(folder))
        return Path(local)
    except Exception:
        pass
    key = run.data.tags.get(names.TAG_NOTEBOOK)
    recorded = run.data.tags.get(names.TAG_NOTEBOOK_DIGEST)
    if key and recorded and Path(key).is_file():
        info, _ = notebook_info(notebook_path=key)
        if info is not None and info.code_digest == recorded:
            target = folder / Path(key).name
            shutil.copyfile(key, target)
            return target
        raise UsageError(
            f"run {run.info.run_id} stored no notebook snapshot, and {key} has changed since "
            f"(code digest {info.code_digest if info else '?'} != recorded {recorded})",
            hint="restore the notebook from version control at the run's git commit",
        )
    raise UsageError(
        f"run {run.info.run_id} has no notebook snapshot ({names.SOURCE_ARTIFACT}) and no notebook file to fall back on",
        hint="reproduce runs made by nb2prod run, or by %nb2prod start in a saved notebook",
    )


def _load_reference(folder: Path) -> list[ReferenceFrame]:
    """The frames the kernel saved in ``folder`` (our own private folder: see :data:`~nb2prod.execute.handover.DUMP_FRAMES`)."""
    import pandas as pd

    try:
        index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    frames = []
    for item in index:
        with contextlib.suppress(Exception):
            frame = pd.read_pickle(folder / item["file"])
            frames.append(
                ReferenceFrame(item["name"], item["role"], item.get("target"), item["digest"], frame)
            )
    return frames
