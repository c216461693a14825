"""Re-execution benchmark: `nb2prod run` vs plain `papermill`, and a sweep on 2 workers vs sequential.

Usage: .venv/bin/python bench/bench_run.py [--repeat 5] [--sweep-runs 8] [--skip-sweep | --skip-run]
       [--baseline DIR]

Whole-process wall time of each command (what a user waits for), in a fresh temp project on
its own SQLite store. The commands alternate so that load from other processes hits all of them
alike; the median of the repeats is reported. ``--baseline DIR`` adds, side by side, the same
``nb2prod`` command run with an older copy of the package (``DIR/nb2prod``, e.g. from
``git archive OLD nb2prod | tar -x -C DIR``) first on ``PYTHONPATH``; the kernel imports that copy too.

Targets (issue "Reproducible re-execution with papermill"): median ratio run/papermill <= 1.15;
sweep of 8 runs on 2 workers at least 1.7x faster than the same 8 runs sequentially. Beside the
sweep it prints what two processes can get from the machine at that moment (two CPU loops, and
two papermill runs of the same notebook, at once against one alone): on a shared VM that bounds
the sweep's speed-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

PLAIN = [
    ("C = 1.0\nseed = 0", ["parameters"]),
    "from sklearn.datasets import load_breast_cancer\n"
    "from sklearn.linear_model import LogisticRegression\n"
    "from sklearn.model_selection import train_test_split\n"
    "X, y = load_breast_cancer(return_X_y=True)\n"
    "X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=seed)",
    "clf = LogisticRegression(C=C, max_iter=5000).fit(X_train, y_train)\nscore = clf.score(X_test, y_test)\nscore",
]
CAPTURED = [
    PLAIN[0],
    "%load_ext nb2prod\n%nb2prod start bench",
    *PLAIN[1:],
    "import mlflow\nmlflow.log_metric('test_accuracy', score)",
]


def write_notebook(path: Path, cells: list[object]) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, item in enumerate(cells):
        source, tags = item if isinstance(item, tuple) else (item, [])
        cell = nbformat.v4.new_code_cell(source)
        cell["id"] = f"cell-{i}"
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, str(path))
    return path


CPU: dict[str, float] = {}  # command label -> CPU seconds of the last call (process + kernels)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict[str, str], cwd: Path, label: str = "") -> float:
    cpu = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    CPU[label] = _children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return seconds


def project() -> tuple[Path, dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="nb2prod-bench-"))
    (home / "pyproject.toml").write_text('[tool.nb2prod]\nexperiment = "bench"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB2PROD_", "MLFLOW_"))}
    env["NB2PROD_HOME"] = str(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    return home, env


# papermill loads every ``papermill.engine`` entry point when it is imported, and the installed
# nb2prod names ``nb2prod.execute.engine``. A copy from before the engine became an entry point
# (``nb2prod/execute.py``, registering its engine itself) has no such module, so its papermill
# import would fail: a ``sitecustomize`` first on its path stands in for the module (the copy's
# own engine then replaces the stand-in when the copy registers it).
_OLD_ENGINE_SHIM = """import sys, types
_stub = types.ModuleType("nb2prod.execute.engine")
_stub.Nb2ProdEngine = None
sys.modules.setdefault("nb2prod.execute.engine", _stub)
"""


def with_baseline(env: dict[str, str], baseline: Path) -> dict[str, str]:
    old = dict(env)
    paths = [str(baseline), *filter(None, [env.get("PYTHONPATH")])]
    if (baseline / "nb2prod" / "execute.py").is_file():
        shim = Path(tempfile.mkdtemp(prefix="nb2prod-bench-shim-"))
        (shim / "sitecustomize.py").write_text(_OLD_ENGINE_SHIM, encoding="utf-8")
        paths.insert(0, str(shim))
    old["PYTHONPATH"] = os.pathsep.join(paths)
    return old


Row = tuple[str, float, float, float, float, float, float | None, float | None]


def bench_run(cells: list[object], label: str, repeat: int, baseline: Path | None) -> Row:
    home, env = project()
    nb = write_notebook(home / "bench.ipynb", cells)
    run_cmd = [str(BIN / "nb2prod"), "run", str(nb), "-p", "C", "0.5", "--no-progress"]
    pm_cmd = [str(BIN / "papermill"), str(nb), str(home / "out.ipynb"), "-p", "C", "0.5", "--no-progress-bar"]
    old_env = with_baseline(env, baseline) if baseline else None
    timed(run_cmd, env, home)  # warm-up: store migrations, page cache
    timed(pm_cmd, env, home)
    if old_env is not None:
        timed(run_cmd, old_env, home)
    ours, theirs, ours_cpu, theirs_cpu, before, before_cpu = [], [], [], [], [], []
    for _ in range(repeat):
        ours.append(timed(run_cmd, env, home, "run"))
        ours_cpu.append(CPU["run"])
        theirs.append(timed(pm_cmd, env, home, "papermill"))
        theirs_cpu.append(CPU["papermill"])
        if old_env is not None:
            before.append(timed(run_cmd, old_env, home, "baseline"))
            before_cpu.append(CPU["baseline"])
    shutil.rmtree(home, ignore_errors=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    c = statistics.median(before) if before else None
    c_cpu = statistics.median(before_cpu) if before_cpu else None
    return label, a, b, a / b, statistics.median(ours_cpu), statistics.median(theirs_cpu), c, c_cpu


def workload_ceiling(repeat: int = 3) -> float:
    """The same for the sweep's own work without nb2prod: one `papermill` of the sweep's notebook
    alone against two at once (what two grid points side by side can get here)."""
    home, env = project()
    nb = write_notebook(home / "bench.ipynb", CAPTURED)

    def cmd(i: int) -> list[str]:
        return [
            str(BIN / "papermill"),
            str(nb),
            str(home / f"out{i}.ipynb"),
            "-p",
            "C",
            "0.5",
            "--no-progress-bar",
        ]

    timed(cmd(0), env, home)  # warm-up: the store's first use
    ratios = []
    for _ in range(repeat):
        alone = timed(cmd(0), env, home)
        started = time.perf_counter()
        procs = [
            subprocess.Popen(cmd(i), env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in (1, 2)
        ]
        if any(proc.wait() != 0 for proc in procs):
            raise SystemExit("papermill failed in the workload ceiling")
        ratios.append(2 * alone / (time.perf_counter() - started))
    shutil.rmtree(home, ignore_errors=True)
    return statistics.median(ratios)


def bench_sweep(runs: int, baseline: Path | None = None) -> tuple[float, float, float, float]:
    home, env = project()
    if baseline is not None:
        env = with_baseline(env, baseline)
    nb = write_notebook(home / "bench.ipynb", CAPTURED)
    values = ",".join(str(0.1 * (i + 1))[:4] for i in range(runs))
    base = [str(BIN / "nb2prod"), "sweep", str(nb), "-p", "C", values]
    timed([str(BIN / "nb2prod"), "run", str(nb), "--no-progress"], env, home)  # warm-up
    sequential = timed([*base, "--jobs", "1"], env, home, "seq")
    parallel = timed([*base, "--jobs", "2"], env, home, "par")
    shutil.rmtree(home, ignore_errors=True)
    return sequential, parallel, CPU["seq"], CPU["par"]


_LOOP = "n = 0\nfor i in range(25_000_000):\n    n += i"


def ceiling(repeat: int = 3) -> float:
    """What two processes get from this machine: the throughput of two pure-Python CPU loops run
    at once over one run alone (2.0 on two free cores). A sweep on 2 workers cannot beat it."""
    ratios = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", _LOOP], check=True)
        alone = time.perf_counter() - started
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _LOOP]) for _ in range(2)]
        for proc in procs:
            proc.wait()
        both = time.perf_counter() - started
        ratios.append(2 * alone / both)
    return statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sweep-runs", type=int, default=8)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-run", action="store_true", help="only the sweep")
    parser.add_argument(
        "--baseline", type=Path, help="folder holding an older nb2prod package, run side by side"
    )
    args = parser.parse_args()
    baseline = args.baseline.resolve() if args.baseline else None

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    rows = (
        []
        if args.skip_run
        else [
            bench_run(PLAIN, "plain notebook (3 cells, no nb2prod inside)", args.repeat, baseline),
            bench_run(CAPTURED, "notebook with %nb2prod start + mlflow metric", args.repeat, baseline),
        ]
    )
    print(f"load average {os.getloadavg()[0]:.2f} after the run/papermill pairs")
    print()
    head = "| notebook | nb2prod run (s) | papermill (s) | ratio | target | CPU s run / papermill |"
    rule = "| --- | --- | --- | --- | --- | --- |"
    if baseline:
        head += " baseline run (s) | baseline ratio | baseline CPU s |"
        rule += " --- | --- | --- |"
    print(head)
    print(rule)
    for label, a, b, ratio, cpu_a, cpu_b, c, cpu_c in rows:
        verdict = "ok" if ratio <= 1.15 else "MISSED"
        line = (
            f"| {label} | {a:.2f} | {b:.2f} | {ratio:.2f} | <= 1.15 {verdict} | {cpu_a:.1f} / {cpu_b:.1f} |"
        )
        if c is not None and cpu_c is not None:
            line += f" {c:.2f} | {c / b:.2f} | {cpu_c:.1f} |"
        print(line)
    if not args.skip_sweep:
        limit, work = ceiling(), workload_ceiling()
        sweeps = [("this tree", bench_sweep(args.sweep_runs))]
        if baseline:
            sweeps.append(("baseline", bench_sweep(args.sweep_runs, baseline)))
        limit, work = (limit + ceiling()) / 2, (work + workload_ceiling()) / 2
        print()
        print(
            f"machine ceiling: two CPU-bound loops at once get {limit:.2f}x the throughput of one; two "
            f"papermill runs of the sweep's notebook at once {work:.2f}x (means of the medians before "
            "and after the sweeps; 2.00 on two free cores)"
        )
        print()
        print(
            "| sweep | code | sequential --jobs 1 (s) | --jobs 2 (s) | speed-up | target | cores busy seq / par |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for code, (seq, par, cpu_seq, cpu_par) in sweeps:
            speedup = seq / par
            print(
                f"| {args.sweep_runs} runs | {code} | {seq:.1f} | {par:.1f} | {speedup:.2f}x | >= 1.7x "
                f"{'ok' if speedup >= 1.7 else 'MISSED'} | {cpu_seq / seq:.2f} / {cpu_par / par:.2f} |"
            )
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
