"""Team-scale sizing: the service on SQLite and PostgreSQL with 1 and 2 workers; drift over 1 M rows in PostgreSQL.

One command (as root with the machine's PostgreSQL cluster, or with ``--pg URL`` /
``NB2PROD_TEST_PG_URL`` naming a role that may create databases)::

    .venv/bin/python bench/bench_team.py [--seconds 10] [--rounds 3] [--connections 16] [--rows 1000000] [--write]

(1) Serving: the breast-cancer pipeline is captured in a temp project and exported once;
    four ``nb2prod serve`` of that Bento run side by side for the whole benchmark:
    SQLite store x 1 worker, SQLite x 2 workers, PostgreSQL x 1, PostgreSQL x 2 (each its
    own store: a file, or a schema of one fresh database). ``wrk`` posts a 1-row body
    with a unique ``X-Request-ID`` per request and ``Connection: close`` (a new connection
    per request, so both workers take requests; with keep-alive one worker takes them all),
    in interleaved rounds (the systems' order rotates each round). Medians over rounds.
    Served = logged: after the runs, every store holds at least as many rows as wrk read
    answers (requests in flight when wrk stops are answered and logged but not counted),
    no request id twice, and ``nb2prod_monitor_dropped_total`` is 0.
(2) Drift: ``build_report`` (the core of ``nb2prod monitor``) over 1 M rows x 30 features
    as minute sketches over 24 h from 2 writers (bench/bench_drift.py's data), read from a
    PostgreSQL store and, side by side, from a SQLite one; the PostgreSQL store also holds
    the 1 M raw prediction rows, written with ``COPY`` (its time is given).

``--write`` replaces the ``## Team scale`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _machine  # noqa: E402
import bench_serve  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Team scale"
PACKAGES = ("bentoml", "mlflow", "sqlalchemy", "psycopg", "numpy", "scipy")

WRK_SCRIPT = """
wrk.method = "POST"
local body = {body}
local n = 0
local prefix = ""
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  prefix = "{tag}-" .. tostring(tid) .. "-"
end
function request()
  n = n + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json", ["Connection"] = "close",
    ["X-Request-ID"] = prefix .. n}}, body)
end
"""


@dataclass
class System:
    name: str
    store: str  # a SQLite path or a PostgreSQL URL (a schema of its own)
    workers: int
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    runs: list[bench_serve.Result] = field(default_factory=list)
    read: int = 0  # answers wrk read, warm-ups included


def pg_admin_url(given: str | None) -> str:
    url = given or os.environ.get("NB2PROD_TEST_PG_URL")
    if url:
        return url
    from tests.pg import _local_cluster  # the machine's cluster, as the tests set it up (root)

    return _local_cluster()


def fresh_database(admin: str, label: str) -> str:
    import psycopg

    from tests.pg import libpq_url, with_database

    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin, name)


def drop_database(admin: str, url: str) -> None:
    import psycopg
    import sqlalchemy as sa

    from tests.pg import libpq_url

    name = sa.engine.make_url(url).database
    with psycopg.connect(libpq_url(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_url(url: str, schema: str) -> str:
    import psycopg
    import sqlalchemy as sa

    from tests.pg import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    made = sa.engine.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    return made.render_as_string(hide_password=False)


def start(system: System, home: Path, model: str, env: dict[str, str]) -> None:
    port = bench_serve.free_port()
    argv = [sys.executable, "-m", "nb2prod", "serve", model, "--port", str(port), "--store", system.store]
    argv += ["--workers", str(system.workers)]
    log = (home / f"serve-{system.name}.log").open("wb")
    system.proc = subprocess.Popen(argv, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT)
    system.url = f"http://127.0.0.1:{port}"


def wrk(system: System, body: str, connections: int, seconds: int, tmp: Path, tag: str) -> bench_serve.Result:
    script = tmp / f"{tag}.lua"
    script.write_text(WRK_SCRIPT.format(body=json.dumps(body), tag=tag), encoding="utf-8")
    cmd = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
    ]
    out = subprocess.run(
        [*cmd, system.url + "/predict"], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    result = bench_serve.parse_wrk(out)
    system.read += result.requests
    return result


def logged(system: System) -> tuple[int, int]:
    """Rows in the system's store (shadow rows aside) and how many request ids appear twice."""
    sql = "SELECT count(*), count(*) - count(DISTINCT request_id) FROM predictions WHERE monitor <> 'shadow'"
    if "://" in system.store:
        import psycopg

        from tests.pg import libpq_url

        url = libpq_url(system.store).split("?", 1)[0]
        schema = system.store.split("search_path%3D", 1)[-1] if "search_path%3D" in system.store else None
        schema = schema or system.store.split("search_path=", 1)[-1]
        with psycopg.connect(url) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            total, twice = conn.execute(sql).fetchone()  # type: ignore[misc]
        return int(total), int(twice)
    import sqlite3

    conn = sqlite3.connect(system.store)
    try:
        total, twice = conn.execute(sql).fetchone()
    finally:
        conn.close()
    return int(total), int(twice)


def dropped(system: System) -> str:
    with urllib.request.urlopen(system.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("nb2prod_monitor_dropped_total"):
            return line.split()[-1]
    return "?"


def serving_bench(args: argparse.Namespace, admin: str, tmp: Path) -> tuple[list[System], list[str]]:
    from nb2prod.demo import new_project
    from nb2prod.export import export_model

    home = new_project(tmp / "project")
    (home / ".nb2prod").mkdir(exist_ok=True)
    model, row = bench_serve.train(home)
    exported = export_model(model)
    print(f"exported {exported.tag}", flush=True)
    database = fresh_database(admin, "serve")
    systems = [
        System("sqlite, 1 worker", str(tmp / "sqlite-1.db"), 1),
        System("sqlite, 2 workers", str(tmp / "sqlite-2.db"), 2),
        System("postgresql, 1 worker", schema_url(database, "pg1"), 1),
        System("postgresql, 2 workers", schema_url(database, "pg2"), 2),
    ]
    env = dict(os.environ, NB2PROD_HOME=str(home))
    env.pop("NB2PROD_PREDICTION_STORE", None)
    notes: list[str] = []
    try:
        for system in systems:
            start(system, home, model, env)
        for system in systems:
            assert system.proc is not None
            bench_serve.wait_ready(system.url + "/readyz", system.proc)
        body = json.dumps(row)
        for system in systems:  # a request that must succeed, then a warm-up run
            req = urllib.request.Request(
                system.url + "/predict", data=body.encode(), headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.status == 200
            system.read += 1
            wrk(system, body, args.connections, 3, tmp, f"warm{systems.index(system)}")
        for r in range(args.rounds):
            order = systems[r % len(systems) :] + systems[: r % len(systems)]
            for system in order:
                res = wrk(system, body, args.connections, args.seconds, tmp, f"r{r}s{systems.index(system)}")
                system.runs.append(res)
                print(
                    f"round {r + 1} {system.name}: {res.rps:.1f} req/s, p99 {res.p99_ms:.0f} ms", flush=True
                )
        time.sleep(3)  # the writers flush each second
        for system in systems:
            total, twice = logged(system)
            drops = dropped(system)
            ok = total >= system.read and twice == 0 and drops in ("0.0", "0")
            notes.append(
                f"{system.name}: wrk read {system.read:,} answers, the store holds {total:,} rows "
                f"({twice} request ids twice), dropped {drops}: {'served = logged' if ok else 'LOST OR DOUBLED ROWS'}"
            )
    finally:
        for system in systems:
            if system.proc is not None:
                bench_serve.stop(system.proc)
        drop_database(admin, database)
    return systems, notes


def copy_predictions(url: str, live: Any, n_features: int, t0: float, day: int) -> tuple[float, float]:
    """The raw rows of ``live`` into ``predictions`` with COPY: (seconds to build the text, seconds of COPY)."""
    import numpy as np
    import psycopg

    from tests.pg import libpq_url

    started = time.perf_counter()
    rows = len(live)
    minute = (np.arange(rows) * (day // 60) // rows).astype(np.int64)
    ts = (t0 + minute * 60 + 1).astype(np.float64)
    features = live[[f"x{i}" for i in range(n_features)]].to_json(orient="records", lines=True).splitlines()
    labels = live["y"].to_numpy().astype(int)
    text = "".join(
        f'r{i}\t{ts[i]}\tbench\t1\t{features[i]}\t{{"prediction": {labels[i]}}}\n' for i in range(rows)
    ).encode()
    built = time.perf_counter() - started
    base, schema = libpq_url(url).split("?", 1)[0], url.split("search_path%3D", 1)[-1]
    started = time.perf_counter()
    with psycopg.connect(base) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        with conn.cursor() as cur:
            copy_sql = (
                "COPY predictions (request_id, ts, monitor, model_version, features, prediction) FROM STDIN"
            )
            with cur.copy(copy_sql) as copy:
                for k in range(0, len(text), 1 << 20):
                    copy.write(text[k : k + (1 << 20)])
        conn.commit()
    return built, time.perf_counter() - started


def drift_bench(
    args: argparse.Namespace, admin: str, tmp: Path
) -> tuple[list[tuple[str, float, float]], list[str]]:
    import bench_drift

    from nb2prod.capture.data import summarize
    from nb2prod.monitoring import build_report
    from nb2prod.serving.store import Store

    train, live = bench_drift.frames(args.rows)
    profile = {k: p.to_dict() for k, p in summarize(train)[1].items()}
    features = [f"x{i}" for i in range(bench_drift.N_FEATURES)]
    manifest: dict[str, Any] = {
        "reference": {f: profile[f] for f in features},
        "target": {"name": "y", "profile": profile["y"]},
        "model": {"is_classifier": True},
    }
    database = fresh_database(admin, "drift")
    notes: list[str] = []
    try:
        pg = schema_url(database, "drift")
        Store(pg).close()
        sqlite = tmp / "drift.db"
        t0 = time.perf_counter()
        info = bench_drift.build_store(sqlite, manifest, live, 0)
        sqlite_build = time.perf_counter() - t0
        # the same sketches into PostgreSQL (bench_drift writes them through Store: one
        # transaction per minute of 2 writers x 31 columns)
        t0 = time.perf_counter()
        info_pg = build_pg_sketches(pg, manifest, live)
        pg_build = time.perf_counter() - t0
        built_s, copy_s = copy_predictions(pg, live, bench_drift.N_FEATURES, bench_drift.T0, bench_drift.DAY)
        notes.append(
            f"Stores: {info['sketches']:,} sketch rows ({info['sketch_bytes'] / 1e6:.1f} MB of counts) in each; "
            f"written in {sqlite_build:.1f} s (SQLite) and {pg_build:.1f} s (PostgreSQL, upserts); "
            f"PostgreSQL also holds the {args.rows:,} raw prediction rows: COPY {copy_s:.1f} s "
            f"({args.rows / copy_s:,.0f} rows/s; building their text {built_s:.1f} s)."
        )
        assert info_pg == info["sketches"]
        since, until = bench_drift.T0, bench_drift.T0 + bench_drift.DAY
        reports = {"sqlite": str(sqlite), "postgresql": pg}
        first = {k: build_report(v, manifest, since=since, until=until) for k, v in reports.items()}
        for k, rep in first.items():
            assert rep.rows == args.rows and rep.source == "sketches", (k, rep.rows, rep.source)
        assert first["sqlite"].drifted == first["postgresql"].drifted
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        windows = {"24 h": (since, until), "last hour": (until - 3600, until)}
        for _ in range(args.repeats):  # interleaved: both stores in every round
            for window, (lo, hi) in windows.items():
                for kind, location in reports.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    build_report(location, manifest, since=lo, until=hi)
                    times.setdefault((kind, window), []).append(time.perf_counter() - w0)
                    cpu.setdefault((kind, window), []).append(time.process_time() - c0)
        rows = [
            (
                f"build_report, {args.rows:,} rows x {bench_drift.N_FEATURES} features, {window}, {kind}",
                statistics.median(times[(kind, window)]),
                statistics.median(cpu[(kind, window)]),
            )
            for window in windows
            for kind in reports
        ]
        notes.append(
            f"Report: status {first['postgresql'].status}, drifted {first['postgresql'].drifted} (the same from both stores)."
        )
    finally:
        drop_database(admin, database)
    return rows, notes


def build_pg_sketches(url: str, manifest: dict[str, Any], live: Any) -> int:
    """bench_drift's minute sketches of ``live`` written into the PostgreSQL store at ``url``."""
    import bench_drift
    import numpy as np

    from nb2prod.serving.sketch import Sketcher, encode
    from nb2prod.serving.store import PREDICTION_COLUMN, SQL_UPSERT_SKETCH, Store

    columns = {c: Sketcher(p) for c, p in manifest["reference"].items()}
    columns[PREDICTION_COLUMN] = Sketcher(manifest["target"]["profile"])
    rows = len(live)
    day = bench_drift.DAY
    minute = (np.arange(rows) * (day // 60) // rows).astype(np.int64)
    starts = np.searchsorted(minute, np.arange(day // 60 + 1))
    data = {c: live[c if c != PREDICTION_COLUMN else "y"].to_numpy() for c in columns}
    store = Store(url)
    written = 0
    batch: list[dict[str, Any]] = []
    for m in range(day // 60):
        lo, hi = starts[m], starts[m + 1]
        for w in range(bench_drift.WRITERS):
            for col, sketcher in columns.items():
                values = data[col][lo + w : hi : bench_drift.WRITERS]
                batch.append(
                    {
                        "bucket": bench_drift.T0 + 60 * m,
                        "model_version": "2" if w == 1 and m % 10 == 0 else "1",
                        "col": col,
                        "writer": f"w{w}",
                        "n": len(values),
                        "counts": encode(sketcher(values)),
                    }
                )
        if len(batch) >= 5000 or m == day // 60 - 1:
            store.write(SQL_UPSERT_SKETCH, batch)
            written += len(batch)
            batch = []
    store.close()
    return written


def section(machine: str, args: argparse.Namespace, systems: list[System], notes: list[str],
            drift_rows: list[tuple[str, float, float]], drift_notes: list[str]) -> str:  # fmt: skip
    lines = [
        SECTION,
        "",
        "Command (from the repository root; as root with the machine's PostgreSQL cluster, or with",
        "`--pg URL` / `NB2PROD_TEST_PG_URL`):",
        "",
        "```",
        f".venv/bin/python bench/bench_team.py --seconds {args.seconds} --rounds {args.rounds} "
        f"--connections {args.connections} --rows {args.rows} --write",
        "```",
        "",
        f"Machine: {machine}.",
        "",
        "### Serving: SQLite vs PostgreSQL store, 1 vs 2 workers",
        "",
        "The breast-cancer pipeline (StandardScaler + LogisticRegression, 30 float features), exported",
        "once; four `nb2prod serve` of the Bento side by side for the whole run (each its own store:",
        "a SQLite file, or a schema of one PostgreSQL database on 127.0.0.1). `wrk` posts a 1-row body",
        f"from {args.connections} connections with a unique `X-Request-ID` and `Connection: close` (a new",
        "connection per request: with keep-alive one worker takes every connection), "
        f"{args.seconds} s a run, {args.rounds} interleaved rounds",
        "(the order rotates each round); medians over the rounds, the spread in brackets.",
        "",
        "| store, workers | req/s | p50 ms | p99 ms | errors | vs sqlite, 1 worker |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = statistics.median(r.rps for r in systems[0].runs) if systems else 1.0
    for system in systems:
        rps = [r.rps for r in system.runs]
        lines.append(
            f"| {system.name} | {statistics.median(rps):.1f} [{min(rps):.0f}-{max(rps):.0f}] | "
            f"{statistics.median(r.p50_ms for r in system.runs):.0f} | "
            f"{statistics.median(r.p99_ms for r in system.runs):.0f} | "
            f"{sum(r.errors for r in system.runs)} | {statistics.median(rps) / base:.2f} |"
        )
    lines += ["", "Served = logged (after every run, warm-ups included):", ""]
    lines += [f"- {n}" for n in notes]
    lines += [
        "",
        f"### Drift report over {args.rows:,} rows read from PostgreSQL",
        "",
        "`build_report` (the core of `nb2prod monitor`) over bench/bench_drift.py's data: 1 M live rows",
        "x 30 float features (one shifted) as minute sketches over 24 h from 2 writers, the same",
        f"sketches in a PostgreSQL store and a SQLite one; medians of {args.repeats} interleaved rounds.",
        "",
        "| what | seconds (wall) | CPU seconds (this process) |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {what} | {wall:.3f} | {cpu:.3f} |" for what, wall, cpu in drift_rows]
    lines += [""] + [f"- {n}" for n in drift_notes] + [""]
    return "\n".join(lines)


def write_section(text: str) -> None:
    current = RESULTS.read_text(encoding="utf-8")
    start = current.find(SECTION + "\n")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(SECTION))
        updated = current[:start] + text + ("\n" + current[end + 1 :] if end != -1 else "")
    RESULTS.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument(
        "--rows", type=int, default=1_000_000, help="rows of the drift report (default 1,000,000)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--pg", default=None, help="URL of a PostgreSQL role that may create databases")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument(
        "--write", action="store_true", help="replace the '## Team scale' section of bench/RESULTS.md"
    )
    args = ap.parse_args(argv)
    machine = _machine.machine(PACKAGES)
    print(f"machine: {machine}", flush=True)
    admin = pg_admin_url(args.pg)
    systems: list[System] = []
    notes: list[str] = []
    drift_rows: list[tuple[str, float, float]] = []
    drift_notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="nb2prod-bench-team-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_serving:
            systems, notes = serving_bench(args, admin, tmp)
            for n in notes:
                print(n)
        if not args.skip_drift:
            drift_rows, drift_notes = drift_bench(args, admin, tmp)
            for what, wall, cpu in drift_rows:
                print(f"{what}: {wall:.3f} s wall, {cpu:.3f} s CPU")
            for n in drift_notes:
                print(n)
    text = section(machine, args, systems, notes, drift_rows, drift_notes)
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
