"""Import cost: `import nb2prod` and `%load_ext nb2prod`, each in a fresh interpreter.

Run: .venv/bin/python bench/bench_import.py [--repeat N]
Target (issue 3): under 0.3 s each, measured as the in-process time of the statement itself.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CASES = {
    "import nb2prod": (
        "import time; t = time.perf_counter(); import nb2prod; print(time.perf_counter() - t)"
    ),
    "%load_ext nb2prod (IPython already imported)": (
        "from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance()\n"
        "import time; t = time.perf_counter(); ip.run_line_magic('load_ext', 'nb2prod')\n"
        "print(time.perf_counter() - t)"
    ),
    "environment snapshot (first, fresh process)": (
        "from nb2prod.capture.environment import snapshot; import time; t = time.perf_counter()\n"
        "snapshot(imported_modules={'sklearn', 'numpy', 'pandas'}); print(time.perf_counter() - t)"
    ),
    "reference: import pandas": "import time; t = time.perf_counter(); import pandas; print(time.perf_counter() - t)",
    "reference: import mlflow": "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeat):  # interleaved, so machine noise hits every case alike
        for name, code in CASES.items():
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            samples[name].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"{'case':<48} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, values in samples.items():
        print(f"{name:<48} {statistics.median(values):>9.3f} {min(values):>7.3f} {max(values):>7.3f}")


if __name__ == "__main__":
    main()
