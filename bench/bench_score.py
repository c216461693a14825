"""Benchmark ``nb2prod score``: rows/s and peak memory against a plain predict_proba script.

Run from the repository root::

    .venv/bin/python bench/bench_score.py                          # 1 M and 5 M rows (the issue's run)
    .venv/bin/python bench/bench_score.py --rows 200000,1000000    # quicker
    .venv/bin/python bench/bench_score.py --cluster                # also a 2-worker LocalCluster

The example notebook (``nb2prod demo``'s breast-cancer LogisticRegression, 30 float
features) is captured once in a temp project. For each size, a Parquet file of that many
rows (the training rows resampled with noise, 100,000-row row groups) is scored:

* ``nb2prod score`` (contract check, rejects, output, every row logged with its sketches
  into the prediction store), in its own process; and the same with ``--no-log``;
* a plain script in its own process: the same sklearn model (loaded with skops from the
  same verified files), ``pandas.read_parquet`` of the whole file, ``predict_proba``.

Peak memory is each process's own ``ru_maxrss`` (``os.wait4``). rows/s counts the scoring
alone (the plain script: read + predict; nb2prod: from the first chunk to the renamed
output, model loading excluded on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _machine  # bench/ is on sys.path when a benchmark runs as a script

MODEL = "breast-cancer"
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
               log=sys.argv[6] == "log", on_start=lambda m, s: t.setdefault("t0", time.perf_counter()))
print(json.dumps({"rows": result.rows, "seconds": time.perf_counter() - t["t0"], "scored": result.scored}))
"""


def _run(code: str, args: list[str], env: dict[str, str], cwd: Path) -> tuple[dict[str, float], float]:
    """Run ``code`` in its own process: its JSON line and its peak RSS in MiB."""
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated input sizes")
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--cluster", action="store_true", help="also score on a 2-worker LocalCluster")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    print(_machine.machine(("scikit-learn", "pyarrow", "pandas", "dask")))
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
        print(f"{'rows':>10} {'what':<28} {'rows/s':>12} {'peak RSS MiB':>13}")
        for rows in sizes:
            data = root / f"rows-{rows}.parquet"
            _write_rows(data, rows)
            plain, plain_rss = _run(PLAIN, [str(data), MODEL], env, home)
            env["NB2PROD_PREDICTION_STORE"] = str(root / f"store-{rows}.db")
            ours, ours_rss = _run(
                NB2PROD,
                [str(data), MODEL, str(root / f"out-{rows}.parquet"), str(args.chunk_rows), "", "log"],
                env,
                home,
            )
            bare, bare_rss = _run(
                NB2PROD,
                [str(data), MODEL, str(root / f"bare-{rows}.parquet"), str(args.chunk_rows), "", "no-log"],
                env,
                home,
            )
            print(
                f"{rows:>10,} {'plain predict_proba':<28} {plain['rows'] / plain['seconds']:>12,.0f} {plain_rss:>13,.0f}"
            )
            ratio = (ours["rows"] / ours["seconds"]) / (plain["rows"] / plain["seconds"])
            print(
                f"{rows:>10,} {'nb2prod score (1 process)':<28} {ours['rows'] / ours['seconds']:>12,.0f} "
                f"{ours_rss:>13,.0f}   {ratio:.2f}x plain"
            )
            ratio = (bare["rows"] / bare["seconds"]) / (plain["rows"] / plain["seconds"])
            print(
                f"{rows:>10,} {'nb2prod score --no-log':<28} {bare['rows'] / bare['seconds']:>12,.0f} "
                f"{bare_rss:>13,.0f}   {ratio:.2f}x plain"
            )
            if args.cluster:
                _cluster(root, data, rows, env, home, args.chunk_rows, ours)
            data.unlink()


def _cluster(
    root: Path, data: Path, rows: int, env: dict[str, str], home: Path, chunk_rows: int, one: dict[str, float]
) -> None:
    import pyarrow.parquet as pq
    from distributed import LocalCluster

    parts = root / f"parts-{rows}"
    parts.mkdir()
    handle = pq.ParquetFile(data)
    for i in range(handle.num_row_groups):  # one part per row group: enough tasks for 2 workers
        pq.write_table(handle.read_row_group(i), parts / f"part-{i:04d}.parquet")
    env = dict(env, NB2PROD_PREDICTION_STORE=str(root / f"store-cluster-{rows}.db"))
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        started = time.perf_counter()
        ours, _ = _run(
            NB2PROD,
            [
                str(parts),
                MODEL,
                str(root / f"out-cluster-{rows}"),
                str(chunk_rows),
                cluster.scheduler_address,
                "log",
            ],
            env,
            home,
        )
        del started
    speed = ours["rows"] / ours["seconds"]
    print(
        f"{rows:>10,} {'nb2prod score (2 workers)':<28} {speed:>12,.0f} {'-':>13}   {speed / (one['rows'] / one['seconds']):.2f}x 1 process"
    )


if __name__ == "__main__":
    main()
