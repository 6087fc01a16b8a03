"""``make bench``: every benchmark in turn (``--quick`` for the smoke-sized versions)."""

from __future__ import annotations

import subprocess
import sys

SUITE = ["benchmarks.synth_speed", "benchmarks.distill_acceptance", "benchmarks.export_acceptance"]


def main() -> None:
    """Run each benchmark module as its own process, passing the arguments on."""
    extra = sys.argv[1:]
    for module in SUITE:
        args = (
            extra
            if module != "benchmarks.synth_speed" or "--quick" not in extra
            else ["--n", "1000"]
        )
        print(f"== {module} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", module, *args], check=True)


if __name__ == "__main__":
    main()
