"""The JupyterLab panel's first paint for a notebook with 200 runs and 50 model versions (target < 1 s).

One command::

    .venv/bin/python bench/bench_panel.py [--rounds 7] [--write]

A temp project on a real SQLite MLflow store gets two notebooks: ``big.ipynb`` with 200
finished runs (parameters, metrics, data digests, a tracked dataset) and model ``big`` with
50 registered versions, each from one of its runs, with 20 alias moves in the history;
``small.ipynb`` with 1 run and model ``small`` with 1 version. Runs and versions are written
through MLflow's own client (as nb2prod's capture tags them), not through notebooks.

``jupyter lab`` (127.0.0.1, token, the built panel) serves both. Measured, in interleaved
rounds (the order alternates each round), medians over rounds:

* the REST payload ``GET /nb2prod/api/notebook?path=...`` from Python (urllib), and the
  server's own time for it (``seconds`` in the payload);
* in Debian's chromium (playwright-core, tests/browser/lab.mjs ``paint``): the panel's first
  paint, from its request to the rendered runs and versions (``data-paint-ms``).

``--write`` replaces the ``## JupyterLab panel`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from _machine import machine  # noqa: E402

from tests.jupyter.servers import LABEXTENSION, jupyter, lab_extensions_dir  # noqa: E402

SECTION = "## JupyterLab panel"
N_RUNS, N_VERSIONS, N_MOVES = 200, 50, 20


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("alpha = 0.5\nlayers = 3")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("%load_ext nb2prod\n%nb2prod start")]
    nbformat.write(nb, str(path))


def _populate(home: Path, uri: str, name: str, runs: int, versions: int, moves: int) -> None:
    """``runs`` finished runs of ``home/name.ipynb`` and ``versions`` versions of model ``name``."""
    import json as _json

    import mlflow
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    from nb2prod.tracking import names
    from nb2prod.tracking.registry import HISTORY_TAG

    client = mlflow.MlflowClient(uri, uri)
    notebook = home / f"{name}.ipynb"
    _notebook(notebook)
    experiment = client.create_experiment(name, artifact_location=str(home / ".nb2prod" / "artifacts"))
    now = int(time.time() * 1000)
    run_ids = []
    for i in range(runs):
        run = client.create_run(
            experiment,
            start_time=now - (runs - i) * 60_000,
            tags={
                names.TAG_NOTEBOOK: str(notebook),
                names.TAG_KIND: "capture",
                names.TAG_ENV_DIGEST: f"env{i // 50}",
                names.TAG_NOTEBOOK_DIGEST: f"code{i // 10}",
            },
        )
        rid = run.info.run_id
        client.log_batch(
            rid,
            metrics=[
                Metric(k, v, now, 0) for k, v in (("test_accuracy", 0.9 + i / 10_000), ("test_f1", 0.88))
            ],
            params=[Param("alpha", str(i / 100)), Param("layers", "3")],
            tags=[RunTag(names.data_digest_tag("train"), f"xxh3_128:{i // 20:032x}")],
        )
        if i == runs - 1:
            ds = Dataset(
                name="train",
                digest=f"{i:032x}",
                source_type="code",
                source="{}",
                schema=_json.dumps(
                    {"mlflow_colspec": [{"name": f"f{j}", "type": "double"} for j in range(30)]}
                ),
                profile=_json.dumps({"num_rows": 426, "num_elements": 426 * 30}),
            )
            client.log_inputs(
                rid, datasets=[DatasetInput(ds, tags=[InputTag("mlflow.data.context", "train")])]
            )
        client.set_terminated(rid, end_time=now - (runs - i) * 60_000 + 20_000)
        run_ids.append(rid)
    client.create_registered_model(name)
    for v in range(versions):
        rid = run_ids[-(versions - v)]
        client.create_model_version(
            name,
            str(home / ".nb2prod" / "artifacts" / f"{name}-model-{v}"),
            run_id=rid,
            tags={names.TAG_NOTEBOOK: str(notebook)},
        )
    for m in range(moves):
        event = {
            "seq": m + 1,
            "alias": "champion",
            "from_version": str(m) if m else None,
            "to_version": str(m + 1),
            "at": f"2026-11-29T10:{m:02d}:00+00:00",
            "reason": "promote",
            "actor": "bench@host",
            "details": {},
        }
        client.set_registered_model_tag(name, f"{HISTORY_TAG}.{m + 1:06d}.bench{m:03d}", _json.dumps(event))
    client.set_registered_model_alias(name, "champion", str(max(1, min(moves, versions))))


def _node() -> str:
    node = shutil.which("node")
    if node is None or not Path("/usr/bin/chromium").is_file():
        raise SystemExit("bench_panel needs node and /usr/bin/chromium (apt-get install chromium)")
    browser_dir = REPO / "tests" / "browser"
    if not (browser_dir / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=browser_dir, check=True)
    return node


def _write(section: str) -> None:
    path = HERE / "RESULTS.md"
    text = path.read_text(encoding="utf-8")
    start = text.find(SECTION)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    path.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if not (LABEXTENSION / "package.json").is_file():
        raise SystemExit("the panel is not built: make setup (builds nb2prod/jupyter/labextension)")
    node = _node()
    print(machine(("mlflow", "jupyterlab", "jupyter_server")), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-panel-") as tmp:
        root = Path(tmp)
        home = root / "project"
        (home / ".nb2prod").mkdir(parents=True)
        (home / "pyproject.toml").write_text("[tool.nb2prod]\n")
        uri = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
        started = time.perf_counter()
        _populate(home, uri, "big", N_RUNS, N_VERSIONS, N_MOVES)
        _populate(home, uri, "small", 1, 1, 0)
        print(f"project written in {time.perf_counter() - started:.1f} s", flush=True)
        import os

        env = dict(
            os.environ, NB2PROD_HOME=str(home), MLFLOW_TRACKING_URI=uri, JUPYTER_DATA_DIR=str(root / "data")
        )
        env.pop("BENTOML_HOME", None)
        extra = (
            f"--LabApp.extra_labextensions_path={lab_extensions_dir(root)}",
            f"--LabApp.user_settings_dir={root / 'settings'}",
            f"--LabApp.workspaces_dir={root / 'workspaces'}",
            "--LabApp.news_url=None",
        )
        with jupyter("lab", home, env, root / "lab.log", extra=extra) as lab:
            rest: dict[str, list[float]] = {"small": [], "big": []}
            server: dict[str, list[float]] = {"small": [], "big": []}
            sizes: dict[str, tuple[int, int]] = {}
            lab.get("/nb2prod/api/notebook?path=small.ipynb")  # warm: MLflow imported, store opened
            for r in range(args.rounds):
                for name in ("small", "big") if r % 2 == 0 else ("big", "small"):
                    t0 = time.perf_counter()
                    status, view = lab.get(f"/nb2prod/api/notebook?path={name}.ipynb")
                    rest[name].append((time.perf_counter() - t0) * 1000)
                    assert status == 200, view
                    server[name].append(view["seconds"] * 1000)
                    sizes[name] = (len(view["runs"]), sum(len(m["versions"]) for m in view["models"]))
            config = {
                "url": lab.url,
                "token": lab.token,
                "out": str(root),
                "chromium": "/usr/bin/chromium",
                "scenarios": ["paint"],
                "rounds": args.rounds,
                "notebooks": {"small": "small.ipynb", "big": "big.ipynb"},
            }
            (root / "paint.json").write_text(json.dumps(config))
            done = subprocess.run(
                [node, str(REPO / "tests" / "browser" / "lab.mjs"), str(root / "paint.json")],
                capture_output=True,
                text=True,
                check=False,
                cwd=REPO / "tests" / "browser",
            )
            seen: dict[str, Any] = json.loads([x for x in done.stdout.splitlines() if x.startswith("{")][-1])
            if done.returncode != 0:
                raise SystemExit(f"browser run failed at {seen.get('failed_step')}: {seen.get('error')}")
    paint = {k: [p["paint_ms"] for p in v] for k, v in seen["paint"].items()}
    shown = {k: (v[-1]["rows"], v[-1]["versions"]) for k, v in seen["paint"].items()}

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    lines = [
        f"| measure (median of {args.rounds} interleaved rounds) | small: 1 run, 1 version | "
        f"big: {N_RUNS} runs, {N_VERSIONS} versions | big / small |",
        "| --- | --- | --- | --- |",
    ]
    for label, data in (
        ("REST payload, client ms", rest),
        ("REST payload, server ms", server),
        ("panel first paint in chromium, ms (request to rendered)", paint),
    ):
        s, b = med(data["small"]), med(data["big"])
        lines.append(f"| {label} | {s:.0f} | {b:.0f} | {b / s:.2f}x |")
    table = "\n".join(lines)
    print(table)
    print(f"rows shown: {shown}; payload sizes (runs, versions): {sizes}")
    verdict = "under" if med(paint["big"]) < 1000 else "OVER"
    section = (
        f"{SECTION}\n\n"
        "First paint of the nb2prod side panel (issue 14; target < 1 s for 200 runs and 50 model\n"
        "versions). `.venv/bin/python bench/bench_panel.py --rounds "
        f"{args.rounds} --write`\n\n"
        f"Machine: {machine(('mlflow', 'jupyterlab', 'jupyter_server'))}\n\n"
        f"{table}\n\n"
        f"The big notebook's first paint is {verdict} 1 s; it drew {shown['big'][0]} runs and "
        f"{shown['big'][1]} versions\n(the panel draws the newest 30 runs first, the rest behind a "
        "button). The payload takes four\n"
        "store queries whatever the size (experiments, the notebook's runs, registered models, model\n"
        "versions): no query per run or version. First paint is timed by the panel itself, from its\n"
        "request to the rendered DOM, while JupyterLab is still opening the notebook.\n"
    )
    if args.write:
        _write(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
