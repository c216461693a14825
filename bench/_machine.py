"""The machine line every benchmark prints: CPU, cores, OS, Python, package versions, load."""

from __future__ import annotations

import os
import platform
from importlib.metadata import version
from pathlib import Path


def machine(packages: tuple[str, ...]) -> str:
    """One line naming the CPU, cores, Python, the versions of ``packages`` and the load average."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pkgs = ", ".join(f"{p} {version(p)}" for p in packages)
    load = f", load average {os.getloadavg()[0]:.2f} at start" if hasattr(os, "getloadavg") else ""
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {pkgs}{load}"
    )
