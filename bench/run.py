"""Run every benchmark in bench/ (bench_*.py) one after another, each printing its own table.

Usage: .venv/bin/python bench/run.py [NAME ...]   e.g. `bench/run.py digest import`
Results worth keeping go to bench/RESULTS.md, with the machine they ran on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
        if not scripts:
            names = ", ".join(s.stem.removeprefix("bench_") for s in sorted(here.glob("bench_*.py")))
            print(f"no benchmark named {' '.join(argv)}; available: {names}", file=sys.stderr)
            return 2
    failed = 0
    for script in scripts:
        print(f"\n== {script.name}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
