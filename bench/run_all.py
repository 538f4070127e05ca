"""Run every benchmark (`make bench`): each bench_*.py prints ratios against a reference measured in the same run.

Benchmarks are never part of `make test`; figures and commands go to docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    scripts = sorted(here.glob("bench_*.py"))
    if not scripts:
        print("aucun benchmark")
        return 0
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
