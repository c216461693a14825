"""The input of a batch: a CSV file, a Parquet file or a directory of Parquet parts, read in chunks.

Nothing is read whole: Parquet is streamed as Arrow record batches (``iter_batches``), CSV
with Arrow's streaming reader, every cell as text (parsed later by the contract's kinds, so
a bad cell is one reject, not a failed read). Each part's columns are known before its first
row is read (the Parquet footer, the CSV header), so columns that cannot match are refused
before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2prod.batch.model import ScoreError

__all__ = ["Part", "Source", "open_source", "output_format"]

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv",)


def output_format(path: Path) -> str:
    """``csv`` when the name says so (``.csv``), else ``parquet``."""
    return "csv" if path.suffix.lower() in CSV_SUFFIXES else "parquet"


@dataclass(frozen=True)
class Part:
    """One file of the input: its path, format, columns (and Arrow types for Parquet), row count.

    Attributes:
        path: The file.
        format: ``parquet`` or ``csv``.
        names: Column names, in file order.
        types: Column -> Arrow type (None for CSV: cells are text).
        rows: Row count (None for CSV until read).
        first_row: Number of rows in the parts before this one (None after a CSV part).
    """

    path: Path
    format: str
    names: tuple[str, ...]
    types: dict[str, Any] | None
    rows: int | None
    first_row: int | None

    def batches(self, chunk_rows: int) -> Iterator[Any]:
        """Record batches of at most ``chunk_rows`` rows."""
        if self.format == "parquet":
            import pyarrow.parquet as pq

            # pre_buffer (the default) keeps every row group it read ahead: memory grew with the file
            with pq.ParquetFile(self.path, pre_buffer=False) as handle:
                yield from handle.iter_batches(batch_size=chunk_rows)
            return
        yield from _csv_batches(self.path, self.names, chunk_rows)


def _csv_batches(path: Path, names: tuple[str, ...], chunk_rows: int) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    convert = pcsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True
    )
    # ~100 bytes a row is a guess; the batches are re-cut to chunk_rows below
    read = pcsv.ReadOptions(block_size=max(1 << 20, min(chunk_rows * 100, 256 << 20)))
    pending: list[Any] = []
    held = 0
    with pcsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            while held >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield from table.slice(0, chunk_rows).combine_chunks().to_batches()
                rest = table.slice(chunk_rows)
                pending = rest.combine_chunks().to_batches() if rest.num_rows else []
                held = rest.num_rows
    if held:
        yield from pa.Table.from_batches(pending).combine_chunks().to_batches()


def _csv_header(path: Path) -> tuple[str, ...]:
    import pyarrow.csv as pcsv

    try:
        with pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 20)) as reader:
            return tuple(reader.schema.names)
    except Exception as exc:
        raise ScoreError(
            f"cannot read {path} as CSV: {exc}", hint="give a CSV file with a header row"
        ) from None


def _parquet_part(path: Path, first_row: int | None) -> Part:
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as handle:
            schema = handle.schema_arrow
            rows = handle.metadata.num_rows
    except Exception as exc:
        raise ScoreError(
            f"cannot read {path} as Parquet: {exc}",
            hint="give a Parquet file, a CSV file (.csv) or a directory of Parquet parts",
        ) from None
    return Part(
        path=path,
        format="parquet",
        names=tuple(schema.names),
        types={f.name: f.type for f in schema},
        rows=rows,
        first_row=first_row,
    )


@dataclass(frozen=True)
class Source:
    """The parts of an input, in order."""

    path: Path
    parts: tuple[Part, ...]

    @property
    def rows(self) -> int | None:
        """Total rows, when every part says (Parquet)."""
        counts = [p.rows for p in self.parts]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    @property
    def format(self) -> str:
        return self.parts[0].format


def open_source(path: Path) -> Source:
    """The parts of ``path``: a ``.csv`` file, a Parquet file, or a directory of Parquet parts.

    Raises:
        ScoreError: no such path, an empty directory, or a file that is neither.
    """
    path = Path(path)
    if not path.exists():
        raise ScoreError(
            f"no file or directory at {path}",
            hint="give a CSV or Parquet file, or a directory of Parquet parts",
        )
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES and not p.name.startswith((".", "_"))
        )
        if not files:
            raise ScoreError(
                f"{path} holds no Parquet parts (*.parquet)",
                hint="give a directory of Parquet files, or one file",
            )
        parts = []
        first = 0
        for file in files:
            part = _parquet_part(file, first)
            parts.append(part)
            first += part.rows or 0
        return Source(path=path, parts=tuple(parts))
    if path.suffix.lower() in CSV_SUFFIXES:
        return Source(path=path, parts=(Part(path, "csv", _csv_header(path), None, None, 0),))
    return Source(path=path, parts=(_parquet_part(path, 0),))
