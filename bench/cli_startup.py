"""How fast `agentrun` answers when it has nothing to connect to: `agentrun --help` and an
argument error (`agentrun run` without a prompt). Both should be well under half a second; the
commands import their heavy modules (temporalio, sqlalchemy, openai, rich) only when they run.

    python bench/cli_startup.py [-n 15]

A benchmark, not a test: it prints the median (and the spread) of N runs of each, as wall time
of a fresh process, which is what a person at a terminal waits for.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "agentrun --help": (["--help"], 0),
    "agentrun run (argument error)": (["run"], 2),
}


def command() -> list[str]:
    """The installed console script, or the same entry point through this interpreter."""
    script = shutil.which("agentrun")
    return [script] if script else [sys.executable, "-c", "from starter.cli import main; main()"]


def time_one(argv: list[str], expected: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}, not {expected}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="runs of each command (default 15)")
    args = parser.parse_args()
    base = command()
    print(f"{'command':<32} {'median':>8} {'min':>8} {'max':>8}   ({args.n} runs, {base[0]})")
    for name, (extra, expected) in CASES.items():
        times = [time_one([*base, *extra], expected) for _ in range(args.n)]
        print(
            f"{name:<32} {statistics.median(times) * 1000:>6.0f}ms {min(times) * 1000:>6.0f}ms "
            f"{max(times) * 1000:>6.0f}ms"
        )


if __name__ == "__main__":
    main()
