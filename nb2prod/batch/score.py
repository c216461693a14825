"""``nb2prod score``: a file scored under the service's contract, logged like the service's traffic.

The steps, each checked before the next side effect:

1. Check the paths (output and rejects formats, nothing overwritten by accident).
2. Load the model: from the registry through the export's verified fetch, or from the
   newest Bento (``--bento``); the service's loader checks every file's sha256 first
   (:mod:`.model`).
3. Read every part's columns (Parquet footer, CSV header) and refuse, in one error, a
   table whose columns cannot match the contract (:func:`nb2prod.serving.contract.check_columns`).
4. Stream the rows in chunks (Arrow record batches): each chunk is checked with the
   service's rules (:func:`nb2prod.serving.contract.check`), refused rows go to the rejects
   file with the reason and field the service's 422 gives, good rows are predicted and
   written, and logged into the prediction store (:mod:`.log`).
5. Outputs are written under temporary names and renamed at the end: an interrupted run
   leaves no half-written OUTPUT.

With ``scheduler``, each part is a task on a Dask cluster (:mod:`.dask`).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nb2prod.batch.model import BatchModel, ScoreError
from nb2prod.batch.source import Part, Source, open_source, output_format
from nb2prod.config import Settings, load_settings
from nb2prod.serving.redact import redact_uri

__all__ = ["ScoreResult", "Scorer", "score"]

DEFAULT_CHUNK_ROWS = 65_536
ROW_ID = "row_id"
REQUEST_ID = "request_id"
PREDICTION = "prediction"
MODEL_VERSION = "model_version"
PROBA_PREFIX = "proba_"
REJECT_COLUMNS = ("nb2prod_row", "nb2prod_reason", "nb2prod_field", "nb2prod_problem")

Progress = Callable[[int, int], None]
"""Called after each chunk with (rows scored, rows refused) of that chunk."""


@dataclass
class ScoreResult:
    """What a batch did.

    Attributes:
        batch_id: Prefix of its request ids (``<batch id>-<row>``) in the prediction store.
        model: ``NAME``; version: the registered version that scored; source: registry URI or Bento tag.
        output: The predictions (a file, or a directory of parts with a scheduler).
        rejects: The refused rows, when any were refused and a rejects path was given.
        rows, scored, rejected: Rows read, scored, refused.
        reasons: Refused rows by reason.
        store: The prediction store the rows were logged to (its password masked).
        seconds: Wall time.
        parts: Parts scored (one per Dask task with a scheduler).
        scheduler: The Dask scheduler, if one scored.
        model_copies: Model objects the scoring used (one per Dask worker process that ran a task).
    """

    batch_id: str
    model: str
    version: str
    source: str
    output: Path
    rejects: Path | None
    rows: int
    scored: int
    rejected: int
    reasons: dict[str, int]
    store: str
    seconds: float
    parts: int = 1
    scheduler: str | None = None
    model_copies: int = 1

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> list[str]:
        """What the batch did, a line per fact (the CLI prints these; a notebook shows them)."""
        where = f" on {self.scheduler} ({self.parts} parts)" if self.scheduler else ""
        lines = [
            f"scored {self.scored:,} of {self.rows:,} rows with {self.model} version {self.version} "
            f"({self.source}){where} in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)",
            f"predictions: {self.output}",
        ]
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            kept = f" -> {self.rejects}" if self.rejects else " (name a file with --rejects to keep them)"
            lines.append(f"refused {self.rejected:,} rows ({reasons}){kept}")
        if self.store:
            lines.append(f"logged as batch {self.batch_id} (request ids {self.batch_id}-ROW) to {self.store}")
        return lines

    def __str__(self) -> str:
        return "\n".join(self.summary())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's display of the result: the summary lines."""
        printer.text(str(self))


@dataclass
class Counts:
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.rows += other.rows
        self.scored += other.scored
        self.rejected += other.rejected
        for k, v in other.reasons.items():
            self.reasons[k] = self.reasons.get(k, 0) + v


class _Writer:
    """An output table written chunk by chunk under a temporary name (Parquet, or CSV by name)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.partial")
        self.format = output_format(path)
        self._writer: Any = None
        self.schema: Any = None

    def write(self, table: Any) -> None:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            if self.format == "csv":
                import pyarrow.csv as pcsv

                self._writer = pcsv.CSVWriter(str(self.tmp), table.schema)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                # dictionaries pay on repeated text (ids, the version); on floats they cost time
                texts = [
                    f.name
                    for f in table.schema
                    if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)
                ]
                self._writer = pq.ParquetWriter(str(self.tmp), table.schema, use_dictionary=texts)
        elif table.schema != self.schema:
            table = table.cast(self.schema)
        self._writer.write_table(table)

    @property
    def started(self) -> bool:
        return self._writer is not None

    def commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self.tmp.replace(self.path)

    def discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already broken: the file goes anyway
                self._writer.close()
            self._writer = None
        self.tmp.unlink(missing_ok=True)


class Scorer:
    """Scores record batches of one input under one model (the same on a Dask worker).

    Args:
        model: The loaded model and its manifest.
        batch_id: Prefix of the request ids.
        id_column: Input column carried to the output as the row's id (None: ``row_id``).
        store: The prediction store to log into (None: no logging).
        text: The input cells are text (CSV).
    """

    def __init__(
        self, model: BatchModel, batch_id: str, id_column: str | None, store: str | None, *, text: bool
    ) -> None:
        from nb2prod.serving import contract
        from nb2prod.serving.schema import row_model

        self.model = model
        manifest = model.manifest
        self.rules = contract.rules(manifest.schema, manifest.reference)
        self.row = row_model(manifest.schema, manifest.reference)
        self.batch_id = batch_id
        self.id_column = id_column
        self.text = text
        self.classes = model.classes if model.info.has_proba else None
        self.log: Any = None
        if store is not None:
            from nb2prod.batch.log import BatchLog

            self.log = BatchLog(store, manifest, batch_id, model.version)

    def score(self, batch: Any, first_row: int) -> tuple[Any, Any, Counts]:
        """(predictions table, rejects table or None, counts) of one record batch."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from nb2prod.serving import contract

        n = batch.num_rows
        counts = Counts(rows=n)
        checked = contract.check(batch, self.rules, text=self.text)
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        bad = np.flatnonzero(~checked.ok)
        rejects = None
        if len(bad):
            why = contract.explain(
                batch,
                checked,
                bad.tolist(),
                self.model.manifest.schema,
                self.model.manifest.reference,
                model=self.row,
            )
            rejects = pa.Table.from_batches([batch.take(pa.array(bad))])
            for offset, name in enumerate(REJECT_COLUMNS):
                values: Any = (
                    rows[bad] if name == "nb2prod_row" else [w[name.removeprefix("nb2prod_")] for w in why]
                )
                rejects = rejects.add_column(offset, name, pa.array(values))
            for w in why:
                counts.reasons[w["reason"]] = counts.reasons.get(w["reason"], 0) + 1
            counts.rejected = len(bad)
            if self.log is not None:
                self.log.refused(why)
        good = np.flatnonzero(checked.ok)
        counts.scored = len(good)
        if not len(good):
            return None, rejects, counts
        picked = good if len(bad) else None  # all rows good: no copies
        frame = contract.frame(checked, self.rules, picked)
        predictions, proba = self._predict(frame)
        numbers = pa.array(rows[good] if picked is not None else rows)
        out: dict[str, Any] = {}
        if self.id_column:
            column = batch.column(self.id_column)
            out[self.id_column] = column.take(pa.array(good)) if picked is not None else column
        else:
            out[ROW_ID] = numbers
        # <batch id>-<row>, built by Arrow (no Python string per row)
        out[REQUEST_ID] = pc.binary_join_element_wise(f"{self.batch_id}-", pc.cast(numbers, pa.string()), "")
        out[PREDICTION] = pa.array(predictions)
        if proba is not None and self.classes is not None:
            for j, label in enumerate(self.classes):
                out[f"{PROBA_PREFIX}{label}"] = pa.array(proba[:, j])
        out[MODEL_VERSION] = pa.repeat(pa.scalar(self.model.version, pa.string()), len(good))
        table = pa.table(out)
        if self.log is not None:
            columns = {
                r.name: (
                    (checked.values[r.name], checked.null[r.name], r.kind)
                    if picked is None
                    else (checked.values[r.name][good], checked.null[r.name][good], r.kind)
                )
                for r in self.rules
            }
            probabilities = (
                {str(label): proba[:, j] for j, label in enumerate(self.classes)}
                if proba is not None and self.classes is not None
                else None
            )
            self.log.log(
                rows[good] if picked is not None else rows, columns, predictions, probabilities=probabilities
            )
        return table, rejects, counts

    def _predict(self, frame: Any) -> tuple[np.ndarray, np.ndarray | None]:
        predictions = np.asarray(self.model.model.predict(frame))
        proba = None
        if self.classes is not None:
            proba = np.asarray(self.model.model.predict_proba(frame), dtype=np.float64)
        return predictions, proba

    def close(self) -> None:
        """Commit every logged row (raises a failed write)."""
        if self.log is not None:
            self.log.close()

    def discard(self) -> None:
        """Stop logging and remove this scorer's logged rows and sketches (the batch failed)."""
        if self.log is not None:
            self.log.discard()


def new_batch_id() -> str:
    """``b<UTC time><4 hex>``: sortable, short enough for ``<batch id>-<row>`` request ids."""
    return f"b{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"


def score_part(
    scorer: Scorer,
    part: Part,
    output: _Writer,
    rejects: _Writer | None,
    chunk_rows: int,
    on_progress: Progress | None = None,
) -> Counts:
    """Score every chunk of ``part`` into the writers; the counts."""
    total = Counts()
    first = part.first_row or 0
    for batch in part.batches(chunk_rows):
        table, refused, counts = scorer.score(batch, first)
        first += batch.num_rows
        if table is not None:
            output.write(table)
        if refused is not None and rejects is not None:
            rejects.write(refused)
        total.add(counts)
        if on_progress is not None:
            on_progress(counts.scored, counts.rejected)
    return total


def _check_paths(source_path: Path, output: Path, rejects: Path | None, scheduler: str | None) -> None:
    for path, what in ((output, "OUTPUT"), (rejects, "--rejects")):
        if path is None:
            continue
        if path.resolve() == source_path.resolve():
            raise ScoreError(
                f"{what} {path} is the input itself", hint="write the predictions to another file"
            )
        if scheduler is None and path.is_dir():
            raise ScoreError(f"{what} {path} is a directory", hint="name a file: out.parquet or out.csv")
        if scheduler is not None and path.exists() and not path.is_dir():
            raise ScoreError(
                f"{what} {path} is a file; with --scheduler the output is a directory of parts",
                hint="name a directory that does not exist yet",
            )
        if scheduler is not None and path.is_dir() and any(path.iterdir()):
            raise ScoreError(f"{what} {path} is a directory that is not empty", hint="name a new directory")
    if rejects is not None and rejects.resolve() == output.resolve():
        raise ScoreError("--rejects and OUTPUT are the same path", hint="give the rejects their own file")


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _is_loopback(host: str | None) -> bool:
    import ipaddress

    if host is None:
        return False
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_store_reachable(store: str, scheduler: str) -> None:
    """Refuse a SQLite prediction store (``store``: empty for the default, which is one) with a
    scheduler that is not on this machine: its workers may run elsewhere and cannot write the file.

    Raises:
        ScoreError: naming the fix (a PostgreSQL store, scoring locally, or ``--no-log``).
    """
    from urllib.parse import urlsplit

    from nb2prod.serving.store import is_sqlite_file

    if store and not is_sqlite_file(store):
        return
    try:
        host = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}").hostname
    except ValueError:
        host = None
    if scheduler.startswith("inproc://") or _is_loopback(host):
        return
    what = (
        f"the SQLite prediction store {store}"
        if store
        else "the default prediction store (a SQLite file here)"
    )
    raise ScoreError(
        f"{what} is a file on this machine, but the Dask scheduler {scheduler} is not: its workers "
        "may run on other machines and cannot write to it",
        hint="log to a store every worker reaches (--store postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB, "
        "or NB2PROD_PREDICTION_STORE), score locally without --scheduler, or pass --no-log",
    )


def check_columns(source: Source, model: BatchModel, id_column: str | None) -> None:
    """Refuse, in one error, parts whose columns cannot match the contract (nothing is written yet)."""
    from nb2prod.serving import contract

    rules = contract.rules(model.manifest.schema, model.manifest.reference)
    for part in source.parts:
        if id_column is not None and id_column not in part.names:
            raise ScoreError(
                f"{part.path} has no column {id_column!r} (--id-column)",
                hint=f"its columns: {', '.join(part.names[:12])}",
            )
        try:
            contract.check_columns(
                part.names, rules, types=part.types, allowed_extra=[id_column] if id_column else ()
            )
        except contract.ColumnMismatch as exc:
            lines = [f"{p['field']}: {p['reason']} ({p['problem']})" for p in exc.problems[:10]]
            more = f" and {len(exc.problems) - 10} more" if len(exc.problems) > 10 else ""
            raise ScoreError(
                f"the columns of {part.path} cannot match the input contract of "
                f"{model.manifest.name}/{model.version}: " + "; ".join(lines) + more,
                hint="give every column the model reads, of its kind, and no other "
                "(name an id column with --id-column); the Bento's /metadata lists the features",
            ) from None


def score(
    ref: str,
    input: str | Path,
    output: str | Path,
    *,
    rejects: str | Path | None = None,
    id_column: str | None = None,
    scheduler: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bento: bool = False,
    log: bool = True,
    store: str | None = None,
    settings: Settings | None = None,
    on_progress: Progress | None = None,
    on_start: Callable[[BatchModel, Source], None] | None = None,
) -> ScoreResult:
    """Score ``input`` with ``ref`` (``NAME[@alias|/version]``; ``NAME`` alone: ``NAME@champion``) into
    ``output`` (see the module doc).

    Args:
        ref: The registered model (``--bento``: the model whose newest Bento scores, in the
            version its services answer with).
        input: A CSV or Parquet file, or a directory of Parquet parts.
        output: Parquet (CSV when it ends in ``.csv``); with ``scheduler`` a directory of parts.
        rejects: Where refused rows go (Parquet, or CSV by name); None: counted only.
        id_column: Input column copied to the output as the row's id (else ``row_id``).
        scheduler: ``tcp://HOST:8786`` of a Dask cluster: each part is a task.
        chunk_rows: Rows per chunk (memory is bounded by it, not by the input's size).
        bento: Score with the model of the newest Bento of ``ref``.
        log: Log every scored row into the model's prediction store (source ``batch``).
        store: The prediction store to log into (a SQLite path or ``postgresql+psycopg://`` URL);
            default: the service's own (:func:`nb2prod.serving.store.prediction_store`).
        settings: The project (default: the current one).
        on_progress: Called after every chunk with (scored, refused).
        on_start: Called once the model is loaded and the columns checked.

    Raises:
        ScoreError: bad paths or options, or columns that cannot match the contract.
        ExportError: no such model (or Bento).
        ModelIntegrityError: the model's files differ from the capture's record.
    """
    from nb2prod.batch import model as models
    from nb2prod.serving.store import STORE_ENV, prediction_store

    started = time.perf_counter()
    settings = settings or load_settings()
    if chunk_rows < 1:
        raise ScoreError(f"--chunk-rows must be at least 1, not {chunk_rows}", hint="e.g. --chunk-rows 65536")
    out_path = Path(output).expanduser()
    rejects_path = Path(rejects).expanduser() if rejects is not None else None
    source = open_source(Path(input).expanduser())
    _check_paths(source.path, out_path, rejects_path, scheduler)
    if scheduler is not None and source.format != "parquet":
        raise ScoreError(
            "--scheduler scores Parquet parts", hint="convert the CSV to Parquet, or drop --scheduler"
        )
    if log and scheduler is not None:
        check_store_reachable(store or os.environ.get(STORE_ENV) or "", scheduler)
    if store is not None and "://" not in store:
        store = str(Path(store).expanduser().resolve())
    loaded = models.load(ref, settings, bento=bento, store=store)
    check_columns(source, loaded, id_column)
    if on_start is not None:
        on_start(loaded, source)
    if not log:
        store = None
    elif store is None:
        store = prediction_store(loaded.manifest.name, settings.bentoml_home)
    batch_id = new_batch_id()
    if scheduler is not None:
        from nb2prod.batch.dask import score_on_cluster

        counts, parts, copies = score_on_cluster(
            scheduler,
            loaded,
            source,
            out_path,
            rejects_path,
            batch_id,
            id_column,
            store,
            chunk_rows,
            on_progress,
        )
    else:
        counts = _score_local(
            loaded, source, out_path, rejects_path, batch_id, id_column, store, chunk_rows, on_progress
        )
        parts, copies = len(source.parts), 1
    return ScoreResult(
        batch_id=batch_id,
        model=loaded.manifest.name,
        version=loaded.version,
        source=loaded.source,
        output=out_path,
        rejects=rejects_path if rejects_path is not None and rejects_path.exists() else None,
        rows=counts.rows,
        scored=counts.scored,
        rejected=counts.rejected,
        reasons=counts.reasons,
        store=redact_uri(store) if store else "",
        seconds=time.perf_counter() - started,
        parts=parts,
        scheduler=scheduler,
        model_copies=copies,
    )


def _score_local(
    loaded: BatchModel,
    source: Source,
    output: Path,
    rejects: Path | None,
    batch_id: str,
    id_column: str | None,
    store: str | None,
    chunk_rows: int,
    on_progress: Progress | None,
) -> Counts:
    started = time.time()
    out = _Writer(output)
    bad = _Writer(rejects) if rejects is not None else None
    scorer = Scorer(loaded, batch_id, id_column, store, text=source.format == "csv")
    total = Counts()
    try:
        for part in source.parts:
            total.add(score_part(scorer, part, out, bad, chunk_rows, on_progress))
        if not out.started:
            out.write(_empty_output(loaded, id_column, source))
        scorer.close()  # every logged row committed before the output appears
        if store is not None:  # its refusals count once the batch delivers
            from nb2prod.batch.log import deliver

            deliver(store, batch_id, started)
        out.commit()
        if bad is not None:
            bad.commit()
    except BaseException:  # Ctrl-C included: no half-written output stays, no logged row either
        out.discard()
        if bad is not None:
            bad.discard()
        scorer.discard()
        raise
    return total


def _empty_output(loaded: BatchModel, id_column: str | None, source: Source) -> Any:
    """The output table of a batch that scored no row: its columns, no rows."""
    import pyarrow as pa

    fields: list[Any] = []
    part = source.parts[0]
    if id_column:
        fields.append(pa.field(id_column, (part.types or {}).get(id_column) or pa.string()))
    else:
        fields.append(pa.field(ROW_ID, pa.int64()))
    fields += [pa.field(REQUEST_ID, pa.string()), pa.field(PREDICTION, pa.null())]
    classes = loaded.classes if loaded.info.has_proba else None
    fields += [pa.field(f"{PROBA_PREFIX}{c}", pa.float64()) for c in classes or []]
    fields.append(pa.field(MODEL_VERSION, pa.string()))
    return pa.schema(fields).empty_table()
