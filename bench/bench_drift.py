"""Benchmark drift: sketching logged rows, the monitoring report over a day of sketches, and scipy.

Run from the repository root::

    .venv/bin/python bench/bench_drift.py                 # 1 M rows x 30 features, the reference run
    .venv/bin/python bench/bench_drift.py --rows 100000   # quick

(a) What the service's writer does: sketch ``--rows`` rows x 30 float features
    (``serving/sketch.py``), as one batch per column and in batches of 1,000 rows.
(b) ``build_report`` end to end on a SQLite prediction store holding those rows as
    minute sketches over 24 h from 2 writers (30 features + the prediction: 89,280
    sketch rows), plus ``--logged`` prediction rows of which a fifth have feedback
    (the quality join). The report sums sketches; it never scans the logged rows.
(c) For comparison: ``scipy.stats.ks_2samp`` on the raw rows, per feature, against
    the same 1,000-point reference sample (the statistic the report reads from the
    sketches), and against the whole 100,000-row training column.

Every timing is the median of ``--repeats`` runs (scipy's: of 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine  # bench/ is on sys.path when a benchmark runs as a script

from nb2prod.capture.data import summarize
from nb2prod.monitoring import build_report
from nb2prod.serving.sketch import Sketcher, encode
from nb2prod.serving.store import (
    PREDICTION_COLUMN,
    SQL_INSERT_PREDICTION,
    SQL_UPSERT_FEEDBACK,
    SQL_UPSERT_SKETCH,
    Store,
)

N_FEATURES = 30
TRAIN_ROWS = 100_000
DAY = 86_400
WRITERS = 2
T0 = 1_800_000_000


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (this process) of ``fn`` over ``repeats`` runs, in seconds.

    The machine is shared: CPU time is the steadier figure when other work competes for the cores.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def machine() -> str:
    return _machine.machine(("numpy", "scipy", "pandas"))


def frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A training frame (100,000 rows) and ``rows`` live rows: 30 float features of mixed shapes."""
    rng = np.random.default_rng(seed)

    def block(n: int, shift: float) -> pd.DataFrame:
        cols = {}
        for i in range(N_FEATURES):
            if i % 3 == 0:
                cols[f"x{i}"] = rng.normal(shift, 1.0, n)
            elif i % 3 == 1:
                cols[f"x{i}"] = rng.lognormal(shift, 0.5, n).round(2)  # ties
            else:
                cols[f"x{i}"] = rng.integers(0, 40, n).astype(np.float64)  # few distinct values
        cols["y"] = rng.integers(0, 2, n).astype(np.float64)
        return pd.DataFrame(cols)

    live = block(rows, 0.0)
    live["x0"] = live["x0"] * 1.3 + 0.4  # one drifted feature
    return block(TRAIN_ROWS, 0.0), live


def build_store(path: Path, manifest: dict[str, Any], live: pd.DataFrame, logged: int) -> dict[str, float]:
    """Write the minute sketches of ``live`` over 24 h (2 writers), and ``logged`` raw rows + feedback."""
    columns = {c: Sketcher(p) for c, p in manifest["reference"].items()}
    columns[PREDICTION_COLUMN] = Sketcher(manifest["target"]["profile"])
    rows = len(live)
    minute = (np.arange(rows) * (DAY // 60) // rows).astype(np.int64)  # rows spread evenly over 1,440 minutes
    starts = np.searchsorted(minute, np.arange(DAY // 60 + 1))
    data = {c: live[c if c != PREDICTION_COLUMN else "y"].to_numpy() for c in columns}
    store = Store(str(path))
    t0 = time.perf_counter()
    n_sketches = 0
    nbytes = 0
    for m in range(DAY // 60):
        lo, hi = starts[m], starts[m + 1]
        batch = []
        for w in range(WRITERS):
            for col, sketcher in columns.items():
                values = data[col][lo + w : hi : WRITERS]
                blob = encode(sketcher(values))
                nbytes += len(blob)
                batch.append(
                    {
                        "bucket": T0 + 60 * m,
                        "model_version": "2" if w == 1 and m % 10 == 0 else "1",
                        "col": col,
                        "writer": f"w{w}",
                        "n": len(values),
                        "counts": blob,
                    }
                )
        store.write(SQL_UPSERT_SKETCH, batch)
        n_sketches += len(batch)
    sketch_secs = time.perf_counter() - t0
    step = max(1, rows // max(1, logged))
    ids = range(0, rows, step)
    feats = live[[f"x{i}" for i in range(N_FEATURES)]].to_numpy()
    labels = live["y"].to_numpy()
    pred_rows, feedback = [], []
    for i in ids:
        ts = T0 + float(minute[i]) * 60 + 1
        pred_rows.append(
            {
                "request_id": f"r{i}",
                "ts": ts,
                "monitor": "bench",
                "model_version": "1",
                "features": json.dumps(dict(zip(live.columns[:N_FEATURES], feats[i].tolist(), strict=True))),
                "prediction": json.dumps({"prediction": int(labels[i])}),
            }
        )
        if i % (5 * step) == 0:
            feedback.append(
                {"request_id": f"r{i}", "ts": ts + 30, "label": json.dumps(int(i % 3 == 0)), "source": "b"}
            )
    for k in range(0, len(pred_rows), 50_000):
        store.write(SQL_INSERT_PREDICTION, pred_rows[k : k + 50_000])
    store.write(SQL_UPSERT_FEEDBACK, feedback)
    store.close()
    return {
        "sketches": n_sketches,
        "sketch_bytes": nbytes,
        "build_secs": sketch_secs,
        "logged": len(pred_rows),
        "feedback": len(feedback),
        "file_bytes": path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="logged rows (default 1,000,000)")
    ap.add_argument(
        "--logged", type=int, default=100_000, help="raw prediction rows in the store (default 100,000)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="repeats per timing, median reported (>= 3)")
    ap.add_argument("--no-scipy", action="store_true", help="skip scipy.stats.ks_2samp on the raw rows")
    args = ap.parse_args(argv)
    repeats = max(args.repeats, 3)

    print(f"machine: {machine()}")
    print(f"building {TRAIN_ROWS:,} training rows and {args.rows:,} live rows ...", flush=True)
    train, live = frames(args.rows)
    profile = {k: p.to_dict() for k, p in summarize(train)[1].items()}
    features = [f"x{i}" for i in range(N_FEATURES)]
    manifest: dict[str, Any] = {
        "reference": {f: profile[f] for f in features},
        "target": {"name": "y", "profile": profile["y"]},
        "model": {"is_classifier": True},
    }
    sketchers = [Sketcher(manifest["reference"][f]) for f in features]
    arrays = [live[f].to_numpy() for f in features]
    results: list[tuple[str, tuple[float, float]]] = []

    def one_batch() -> None:
        for s, x in zip(sketchers, arrays, strict=True):
            s(x)

    def batches_of(size: int) -> Callable[[], None]:
        def run() -> None:
            for s, x in zip(sketchers, arrays, strict=True):
                total = np.zeros(s.size, dtype=np.int64)
                for k in range(0, len(x), size):
                    total += s(x[k : k + size])

        return run

    results.append(
        (
            f"(a) sketch {args.rows:,} rows x {N_FEATURES} features, one batch per feature",
            timed(one_batch, repeats),
        )
    )
    results.append(
        (
            f"(a) sketch {args.rows:,} rows x {N_FEATURES} features, batches of 1,000 rows",
            timed(batches_of(1000), 3),
        )
    )

    with tempfile.TemporaryDirectory(prefix="nb2prod-bench-drift-") as tmp:
        path = Path(tmp) / "predictions.db"
        print("writing the store ...", flush=True)
        info = build_store(path, manifest, live, args.logged)
        print(
            f"store: {info['sketches']:,} sketch rows ({info['sketch_bytes'] / 1e6:.1f} MB of counts), "
            f"{info['logged']:,} logged rows, {info['feedback']:,} with feedback; file {info['file_bytes'] / 1e6:.0f} MB",
            flush=True,
        )
        report = build_report(str(path), manifest, since=T0, until=T0 + DAY)
        assert report.rows == args.rows, (report.rows, args.rows)
        results.append(
            (
                f"(b) build_report, {args.rows:,} rows x {N_FEATURES} features over 24 h of minute sketches (2 writers)",
                timed(lambda: build_report(str(path), manifest, since=T0, until=T0 + DAY), repeats),
            )
        )
        results.append(
            (
                "(b) build_report, last hour only",
                timed(
                    lambda: build_report(str(path), manifest, since=T0 + DAY - 3600, until=T0 + DAY), repeats
                ),
            )
        )
    print(
        f"report: status {report.status}, drifted {report.drifted}, quality labelled {report.quality['labelled']:,}"
    )

    if not args.no_scipy:
        import scipy.stats as ss

        refs = [
            np.repeat(manifest["reference"][f]["ks_values"], manifest["reference"][f]["ks_counts"])
            for f in features
        ]
        results.append(
            (
                f"(c) scipy.stats.ks_2samp x {N_FEATURES}, raw rows vs the 1,000-point reference sample",
                timed(
                    lambda: [ss.ks_2samp(r, x, method="asymp") for r, x in zip(refs, arrays, strict=True)], 3
                ),
            )
        )
        trains = [train[f].to_numpy() for f in features]
        results.append(
            (
                f"(c) scipy.stats.ks_2samp x {N_FEATURES}, raw rows vs the {TRAIN_ROWS:,}-row training column",
                timed(
                    lambda: [ss.ks_2samp(t, x, method="asymp") for t, x in zip(trains, arrays, strict=True)],
                    3,
                ),
            )
        )
        for f, r, x in zip(features, refs, arrays, strict=True):
            assert report.features[f].statistic == ss.ks_2samp(r, x, method="asymp").statistic

    print()
    print(
        f"rows: {args.rows:,} x {N_FEATURES} features; median of {repeats} (scipy and 1,000-row batches: of 3)"
    )
    print()
    print("| what | seconds (wall) | CPU seconds |")
    print("| --- | ---: | ---: |")
    for what, (wall, cpu) in results:
        print(f"| {what} | {wall:.3f} | {cpu:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
