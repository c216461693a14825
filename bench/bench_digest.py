"""Benchmark the data digest against pandas and MLflow.

Run from the repository root::

    .venv/bin/python bench/bench_digest.py              # 5 M rows, the reference run
    .venv/bin/python bench/bench_digest.py --rows 200000 --no-mlflow   # quick

The frame: ``--rows`` rows of 20 float64 columns, one categorical column
(50 string categories) and one ``str`` column (Arrow-backed, ~11 bytes a
value). Every timing is the median of ``--repeats`` runs, except MLflow's
digest (run once: it takes seconds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine  # bench/ is on sys.path when a benchmark runs as a script

from nb2prod.capture.hashing import digest_frame
from nb2prod.capture.profile import summarize

N_FLOAT = 20


def build_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Build the benchmark frame.

    Args:
        rows: Number of rows.
        seed: Random seed.

    Returns:
        20 float64 columns ``x0..x19``, ``cat`` (categorical) and ``name`` (str).
    """
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {f"x{i}": rng.standard_normal(rows) for i in range(N_FLOAT)}
    cats = [f"segment_{i:02d}" for i in range(50)]
    cols["cat"] = pd.Categorical.from_codes(rng.integers(0, 50, rows), categories=cats)
    cols["name"] = pd.Series(rng.integers(10**9, 10**10, rows)).astype(str).radd("u")
    return pd.DataFrame(cols)


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    return _machine.machine(("numpy", "pandas", "pyarrow", "xxhash", "mlflow"))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="rows in the frame (default 5,000,000)")
    ap.add_argument("--repeats", type=int, default=7, help="repeats per timing, median reported (>= 3)")
    ap.add_argument("--no-mlflow", action="store_true", help="skip mlflow.data.from_pandas(df).digest")
    ap.add_argument("--no-pandas", action="store_true", help="skip pandas.util.hash_pandas_object")
    args = ap.parse_args(argv)
    repeats = max(args.repeats, 3)

    print(f"machine: {machine()}")
    print(f"building {args.rows:,} rows ...", flush=True)
    df = build_frame(args.rows)
    numeric = df[[f"x{i}" for i in range(N_FLOAT)]]
    num_bytes = int(numeric.memory_usage(index=False).sum())
    all_bytes = int(df.memory_usage(index=True, deep=True).sum())
    with_nan = numeric.copy()
    rng = np.random.default_rng(1)
    for c in with_nan.columns:
        with_nan.loc[rng.random(args.rows) < 0.01, c] = np.nan
    negnan = with_nan.copy()
    negnan.iloc[:, 0] = np.where(np.isnan(negnan.iloc[:, 0]), -np.nan, negnan.iloc[:, 0])

    digest_frame(df)  # warm up: imports, page faults
    rows: list[tuple[str, float, int]] = []
    rows.append(
        ("nb2prod digest, 20 float64 columns", timed(lambda: digest_frame(numeric), repeats), num_bytes)
    )
    rows.append(
        (
            "nb2prod digest, 20 float64 columns, 1 thread",
            timed(lambda: digest_frame(numeric, threads=1), repeats),
            num_bytes,
        )
    )
    rows.append(
        (
            "nb2prod digest, 20 float64 columns, 1% NaN in each",
            timed(lambda: digest_frame(with_nan), repeats),
            num_bytes,
        )
    )
    ours = timed(lambda: digest_frame(df), repeats)
    rows.append(("nb2prod digest, whole frame", ours, all_bytes))
    rows.append(
        (
            "nb2prod digest, whole frame, 1 thread",
            timed(lambda: digest_frame(df, threads=1), repeats),
            all_bytes,
        )
    )
    head = df.iloc[: min(args.rows, 1_000_000)]
    head_bytes = int(head.memory_usage(index=True, deep=True).sum())
    rows.append(
        (
            f"nb2prod summarize (schema + profile), first {len(head):,} rows",
            timed(lambda: summarize(head), repeats),
            head_bytes,
        )
    )
    if not args.no_pandas:
        rows.append(
            (
                "pandas.util.hash_pandas_object(df, index=True)",
                timed(lambda: pd.util.hash_pandas_object(df, index=True), repeats),
                all_bytes,
            )
        )
    if not args.no_mlflow:
        import mlflow.data

        t0 = time.perf_counter()
        _ = mlflow.data.from_pandas(df).digest
        rows.append(("mlflow.data.from_pandas(df).digest (once)", time.perf_counter() - t0, all_bytes))

    print()
    print(
        f"rows: {args.rows:,}; whole frame {all_bytes / 1e9:.3f} GB, float columns {num_bytes / 1e9:.3f} GB; "
        f"median of {repeats}"
    )
    print()
    print("| what | seconds | GB/s | time / ours (whole frame) |")
    print("| --- | ---: | ---: | ---: |")
    for what, secs, nbytes in rows:
        print(f"| {what} | {secs:.4f} | {nbytes / secs / 1e9:.2f} | {secs / ours:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
