"""``nb2prod score --scheduler tcp://HOST:8786``: each Parquet part is a task on a Dask cluster.

The model travels once per worker, not once per task: it is registered as a worker plugin
(:class:`ModelPlugin`), which Dask sends to every worker (and to workers that join later);
tasks find it in the worker's process by the batch id. Each task scores one part with the
same :class:`~nb2prod.batch.score.Scorer` as a local run and writes its own output part;
the parts are written under a temporary directory renamed to OUTPUT at the end.

Every worker logs its rows itself, so the prediction store must be one each worker reaches:
a SQLite file of this machine only with a scheduler on this machine (a ``LocalCluster`` on
127.0.0.1); with a remote scheduler :func:`nb2prod.batch.score.check_store_reachable` refuses
it before anything is loaded, naming a PostgreSQL store (``--store``) as the fix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nb2prod.batch.log import deliver, forget
from nb2prod.batch.model import BatchModel, ScoreError
from nb2prod.batch.score import Counts, Progress, Scorer, _Writer, score_part
from nb2prod.batch.source import Part, Source

__all__ = ["ModelPlugin", "score_on_cluster"]

CONNECT_TIMEOUT = 20
STOP_TIMEOUT = 60  # seconds to wait for a failed batch's running parts to stop
_MODELS: dict[str, BatchModel] = {}
"""Models registered on this worker process, by batch id."""

try:  # distributed is a dependency; the base class only exists when it imports
    from distributed.diagnostics.plugin import WorkerPlugin as _PluginBase
except ImportError:  # pragma: no cover
    _PluginBase = object  # type: ignore[assignment,misc]


class ModelPlugin(_PluginBase):
    """Carries one batch's model to every worker once; removed when the batch ends."""

    def __init__(self, key: str, model: BatchModel) -> None:
        self.key = key
        self.model = model

    def setup(self, worker: Any) -> None:
        _MODELS[self.key] = self.model

    def teardown(self, worker: Any) -> None:
        _MODELS.pop(self.key, None)


def _task(
    key: str,
    part: Part,
    output: str,
    rejects: str | None,
    id_column: str | None,
    store: str | None,
    chunk_rows: int,
) -> dict[str, Any]:
    """Score one part on a worker, with the model its plugin brought; the counts as a dict."""
    model = _MODELS.get(key)
    if model is None:
        raise RuntimeError(f"the model of batch {key} is not on this worker (its plugin was not set up)")
    from distributed import Event

    aborted = Event(_abort_name(key))

    def check(scored: int, refused: int) -> None:  # between chunks: stop when the batch failed
        if aborted.is_set():
            raise BatchAborted(f"batch {key} failed elsewhere; part {part.path} stopped")

    scorer = Scorer(model, key, id_column, store, text=part.format == "csv")
    out = _Writer(Path(output))
    bad = _Writer(Path(rejects)) if rejects else None
    try:
        counts = score_part(scorer, part, out, bad, chunk_rows, check)
        scorer.close()  # the part's rows committed before its output part appears
        out.commit()
        if bad is not None:
            bad.commit()
    except BaseException:
        out.discard()
        if bad is not None:
            bad.discard()
        scorer.discard()
        raise
    return {**asdict(counts), "copy": f"{os.getpid()}:{id(model)}"}


class BatchAborted(Exception):
    """A part stopped because another part of its batch failed (or the client was interrupted)."""


def _abort_name(batch_id: str) -> str:
    """The Dask ``Event`` a batch's tasks check between chunks: set when the batch failed."""
    return f"nb2prod-batch-abort-{batch_id}"


def _connect(scheduler: str) -> Any:
    from distributed import Client

    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise ScoreError(
            f"cannot reach the Dask scheduler at {scheduler} ({exc})",
            hint="start one with `dask scheduler` and `dask worker tcp://HOST:8786`, or drop --scheduler",
        ) from None


def _staging(path: Path, batch_id: str) -> Path:
    tmp = path.with_name(f".{path.name}.{batch_id}.partial")
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, path: Path) -> None:
    if path.is_dir():
        path.rmdir()  # checked empty before the batch started
    tmp.rename(path)


def _stop_parts(client: Any, batch_id: str, futures: list[Any], timeout: float = STOP_TIMEOUT) -> None:
    """Tell the batch's running parts to stop and wait for them: a part still running would write
    output or log rows after they are removed. Queued parts start, see the event and stop at once."""
    from distributed import Event, wait

    with contextlib.suppress(Exception):  # the cluster is gone: nothing runs any more
        Event(_abort_name(batch_id), client=client).set()
        if futures:
            wait(futures, timeout=timeout)


def score_on_cluster(
    scheduler: str,
    model: BatchModel,
    source: Source,
    output: Path,
    rejects: Path | None,
    batch_id: str,
    id_column: str | None,
    store: str | None,
    chunk_rows: int,
    on_progress: Progress | None,
) -> tuple[Counts, int, int]:
    """Score every part of ``source`` as a task on the cluster at ``scheduler``.

    Returns:
        (counts, parts, model copies): the copies are the distinct model objects the tasks
        used (one per worker process that ran a task: the model is not shipped per task).

    OUTPUT (and the rejects) become directories of ``part-NNNNN`` files, one per input part
    that had rows to write.

    Raises:
        ScoreError: the scheduler cannot be reached.
    """
    from distributed import Event, as_completed

    started = time.time()
    client = _connect(scheduler)
    output.parent.mkdir(parents=True, exist_ok=True)
    out_tmp = _staging(output, batch_id)
    bad_tmp = _staging(rejects, batch_id) if rejects is not None else None
    total = Counts()
    copies: set[str] = set()
    suffix = ".csv" if output.suffix.lower() == ".csv" else ".parquet"
    bad_suffix = ".csv" if rejects is not None and rejects.suffix.lower() == ".csv" else ".parquet"
    futures: list[Any] = []
    try:
        client.register_plugin(ModelPlugin(batch_id, model), name=f"nb2prod-batch-{batch_id}")
        futures += [
            client.submit(
                _task,
                batch_id,
                part,
                str(out_tmp / f"part-{i:05d}{suffix}"),
                str(bad_tmp / f"part-{i:05d}{bad_suffix}") if bad_tmp is not None else None,
                id_column,
                store,
                chunk_rows,
                key=f"nb2prod-score-{batch_id}-{i}",
                pure=False,
            )
            for i, part in enumerate(source.parts)
        ]
        for future in as_completed(futures):
            counts = future.result()
            copies.add(counts.pop("copy"))
            part_counts = Counts(**counts)
            total.add(part_counts)
            if on_progress is not None:
                on_progress(part_counts.scored, part_counts.rejected)
        if store is not None:  # every part logged its rows: the batch delivers
            deliver(store, batch_id, started)
        _publish(out_tmp, output)
        if bad_tmp is not None and rejects is not None:
            if any(bad_tmp.iterdir()):
                _publish(bad_tmp, rejects)
            else:
                bad_tmp.rmdir()
    except BaseException:
        # parts still running write into the staging folders and log rows: stop them first
        _stop_parts(client, batch_id, futures)
        shutil.rmtree(out_tmp, ignore_errors=True)
        if bad_tmp is not None:
            shutil.rmtree(bad_tmp, ignore_errors=True)
        if store is not None:  # the parts that ran logged their rows: the batch delivered none
            forget(store, batch_id)
        raise
    finally:
        with contextlib.suppress(Exception):  # the cluster went away: nothing left to remove
            client.unregister_worker_plugin(f"nb2prod-batch-{batch_id}")
        with contextlib.suppress(Exception):
            Event(_abort_name(batch_id), client=client).clear()  # drops it on the scheduler
        client.close()
    return total, len(source.parts), len(copies)
