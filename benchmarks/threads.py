"""Why ``make test`` pins one compute thread per test process: the same small torch loop (the shape of the
tiny models' decoding steps) run as two concurrent processes, each with 1 and then with 2 intra-op threads.

Two test workers that each start two OpenMP threads put four busy threads on a 2-core machine; OpenMP's
spin-waiting then costs far more than the second thread gains, worst when other work loads the machine too.
The ratio is what matters: run it on the machine you care about (``--copies`` = your test workers).

    python benchmarks/threads.py --out threads.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

LOOP = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
a, w = torch.randn(16, 256), torch.randn(256, 256) / 16
t = time.perf_counter()
for _ in range(int(sys.argv[2])):
    a = torch.tanh(a @ w)
print(time.perf_counter() - t)
"""


def run(threads: int, copies: int, iters: int) -> list[float]:
    """Wall seconds of each of ``copies`` concurrent processes running the loop with ``threads`` threads."""
    procs = [subprocess.Popen([sys.executable, "-c", LOOP, str(threads), str(iters)], stdout=subprocess.PIPE,
                              text=True) for _ in range(copies)]
    return [float(p.communicate()[0]) for p in procs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=2, help="concurrent processes (the test workers)")
    ap.add_argument("--iters", type=int, default=20000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import os

    started = time.time()
    one, two = run(1, a.copies, a.iters), run(2, a.copies, a.iters)
    doc = {"copies": a.copies, "iters": a.iters, "cpu_count": os.cpu_count(),
           "seconds_1_thread": one, "seconds_2_threads": two,
           "slowdown_2_vs_1": max(two) / max(one), "wall_s": time.time() - started}
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{a.copies} processes at once: 1 thread {max(one):.2f} s, 2 threads {max(two):.2f} s "
          f"({doc['slowdown_2_vs_1']:.1f}x slower)")


if __name__ == "__main__":
    main()
