"""``make bench``: every benchmark in turn, with the settings the closing notes quote.

``python -m benchmarks.run --quick`` runs the smoke-sized versions instead.
"""

from __future__ import annotations

import subprocess
import sys

SUITE: list[tuple[str, list[str], list[str]]] = [
    # (module, full-size arguments, quick arguments)
    ("benchmarks.synth_speed", [], ["--n", "1000"]),
    (
        "benchmarks.distill_acceptance",
        # about 7 min on one H200 with --jobs 7; hours on 2 CPU cores
        [
            "--per-site",
            "6000",
            "--epochs",
            "20",
            "--student",
            "resnet-student-wide",
            "--alpha",
            "0.5",
            "--temperature",
            "4.0",
            "--jobs",
            "7",
        ],
        ["--quick"],
    ),
    ("benchmarks.export_acceptance", ["--run", ".fovea/demo/student"], ["--quick"]),
    ("benchmarks.agent_load", ["--workdir", ".fovea/demo"], ["--quick"]),
]


def main() -> None:
    """Run each benchmark module as its own process."""
    quick = "--quick" in sys.argv[1:]
    for module, full, small in SUITE:
        args = small if quick else full
        print(f"== {module} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", module, *args], check=True)


if __name__ == "__main__":
    main()
