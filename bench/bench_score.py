"""Benchmark ``nb2prod score``: rows/s and peak memory against a plain predict_proba script.

Run from the repository root::

    .venv/bin/python bench/bench_score.py                          # 1 M and 5 M rows (the issue's run)
    .venv/bin/python bench/bench_score.py --rows 200000 --rounds 1 # quicker
    .venv/bin/python bench/bench_score.py --cluster                # also a 2-worker LocalCluster
    .venv/bin/python bench/bench_score.py --stages                 # where one process's time goes
    .venv/bin/python bench/bench_score.py --pg postgresql+psycopg://U:P@127.0.0.1:5432/DB  # + PG store

The example notebook (``nb2prod demo``'s breast-cancer LogisticRegression, 30 float
features) is captured once in a temp project. For each size, a Parquet file of that many
rows (the training rows resampled with noise, 100,000-row row groups) is scored, in
interleaved rounds (each variant once per round, each in its own process):

* ``plain``: the same sklearn model (loaded from the same verified files), ``pandas.read_parquet``
  of the whole file, ``predict_proba``; no checks, no output, no logging;
* ``nb2prod score``: contract check, output Parquet, every row logged (Arrow IPC chunks + drift
  sketches) into a fresh SQLite prediction store;
* ``nb2prod score --no-log``; with ``--pg``, ``nb2prod score`` logging into PostgreSQL (COPY).

Peak memory is each process's own ``ru_maxrss`` (``os.wait4``). rows/s counts the scoring
alone (plain: read + predict; nb2prod: from the first chunk to the renamed output with every
row committed to the store; model loading excluded on both sides). Medians over the rounds.

``--cluster``: the input as 10 Parquet parts, scored by one process and by a 2-worker
``LocalCluster`` (127.0.0.1, one thread each), with and without logging, interleaved; once
with Dask's worker environment as it is, once with ``MALLOC_MMAP_THRESHOLD_`` = 32 MiB in
``distributed.nanny.pre-spawn-environ`` (README: "Batch scoring on Dask").

``--stages``: the stages of one process timed one after another on the same chunks, in
one thread (no overlap): read, contract check, model, output, chunk encoding (Arrow IPC, zstd), sketches,
store insert. They say what each stage costs a row, and so what bounds the rows/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine  # bench/ is on sys.path when a benchmark runs as a script

MODEL = "breast-cancer"
MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"
ROW_GROUP = 100_000

PLAIN = r"""
import json, sys, time
import pandas as pd
from nb2prod.batch.model import from_registry
from nb2prod.config import load_settings
model = from_registry(sys.argv[2], load_settings()).model
t0 = time.perf_counter()
frame = pd.read_parquet(sys.argv[1])
proba = model.predict_proba(frame)
print(json.dumps({"rows": len(frame), "seconds": time.perf_counter() - t0}))
"""

NB2PROD = r"""
import json, sys, time
from nb2prod.batch import score
t = {}
result = score(sys.argv[2], sys.argv[1], sys.argv[3], chunk_rows=int(sys.argv[4]), scheduler=sys.argv[5] or None,
               log=sys.argv[6] != "-", store=sys.argv[6] if sys.argv[6] != "-" else None,
               on_start=lambda m, s: t.setdefault("t0", time.perf_counter()))
print(json.dumps({"rows": result.rows, "seconds": time.perf_counter() - t["t0"], "scored": result.scored}))
"""

STAGES = r"""
import json, sys, time
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pathlib import Path
from nb2prod.batch.model import from_registry
from nb2prod.batch.source import open_source
from nb2prod.batch import rows as batch_rows
from nb2prod.batch.log import _sketch_values
from nb2prod.batch.score import _Writer
from nb2prod.config import load_settings
from nb2prod.serving import contract, sketch
from nb2prod.serving.store import Store

loaded = from_registry(sys.argv[2], load_settings())
rules = contract.rules(loaded.manifest.schema, loaded.manifest.reference)
sketchers = {c: sketch.Sketcher(p) for c, p in loaded.manifest.monitored_columns().items()}
store = Store(sys.argv[3])
out = _Writer(Path(sys.argv[4]))
t = dict.fromkeys(["read", "check", "model", "output", "encode", "sketch", "insert"], 0.0)
rows = 0
clock = time.perf_counter
batches = open_source(Path(sys.argv[1])).parts[0].batches(int(sys.argv[5]))
while True:
    t0 = clock()
    batch = next(batches, None)
    t["read"] += clock() - t0
    if batch is None:
        break
    n = batch.num_rows
    t0 = clock(); checked = contract.check(batch, rules); frame = contract.frame(checked, rules); t["check"] += clock() - t0
    t0 = clock()
    predictions = np.asarray(loaded.model.predict(frame)); proba = loaded.model.predict_proba(frame)
    t["model"] += clock() - t0
    t0 = clock()
    numbers = pa.array(np.arange(rows, rows + n))
    ids = pc.binary_join_element_wise("b1-", pc.cast(numbers, pa.string()), "")
    table = pa.table({"row_id": numbers, "request_id": ids, "prediction": predictions,
                      **{f"proba_{j}": proba[:, j] for j in range(proba.shape[1])},
                      "model_version": pa.repeat(pa.scalar("1"), n)})
    out.write(table)
    t["output"] += clock() - t0
    columns = {r.name: (checked.values[r.name], checked.null[r.name], r.kind) for r in rules}
    t0 = clock()
    chunk = batch_rows.chunk_row("b1", np.arange(rows, rows + n), columns, predictions,
                                 {str(j): proba[:, j] for j in range(proba.shape[1])}, ts=time.time(), version="1")
    t["encode"] += clock() - t0
    t0 = clock()
    for c, s in sketchers.items():
        s(predictions if c == "__prediction__" else _sketch_values(*columns[c][:2], columns[c][2]))
    t["sketch"] += clock() - t0
    t0 = clock()
    batch_rows.write(store, chunk)
    t["insert"] += clock() - t0
    rows += n
out.commit()
store.close()
print(json.dumps({"rows": rows, **t}))
"""


def _run(code: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[dict[str, float], float]:
    """Run ``code`` in its own process: its JSON line and its own peak RSS in MiB (``wait4``)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{err.decode()[-3000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def _write_rows(path: Path, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_breast_cancer

    base = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    rng = np.random.default_rng(seed)
    scale = base.std().to_numpy() * 0.05
    with pq.ParquetWriter(path, pa.Schema.from_pandas(base, preserve_index=False)) as writer:
        for start in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - start)
            picked = base.to_numpy()[rng.integers(0, len(base), n)]
            values = np.abs(picked + rng.normal(0, 1, picked.shape) * scale)
            chunk = pa.Table.from_arrays(
                [pa.array(values[:, j]) for j in range(values.shape[1])], names=list(base.columns)
            )
            writer.write_table(chunk)


def _fresh(path: Path) -> str:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return str(path)


def _reset_pg(url: str) -> None:
    """Empty the benchmark's PostgreSQL store between rounds (the tables stay)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        exists = conn.execute(sa.text("SELECT to_regclass('predictions')")).scalar()
        if exists:
            conn.execute(sa.text("TRUNCATE predictions, sketches, events"))
    engine.dispose()


def _speed(result: dict[str, float]) -> float:
    return result["rows"] / result["seconds"]


def _table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}")
    print("| rows | what | rows/s (median) | peak RSS MiB |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated input sizes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per size")
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--cluster", action="store_true", help="also score parts on a 2-worker LocalCluster")
    parser.add_argument("--stages", action="store_true", help="time each stage of one process")
    parser.add_argument("--pg", default=None, metavar="URL", help="also log into this PostgreSQL store")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    print(_machine.machine(("scikit-learn", "pyarrow", "pandas", "dask")))
    print(f"command: python bench/bench_score.py {' '.join(sys.argv[1:])}")
    from nb2prod.demo import run_demo

    with tempfile.TemporaryDirectory(prefix="nb2prod-bench-score-") as tmp:
        root = Path(tmp)
        report = run_demo(root / "demo")
        home = report.project
        env = dict(
            os.environ,
            NB2PROD_HOME=str(home),
            MLFLOW_TRACKING_URI=f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}",
        )
        for name in ("BENTOML_HOME", "NB2PROD_PREDICTION_STORE"):
            env.pop(name, None)
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
        for rows in sizes:
            data = root / f"rows-{rows}.parquet"
            _write_rows(data, rows)
            _compare(root, data, rows, env, home, args)
            if args.stages:
                _stages(root, data, rows, env, home, args.chunk_rows)
            if args.cluster:
                _cluster(root, data, rows, env, home, args.chunk_rows, args.rounds)
            data.unlink()


def _compare(
    root: Path, data: Path, rows: int, env: dict[str, str], home: Path, args: argparse.Namespace
) -> None:
    """Plain script and ``nb2prod score`` variants on ``data``, interleaved rounds; the table."""
    variants: dict[str, Any] = {
        "plain `predict_proba`": lambda: _run(PLAIN, [str(data), MODEL], env, home),
        "`nb2prod score` (SQLite log)": lambda: _run(
            NB2PROD,
            [
                str(data),
                MODEL,
                str(root / "out.parquet"),
                str(args.chunk_rows),
                "",
                _fresh(root / "s.db"),
            ],
            env,
            home,
        ),
        "`nb2prod score --no-log`": lambda: _run(
            NB2PROD,
            [str(data), MODEL, str(root / "out.parquet"), str(args.chunk_rows), "", "-"],
            env,
            home,
        ),
    }
    if args.pg:

        def pg_run() -> tuple[dict[str, float], float]:
            _reset_pg(args.pg)
            return _run(
                NB2PROD,
                [str(data), MODEL, str(root / "out.parquet"), str(args.chunk_rows), "", args.pg],
                env,
                home,
            )

        variants["`nb2prod score` (PostgreSQL log)"] = pg_run
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, run in variants.items():
            result, rss = run()
            results[name].append((_speed(result), rss))
            print(
                f"  round {r + 1} {rows:,} {name}: {_speed(result):,.0f} rows/s, {rss:,.0f} MiB",
                flush=True,
            )
    plain = statistics.median(s for s, _ in results["plain `predict_proba`"])
    lines = []
    for name, values in results.items():
        speed = statistics.median(s for s, _ in values)
        rss = max(m for _, m in values)
        ratio = "" if name.startswith("plain") else f" ({speed / plain:.2f}x plain)"
        lines.append((f"{rows / 1e6:g} M", name, f"{speed:,.0f}{ratio}", f"{rss:,.0f}"))
    _table(f"{rows:,} rows, {args.rounds} rounds", lines)


def _stages(root: Path, data: Path, rows: int, env: dict[str, str], home: Path, chunk_rows: int) -> None:
    result, _ = _run(
        STAGES,
        [str(data), MODEL, _fresh(root / "stages.db"), str(root / "stages.parquet"), str(chunk_rows)],
        env,
        home,
    )
    total = sum(v for k, v in result.items() if k != "rows")
    print(f"\nstages of one process, one after another, {rows:,} rows (us a row, share of the sum)")
    print("| stage | us/row | share |")
    print("| --- | --- | --- |")
    for key, value in result.items():
        if key != "rows":
            print(f"| {key} | {value / rows * 1e6:.2f} | {value / total:.0%} |")
    print(f"| sum | {total / rows * 1e6:.2f} | 100% |")


def _cluster(
    root: Path, data: Path, rows: int, env: dict[str, str], home: Path, chunk_rows: int, rounds: int
) -> None:
    import pyarrow.parquet as pq
    from distributed import LocalCluster

    parts = root / f"parts-{rows}"
    parts.mkdir()
    handle = pq.ParquetFile(data)
    groups = handle.num_row_groups
    per_part = max(1, groups // 10)
    for i, start in enumerate(range(0, groups, per_part)):
        table = handle.read_row_groups(list(range(start, min(groups, start + per_part))))
        pq.write_table(table, parts / f"part-{i:04d}.parquet")

    def out_dir() -> str:
        path = root / "out-cluster"
        shutil.rmtree(path, ignore_errors=True)
        return str(path)

    import dask

    results: dict[str, list[float]] = {}
    clusters: tuple[tuple[str, dict[str, str]], ...] = (
        ("LocalCluster", {}),
        ("LocalCluster, mmap 32 MiB", {MMAP_ENV: str(32 << 20)}),
    )
    for label, environ in clusters:
        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
        # adaptive mmap threshold: every chunk-sized numpy array is then mmap'd and unmapped anew.
        with (
            dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in environ.items()}),
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as cluster,
        ):
            time.sleep(1)
            for r in range(rounds):
                for log in (False, True):
                    suffix = "SQLite log" if log else "--no-log"
                    for where, scheduler in (
                        ("1 process", ""),
                        (f"2-worker {label}", cluster.scheduler_address),
                    ):
                        store = _fresh(root / "c.db") if log else "-"
                        out = out_dir() if scheduler else str(root / "out-one.parquet")
                        result, _ = _run(
                            NB2PROD, [str(parts), MODEL, out, str(chunk_rows), scheduler, store], env, home
                        )
                        key = f"{where}, {suffix}"
                        results.setdefault(key, []).append(_speed(result))
                        print(f"  round {r + 1} {rows:,} {key}: {_speed(result):,.0f} rows/s", flush=True)
    print(f"\n{rows:,} rows in {len(list(parts.iterdir()))} parts, {rounds} rounds a cluster")
    print("| what | rows/s (median) | 2 workers / 1 process |")
    print("| --- | --- | --- |")
    for suffix in ("--no-log", "SQLite log"):
        one = statistics.median(results[f"1 process, {suffix}"])
        print(f"| 1 process, {suffix} | {one:,.0f} | |")
        for label, _ in clusters:
            two = statistics.median(results[f"2-worker {label}, {suffix}"])
            print(f"| 2-worker {label}, {suffix} | {two:,.0f} | {two / one:.2f}x |")
    shutil.rmtree(parts)


if __name__ == "__main__":
    main()
