"""Capture benchmark: how long ``%nb2prod model`` (log, fresh-process round trip, register) takes.

Usage: .venv/bin/python bench/bench_capture.py [--rounds 4] [--baseline DIR]

Each round runs one fresh Python process per variant (what a kernel is to the capture): it opens a
session on a new SQLite store in a temp project, tracks the example notebook's train/test frames
(breast cancer, ``notebooks/train.ipynb``), fits its pipeline and captures it twice:

* ``first``: the first ``nb2prod.model`` of the process (its own imports of the MLflow flavor,
  skops and the signature code are paid here),
* ``warm``: a second capture of a re-fitted model in the same process (the issue's "warm" figure).

Before each capture the process gives the background round-trip process time to warm up, as a
user's cells (loading data, fitting) would; the time waited is printed, not counted. The variants
alternate within a round so that load from other processes hits them alike; medians are reported.

Variants: ``cold`` (``NB2PROD_WARM_ROUNDTRIP=0``: every check starts a new interpreter that imports
MLflow and opens the store itself), ``warm`` (the default: the check's process was started at
``start`` and has its imports and store ready; metrics and records are written while it checks).
``--baseline DIR`` adds the package as it was (``git archive HEAD nb2prod | tar -x -C DIR``), first
on ``PYTHONPATH`` (the round trip's process imports that copy too).

Target (issue 15): the warm capture of the example model at most 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    home = Path(sys.argv[1])
    os.environ["NB2PROD_HOME"] = str(home)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / '.nb2prod' / 'mlflow.db'}"
    os.chdir(home)
    import nb2prod
    nb2prod.start("bench-capture")
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    frame = load_breast_cancer(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.25, random_state=42, stratify=frame.target)
    nb2prod.data(train, name="train", role="train", target="target")
    nb2prod.data(test, name="test", role="test", target="target")
    X, y = train.drop(columns="target"), train.target
    try:
        from nb2prod.capture.models import WARM
    except ImportError:  # the baseline has no warm process
        WARM = None

    def think():
        # What the user's next cells give the background process: until it is warm (bounded).
        began = time.perf_counter()
        while WARM is not None and WARM.waiting() and not WARM.ready() and time.perf_counter() - began < 60:
            time.sleep(0.1)
        return time.perf_counter() - began

    out = {}
    for label, C in (("first", 1.0), ("warm", 0.5)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(X, y)
        out[label + "_waited"] = think()
        began = time.perf_counter()
        record = nb2prod.model(clf, name="breast-cancer", variable="clf")
        out[label] = time.perf_counter() - began
        out[label + "_roundtrip"] = record.roundtrip.seconds
    nb2prod.end()
    print(json.dumps(out))
    """
)


def run_child(env: dict[str, str]) -> dict[str, float]:
    from nb2prod.demo import new_project

    with tempfile.TemporaryDirectory(prefix="nb2prod-bench-capture-") as tmp:
        home = new_project(Path(tmp) / "project")
        (home / ".nb2prod").mkdir(exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(home)], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"capture failed:\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--baseline", type=Path, help="folder holding an older nb2prod/ to compare")
    args = parser.parse_args(argv)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("NB2PROD_", "MLFLOW_"))}
    base_env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    variants: dict[str, dict[str, str]] = {
        "cold": dict(base_env, NB2PROD_WARM_ROUNDTRIP="0"),
        "warm": dict(base_env, NB2PROD_WARM_ROUNDTRIP="1"),
    }
    if args.baseline is not None:
        paths = [str(args.baseline.resolve()), *filter(None, [base_env.get("PYTHONPATH")])]
        variants = {"baseline": dict(base_env, PYTHONPATH=os.pathsep.join(paths)), **variants}

    print(machine(("mlflow", "scikit-learn")))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for round_no in range(args.rounds):
        for name, env in variants.items():
            got = run_child(env)
            results[name].append(got)
            print(
                f"round {round_no + 1} {name:<8} first {got['first']:.2f} s (round trip "
                f"{got['first_roundtrip']:.2f}), warm {got['warm']:.2f} s (round trip {got['warm_roundtrip']:.2f}); "
                f"waited {got['first_waited']:.1f} + {got['warm_waited']:.1f} s",
                flush=True,
            )

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print()
    print("| variant | first capture s | warm capture s | warm round trip s | rounds |")
    print("| --- | --- | --- | --- | --- |")
    for name in variants:
        print(
            f"| {name} | {med(name, 'first'):.2f} | {med(name, 'warm'):.2f} | "
            f"{med(name, 'warm_roundtrip'):.2f} | {args.rounds} |"
        )
    reference = "baseline" if "baseline" in variants else "cold"
    for key in ("first", "warm"):
        ratios = [b[key] / w[key] for b, w in zip(results[reference], results["warm"], strict=True)]
        print(f"{key}: {reference}/warm median ratio {statistics.median(ratios):.2f}x")
    ok = med("warm", "warm") <= 3.0
    print(f"target warm capture <= 3 s: {'met' if ok else 'NOT met'} ({med('warm', 'warm'):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
