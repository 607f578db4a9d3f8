"""Start-up time of the CLI: `toolbox --help` (target: under 0.3 s) and `toolbox plugins --json`.

Each command runs in a fresh interpreter; prints the median wall time and the median CPU time of the
child process (CPU seconds are the comparable figure on a shared machine).

    python benchmarks/cli_startup.py [--repeat 10]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = [["--help"], ["plugins", "--json"], ["methods", "--json"]]
RUN = "import sys; from toolbox.cli import main; sys.argv[0] = 'toolbox'; main()"


def measure(args, repeat):
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUN, *args], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "TOOLBOX_NO_PROGRESS": "1"})
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    repeat = parser.parse_args().repeat
    print(f"{'command':<28}{'wall s':>9}{'cpu s':>9}   (median of {repeat}, fresh interpreter each)")
    for args in COMMANDS:
        wall, cpu = measure(args, repeat)
        print(f"toolbox {' '.join(args):<20}{wall:9.3f}{cpu:9.3f}")


if __name__ == "__main__":
    main()
