"""How fast the synthetic generator is: 10,000 images at 128x128 on one core.

python -m benchmarks.synth_speed [--n 10000] [--size 128]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from benchmarks.report import write
from models.synth import SITES, generate


def main() -> None:
    """Time the generator per site at the requested size, one thread."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    generate(SITES["site-a"], 64, size=args.size)  # warm the vessel bank
    rows = [["site", "images", "size", "seconds", "images/s"]]
    per_site = {}
    for name in ("site-a", "site-c", "site-d"):
        t0 = time.perf_counter()
        generate(SITES[name], args.n, size=args.size, seed=1)
        dt = time.perf_counter() - t0
        per_site[name] = dt
        rows.append([name, str(args.n), f"{args.size}", f"{dt:.1f}", f"{args.n / dt:.0f}"])
    write("synth_speed", {"n": args.n, "size": args.size, "seconds": per_site, "threads": 1}, rows)


if __name__ == "__main__":
    main()
