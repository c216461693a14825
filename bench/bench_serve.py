"""Serving benchmark: the exported service (all hooks) vs a bare BentoML service vs ``mlflow models serve``.

One command::

    .venv/bin/python bench/bench_serve.py [--seconds 15] [--connections 8,32] [--write]

It trains the breast-cancer pipeline (StandardScaler + LogisticRegression) in a temp
project with nb2prod capture, exports it, and serves the same model three ways on
127.0.0.1, one at a time:

* ``nb2prod``: the exported Bento: input guard, strict pydantic rows, adaptive batching,
  ``bentoml.monitor`` into the SQLite prediction store, drift gauges, integrity check.
* ``bare-bentoml``: a plain ``@bentoml.service`` on the same BentoML model, same skops
  load, same adaptive batching, same ``predict`` + ``predict_proba`` call, a plain
  pydantic row; access log off as in the exported one; no other hook.
* ``mlflow-serve``: ``mlflow models serve --env-manager local`` of the registered version.
* ``nb2prod-durable`` (``--only nb2prod,nb2prod-durable`` measures the two modes side by
  side): the same Bento served with ``NB2PROD_DURABLE=1``: each prediction is answered only
  after its log row is committed (group commit), so ``kill -9`` loses none.
* ``nb2prod-shadow``: the same Bento with a shadow challenger (``shadow`` in its control
  table, as ``POST /admin/shadow`` / ``nb2prod promote --shadow`` write it): every answered
  row is scored again by the other carried version off the request path and logged with
  ``monitor`` = ``shadow``. With it, a second version is registered and every nb2prod system
  serves the Bento carrying both (the answering one is the newest), so ``nb2prod`` is the
  no-shadow baseline of the same Bento. Target: p99 at 32 connections within 5% of it.

Load: ``wrk`` (a separate process) posting the same 1-row JSON body over keep-alive
connections; a warm-up run, then the measured run. Prints a table; ``--write`` also
replaces the ``## Serving`` section of ``bench/RESULTS.md``.

``--switch`` measures something else: how long a live service takes to follow a switch of
the active model (what ``nb2prod promote``/``rollback`` write to its control table), with
no restart. Two versions are captured, the Bento carries both, and the active one is
switched back and forth; target: every switch followed in under 5 s. (The loop test
checks that the service follows; the time is measured here.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
BIN = Path(sys.executable).parent


@dataclass
class Result:
    system: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    spread: str = ""
    cpu_ms: float = 0.0
    rounds: str = ""  # per round: throughput / bare BentoML's in the same round, and p99


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a server and all its workers (the serve process tree)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def train(home: Path, versions: int = 1) -> tuple[str, dict[str, Any]]:
    """Capture and register the breast-cancer pipeline in ``home`` (``versions`` of it, C=1, 0.1);
    returns (name, one row)."""
    os.environ["NB2PROD_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import nb2prod

    frame = load_breast_cancer(as_frame=True).frame
    train_df, test_df = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame.target)
    nb2prod.start("bench")
    nb2prod.data(train_df, name="train", role="train", target="target")
    for c in (1.0, 0.1)[:versions]:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        clf.fit(train_df.drop(columns="target"), train_df.target)
        nb2prod.model(clf, name="bc")
    nb2prod.end()
    row = {k: float(v) for k, v in test_df.drop(columns="target").iloc[0].items()}
    return "bc", row


BARE_SERVICE = """
import bentoml
import numpy as np
import pandas as pd
import skops.io as sio
from pydantic import create_model

COLUMNS = {columns!r}
Row = create_model("Row", **{{c: (float, ...) for c in COLUMNS}})


@bentoml.service(name="bare", logging={{"access": {{"enabled": False}}}}, traffic={{"timeout": 30}})
class Bare:
    model = bentoml.models.BentoModel("{model_tag}")

    def __init__(self) -> None:
        path = self.model.path + "/mlflow/model.skops"
        self.clf = sio.load(path, trusted=sio.get_untrusted_types(file=path))

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10000)
    def predict(self, rows: list[Row]) -> list[dict]:
        frame = pd.DataFrame([r.model_dump() for r in rows], columns=COLUMNS)
        pred = self.clf.predict(frame).tolist()
        proba = self.clf.predict_proba(frame).tolist()
        labels = [str(c) for c in self.clf.classes_]
        return [{{"prediction": p, "probabilities": dict(zip(labels, q))}} for p, q in zip(pred, proba)]
"""


def wrk(url: str, body: str, connections: int, seconds: int, lua_dir: Path) -> Result:
    script = lua_dir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n",
        encoding="utf-8",
    )
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    return parse_wrk(out)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(out: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return Result("", 0, rps, p50, p99, errors, total)


def warm(url: str, body: str, connections: int, seconds: int, tmp: Path) -> Result:
    """One request that must succeed (a wrong body would measure 4xx answers), then a warm-up run."""
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200, resp.status
    return wrk(url, body, connections, seconds, tmp)


def wait_shadow(metadata_url: str, timeout: float = 30) -> None:
    """Until the service follows the shadow switch of its control table."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(metadata_url, timeout=10) as resp:
            if (json.loads(resp.read()).get("shadow") or {}).get("version"):
                return
        time.sleep(0.3)
    raise RuntimeError(f"the service did not start its shadow in {timeout} s")


def machine() -> dict[str, str]:
    from importlib.metadata import version

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "bentoml": version("bentoml"),
        "mlflow": version("mlflow"),
        "scikit-learn": version("scikit-learn"),
        "wrk": wrk_version.strip() or "wrk",
    }


def table(results: list[Result]) -> str:
    lines = [
        "| system | connections | req/s (median) | req/s (all rounds) | p50 ms | p99 ms | server CPU ms/req | errors | vs bare BentoML | vs mlflow serve | per round: vs bare, p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    by = {(r.system, r.connections): r for r in results}
    for r in results:
        bare = by.get(("bare-bentoml", r.connections))
        mlf = by.get(("mlflow-serve", r.connections))
        vb = f"{r.rps / bare.rps:.2f}x" if bare else "-"
        vm = f"{r.rps / mlf.rps:.2f}x" if mlf else "-"
        lines.append(
            f"| {r.system} | {r.connections} | {r.rps:.1f} | {r.spread} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.cpu_ms:.2f} | {r.errors} | {vb} | {vm} | {r.rounds or '-'} |"
        )
    return "\n".join(lines)


def write_results(
    results: list[Result], info: dict[str, str], command: str, seconds: int, rounds: int, logged_note: str
) -> None:
    section = (
        textwrap.dedent(
            f"""\
        ## Serving

        1-row breast-cancer requests (StandardScaler + LogisticRegression, 30 float features) over
        keep-alive connections from `wrk` in its own process on 127.0.0.1; one worker per server;
        {seconds} s per run after a warm-up, the three servers measured in {rounds} interleaved
        rounds and the median run kept (the machine is shared: its load drifts).

        {"{table}"}

        - **nb2prod**: the exported Bento with every hook: input guard (content type, size,
          strict pydantic rows, NaN/inf), request ids, routing/canary/fallback, adaptive
          batching, `bentoml.monitor` into the SQLite prediction store (write-ahead spool,
          background queue), drift sketches and gauges, sha256-verified model.
        - **nb2prod-durable**: the same with `NB2PROD_DURABLE=1` (answered after the commit).
        - **nb2prod-shadow**: the same Bento with version 1 shadowing every answered row
          (scored off the request path, logged with `monitor` = `shadow`).
        - **bare-bentoml**: a plain `@bentoml.service` on the same BentoML model with the same
          skops load, the same adaptive batching and the same `predict` + `predict_proba`
          call, a plain pydantic row; access log off like the exported service; no other hook.
        - **mlflow-serve**: `mlflow models serve --env-manager local` of the same registered
          version (body `{{"dataframe_records": [row]}}`).
        - Targets (issue 17): nb2prod >= 1.0x bare BentoML at 8 and 32 connections in every
          round with p99 no worse; durable >= 0.8x; (issue 18) shadow p99 at 32 connections
          within 5% of nb2prod's.
        - {"{logged}"}

        Machine: {info["cpu"]}, {info["cores"]} cores, {info["os"]}; Python {info["python"]},
        BentoML {info["bentoml"]}, MLflow {info["mlflow"]}, scikit-learn {info["scikit-learn"]},
        {info["wrk"]}.

        Command: `{command}`
        """
        )
        .replace("{table}", table(results))
        .replace("{logged}", logged_note or "nb2prod not measured")
    )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(r"^## Serving\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


SWITCH_TARGET_S = 5.0


def predicted_version(url: str, body: str) -> str:
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())[0]["model_version"])


def measure_switch(tmp: Path, home: Path, switches: int) -> list[float]:
    """Seconds from writing the control table to the first answer of the other version, per switch."""
    os.environ["NB2PROD_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import nb2prod
    from nb2prod.config import load_settings
    from nb2prod.export import export_model, serve_command
    from nb2prod.serving.store import CONTROL_ACTIVE, Store

    frame = load_breast_cancer(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame.target
    nb2prod.start("bench-switch")
    nb2prod.data(frame, name="train", role="train", target="target")
    for c in (1.0, 0.1):  # versions 1 and 2 of the same input contract
        nb2prod.model(
            make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000)).fit(X, y), name="sw"
        )
    nb2prod.end()
    settings = load_settings(home)
    exported = export_model("sw", settings=settings, with_versions=["1"])
    print(f"exported {exported.tag} carrying {', '.join(exported.versions)}")
    store = tmp / "switch.db"
    port = free_port()
    cmd = serve_command("sw", port=port, settings=settings)
    env = dict(cmd.env, NB2PROD_PREDICTION_STORE=str(store))
    body = json.dumps({k: float(v) for k, v in X.iloc[0].items()})
    url = f"http://127.0.0.1:{port}/predict"
    with (tmp / "switch.log").open("wb") as log:
        proc = subprocess.Popen(cmd.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    times: list[float] = []
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        current = predicted_version(url, body)
        control = Store(str(store))
        for _ in range(switches):
            target = "1" if current == "2" else "2"
            started = time.monotonic()
            control.set_control(CONTROL_ACTIVE, target)
            while predicted_version(url, body) != target:
                if time.monotonic() - started > 60:
                    raise RuntimeError(f"the service did not follow the switch to {target} in 60 s")
                time.sleep(0.02)
            times.append(time.monotonic() - started)
            assert proc.poll() is None, "the server restarted"
            current = target
    finally:
        stop(proc)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is kept")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", default="8,32")
    parser.add_argument("--only", default="nb2prod,bare-bentoml,mlflow-serve")
    parser.add_argument(
        "--write", action="store_true", help="update the ## Serving section of bench/RESULTS.md"
    )
    parser.add_argument(
        "--switch",
        type=int,
        nargs="?",
        const=10,
        default=0,
        metavar="N",
        help=f"instead: time N switches of the active model in a live service (target < {SWITCH_TARGET_S:.0f} s)",
    )
    args = parser.parse_args()
    if args.switch:
        tmp = Path(tempfile.mkdtemp(prefix="nb2prod-bench-switch-"))
        home = tmp / "project"
        home.mkdir()
        (home / "pyproject.toml").write_text('[tool.nb2prod]\nexperiment = "bench"\n', encoding="utf-8")
        os.environ.pop("BENTOML_HOME", None)
        times = measure_switch(tmp, home, args.switch)
        ordered = sorted(times)
        verdict = "met" if ordered[-1] < SWITCH_TARGET_S else "MISSED"
        print(
            f"switch followed in median {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s "
            f"over {len(times)} switches (target < {SWITCH_TARGET_S:.0f} s: {verdict})"
        )
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(0 if verdict == "met" else 1)
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    conns = [int(c) for c in args.connections.split(",")]
    only = args.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="nb2prod-bench-"))
    home = tmp / "project"
    home.mkdir()
    (home / "pyproject.toml").write_text('[tool.nb2prod]\nexperiment = "bench"\n', encoding="utf-8")
    os.environ.pop("BENTOML_HOME", None)
    print(f"training and exporting in {home} ...")
    shadowed = "nb2prod-shadow" in only
    name, row = train(home, versions=2 if shadowed else 1)
    from nb2prod.config import load_settings
    from nb2prod.export import export_model, serve_command

    settings = load_settings(home)
    exported = export_model(name, settings=settings, with_versions=["1"] if shadowed else ())
    print(f"exported {exported.tag}")
    body = json.dumps(row)
    logs = tmp / "logs"
    logs.mkdir()

    # All three servers run side by side (idle ones cost nothing) and are measured in
    # interleaved rounds, the median kept: the load of a shared machine drifts over minutes,
    # and one system measured entirely in a quiet minute would win on luck.
    servers: list[tuple[str, subprocess.Popen[bytes], str, str, str]] = []

    def start(
        system: str, argv: list[str], env: dict[str, str], cwd: Path, ready: str, url: str, payload: str
    ) -> None:
        log = (logs / f"{system}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        servers.append((system, proc, ready, url, payload))

    if "nb2prod" in only:
        port = free_port()
        cmd = serve_command(name, port=port, settings=settings)
        env = dict(cmd.env, NB2PROD_PREDICTION_STORE=str(tmp / "predictions.db"))
        start(
            "nb2prod",
            cmd.argv,
            env,
            home,
            f"http://127.0.0.1:{port}/readyz",
            f"http://127.0.0.1:{port}/predict",
            body,
        )
    if "nb2prod-durable" in only:
        port = free_port()
        cmd = serve_command(name, port=port, settings=settings, durable=True)
        # its own BentoML home (a copy): two servers on one home share one Prometheus directory
        durable_home = tmp / "durable-bentoml-home"
        shutil.copytree(settings.bentoml_home, durable_home)
        env = dict(
            cmd.env,
            BENTOML_HOME=str(durable_home),
            NB2PROD_PREDICTION_STORE=str(tmp / "predictions-durable.db"),
        )
        start(
            "nb2prod-durable",
            cmd.argv,
            env,
            home,
            f"http://127.0.0.1:{port}/readyz",
            f"http://127.0.0.1:{port}/predict",
            body,
        )
    if shadowed:
        port = free_port()
        cmd = serve_command(name, port=port, settings=settings)
        shadow_home = tmp / "shadow-bentoml-home"
        shutil.copytree(settings.bentoml_home, shadow_home)
        shadow_store = tmp / "predictions-shadow.db"
        from nb2prod.serving.store import Store

        # what `nb2prod promote bc 1 --shadow` writes: the version 1 scores every answered row too
        Store(str(shadow_store)).set_control("shadow", {"version": "1"})
        env = dict(cmd.env, BENTOML_HOME=str(shadow_home), NB2PROD_PREDICTION_STORE=str(shadow_store))
        start(
            "nb2prod-shadow",
            cmd.argv,
            env,
            home,
            f"http://127.0.0.1:{port}/readyz",
            f"http://127.0.0.1:{port}/predict",
            body,
        )
    if "bare-bentoml" in only:
        port = free_port()
        bare = tmp / "bare"
        bare.mkdir()
        (bare / "bare_service.py").write_text(
            BARE_SERVICE.format(columns=list(row), model_tag=exported.model_tag), encoding="utf-8"
        )
        # Its own BentoML home (a copy of the model store): two servers on one home share, and
        # wipe, one Prometheus multiprocess directory.
        bare_home = tmp / "bare-bentoml-home"
        shutil.copytree(settings.bentoml_home / "models", bare_home / "models")
        env = dict(os.environ, BENTOML_HOME=str(bare_home), BENTOML_DO_NOT_TRACK="True")
        argv = [
            str(BIN / "bentoml"),
            "serve",
            "bare_service:Bare",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        bare_body = json.dumps({"rows": [row]})
        start(
            "bare-bentoml",
            argv,
            env,
            bare,
            f"http://127.0.0.1:{port}/readyz",
            f"http://127.0.0.1:{port}/predict",
            bare_body,
        )
    if "mlflow-serve" in only:
        port = free_port()
        # mlflow execs `uvicorn` by name: the venv's bin must be on PATH
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        env = dict(os.environ, MLFLOW_TRACKING_URI=settings.tracking_uri, PATH=path)
        argv = [
            str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{exported.model_version}",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        ml_body = json.dumps({"dataframe_records": [row]})
        start(
            "mlflow-serve",
            argv,
            env,
            home,
            f"http://127.0.0.1:{port}/ping",
            f"http://127.0.0.1:{port}/invocations",
            ml_body,
        )
    runs: dict[tuple[str, int], list[Result]] = {}
    shadow_dropped = 0.0
    warmed: dict[str, int] = {}
    dropped: dict[str, str] = {}
    try:
        for system, proc, ready, url, payload in servers:
            wait_ready(ready, proc)
            if system == "nb2prod-shadow":
                wait_shadow(ready.replace("/readyz", "/metadata"))
            warmed[system] = 1 + warm(url, payload, max(conns), args.warmup, tmp).requests
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}/{args.rounds}")
            for c in conns:
                for system, proc, _ready, url, payload in servers:
                    before = cpu_seconds(proc.pid)
                    res = wrk(url, payload, c, args.seconds, tmp)
                    res.cpu_ms = (cpu_seconds(proc.pid) - before) * 1000 / max(res.requests, 1)
                    res.system, res.connections = system, c
                    runs.setdefault((system, c), []).append(res)
                    print(
                        f"  {system:13s} c={c:<3d} {res.rps:8.1f} req/s  p50 {res.p50_ms:7.1f} ms  "
                        f"p99 {res.p99_ms:7.1f} ms  cpu {res.cpu_ms:5.2f} ms/req"
                    )
        for system, _proc, ready, *_ in servers:
            if system.startswith("nb2prod"):
                time.sleep(2)  # let the monitor's queue drain
                with urllib.request.urlopen(ready.replace("/readyz", "/metrics"), timeout=10) as resp:
                    text = resp.read().decode()
                found = re.search(r"^nb2prod_monitor_dropped_total(?:\{[^}]*\})? (\S+)", text, re.M)
                dropped[system] = found.group(1) if found else "not reported"
                if system == "nb2prod-shadow":
                    shadow_dropped = sum(
                        float(v)
                        for v in re.findall(r"^nb2prod_shadow_dropped_total\{[^}]*\} (\S+)", text, re.M)
                    )
                if not found:
                    (Path(tempfile.gettempdir()) / "nb2prod-bench-metrics.txt").write_text(text)
    finally:
        for _system, proc, *_ in servers:
            stop(proc)
    notes = []
    for system, db in (
        ("nb2prod", "predictions.db"),
        ("nb2prod-durable", "predictions-durable.db"),
        ("nb2prod-shadow", "predictions-shadow.db"),
    ):
        if system not in only:
            continue
        # wrk counts the answers it read; requests in flight when a run ends may be answered (and
        # logged) after wrk stopped reading, so logged >= counted is the check, drops must be 0.
        import sqlite3

        counted = warmed.get(system, 0) + sum(
            r.requests for (sys_, _c), rs in runs.items() if sys_ == system for r in rs
        )
        conn = sqlite3.connect(str(tmp / db))
        logged = conn.execute("SELECT count(*) FROM predictions WHERE monitor != 'shadow'").fetchone()[0]
        shadow_rows = conn.execute("SELECT count(*) FROM predictions WHERE monitor = 'shadow'").fetchone()[0]
        paired = conn.execute(
            "SELECT count(DISTINCT s.request_id) FROM predictions s JOIN predictions p "
            "ON p.request_id = s.request_id AND p.monitor != 'shadow' WHERE s.monitor = 'shadow'"
        ).fetchone()[0]
        conn.close()
        verdict = (
            "served = logged" if logged >= counted and dropped.get(system) in ("0.0", "0") else "LOST ROWS"
        )
        notes.append(
            f"Served vs logged ({system}, all runs): wrk read {counted} answers, the prediction store "
            f"holds {logged} rows, `nb2prod_monitor_dropped_total` {dropped.get(system, '?')} ({verdict})."
        )
        if system == "nb2prod-shadow":
            whole = shadow_rows + shadow_dropped == logged and paired == shadow_rows
            notes.append(
                f"Shadow: {shadow_rows} shadow rows (version 1) for {logged} answered rows, each with the "
                f"request id of an answered row ({paired}); `nb2prod_shadow_dropped_total` {shadow_dropped:g} "
                f"({'every answered row shadowed or counted' if whole else 'SHADOW ROWS MISSING'})."
            )
    if notes:
        notes.append(
            "Requests in flight when a wrk run stops are answered and logged but not counted by wrk, so logged >= read."
        )
    logged_note = " ".join(notes)
    if logged_note:
        print(logged_note)
    results = []
    for (system, c), rs in runs.items():
        median = sorted(rs, key=lambda r: r.rps)[len(rs) // 2]
        median.spread = ", ".join(f"{r.rps:.0f}" for r in rs)
        bare_rs = runs.get(("bare-bentoml", c))
        if bare_rs and system != "bare-bentoml":
            median.rounds = ", ".join(
                f"{r.rps / b.rps:.2f}x {r.p99_ms:.0f}" for r, b in zip(rs, bare_rs, strict=True)
            )
        elif system == "bare-bentoml":
            median.rounds = ", ".join(f"1.00x {r.p99_ms:.0f}" for r in rs)
        results.append(median)
    order = ["nb2prod", "nb2prod-durable", "nb2prod-shadow", "bare-bentoml", "mlflow-serve"]
    results.sort(key=lambda r: (order.index(r.system), r.connections))
    print()
    print(table(results))
    if args.write:
        command = "python " + " ".join(["bench/bench_serve.py", *sys.argv[1:]])
        write_results(results, machine(), command, args.seconds, args.rounds, logged_note)
        print(f"\nwrote the ## Serving section of {RESULTS}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
