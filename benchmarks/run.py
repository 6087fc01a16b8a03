"""``make bench``: every benchmark in turn, then one merged ``latest.json`` and ``latest.md``.

``python -m benchmarks.run --quick`` runs the smoke-sized versions instead; ``--only NAME ...``
runs some of them and keeps the other results of the last suite run in ``latest.json``;
``--reuse NAME ...`` takes those benchmarks' last result files (``results/NAME.json``, perhaps
written on another machine, such as the GPU run of ``distill_acceptance``) instead of running
them, and the table names the machine and date each came from.
Benchmark modules named ``benchmarks/compress_*.py`` or ``benchmarks/federation_*.py`` join the
suite by themselves (full size without flags, smoke size with ``--quick``). Modules that need timm
(``TIMM_MODULES``) run with the timm venv's Python (``$FOVEA_TIMM_PYTHON``, else
``.venv-timm/bin/python`` of this checkout) and are reported skipped when there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.headline import markdown_table
from benchmarks.report import RESULTS, machine

LATEST = "latest"
ROOT = Path(__file__).resolve().parent.parent
TIMM_MODULES = frozenset({"benchmarks.clinical_models"})
"""Benchmarks that import timm: it imports only beside PyPI's torch build, in ``.venv-timm``."""
TIMM_HINT = "run with .venv-timm/bin/python; make test-timm builds it"

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
    ("benchmarks.screen_camera", ["--workdir", ".fovea/demo"], ["--quick"]),
    ("benchmarks.agent_abuse", ["--workdir", ".fovea/demo"], ["--quick"]),
    ("benchmarks.worker_overhead", ["--workdir", ".fovea/demo"], ["--quick"]),
    ("benchmarks.deploy_acceptance", ["--soak", "5"], ["--quick"]),
    ("benchmarks.federation_acceptance", [], ["--quick"]),
    # 5,000 camera JPEGs at 384 px: ~20 min on 2 cores (+ ~12 min rendering them once)
    ("benchmarks.data_scale", [], ["--quick"]),
    ("benchmarks.gpu", ["--workdir", ".fovea/demo"], ["--quick"]),
    # ResNet-50 at 448 px vs MobileNetV3-Large at 384 px (timm venv); about 10 min on 2 cores
    ("benchmarks.clinical_models", [], ["--quick"]),
    # on distill_acceptance's data and teacher (64 px); about 45 min on 2 CPU cores
    (
        "benchmarks.compress_heads",
        [
            "--data",
            ".fovea/bench/distill/data",
            "--teacher-checkpoint",
            ".fovea/bench/distill/teacher/teacher.json",
            "--patch",
            "8",
        ],
        ["--quick"],
    ),
]


def suite() -> list[tuple[str, list[str], list[str]]]:
    """The fixed suite plus any ``compress_*`` / ``federation_*`` benchmark modules present."""
    known = {module for module, _, _ in SUITE}
    here = Path(__file__).parent
    found = sorted(
        f"benchmarks.{p.stem}" for pattern in ("compress_*.py", "federation_*.py")
        for p in here.glob(pattern)
    )  # fmt: skip
    return SUITE + [(m, [], ["--quick"]) for m in found if m not in known]


def _snapshot(results: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in results.glob("*.json") if p.stem != LATEST}


def python_for(module: str) -> str | None:
    """The Python that runs ``module``: this one, or for a timm benchmark the timm venv's
    (None when it does not exist)."""
    if module not in TIMM_MODULES:
        return sys.executable
    for candidate in (os.environ.get("FOVEA_TIMM_PYTHON"), ROOT / ".venv-timm/bin/python"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


def skipped_result(module: str, *, quick: bool) -> dict[str, Any]:
    """(name -> result) saying ``module`` was skipped because the timm venv is missing."""
    name = module.removeprefix("benchmarks.") + ("_quick" if quick else "")
    why = f"skipped: no timm venv (.venv-timm/bin/python or $FOVEA_TIMM_PYTHON); {TIMM_HINT}"
    print(f"== {module}: {why}", flush=True)
    return {name: {"benchmark": name, "machine": machine(), "skipped": why}}


def run_one(
    module: str, args: list[str], results: Path, python: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """Run one benchmark as its own process; (name -> result written, error or None)."""
    before = _snapshot(results) if results.is_dir() else {}
    print(f"== {module} {' '.join(args)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run([python or sys.executable, "-m", module, *args], check=False)
    written = {}
    for path, mtime in (_snapshot(results) if results.is_dir() else {}).items():
        if before.get(path) != mtime:
            written[path.stem] = json.loads(path.read_text())
    error = None if done.returncode == 0 else f"exit status {done.returncode}"
    if error is None and not written:
        error = "wrote no result file"
    print(f"== {module}: {time.perf_counter() - start:.0f} s, {error or 'ok'}", flush=True)
    return written, error


def reuse_one(name: str, results: Path, *, quick: bool) -> tuple[dict[str, Any], str | None]:
    """An earlier run's result of ``name`` (name -> result), or an error when there is none."""
    stem = f"{name}_quick" if quick else name
    path = results / f"{stem}.json"
    if not path.is_file():
        return {}, f"--reuse: no earlier result at {path}; run it first"
    result = json.loads(path.read_text())
    when = (result.get("machine") or {}).get("date", "an unknown date")
    print(f"== {name}: reused {path} (run {when})", flush=True)
    return {stem: result}, None


def merge(
    previous: dict[str, Any] | None,
    written: dict[str, dict[str, Any]],
    failed: dict[str, str],
    *,
    quick: bool,
    keep_previous: bool,
) -> dict[str, Any]:
    """The merged suite result: this run's results (over the previous run's, when kept)."""
    benchmarks = dict(previous.get("benchmarks", {})) if previous and keep_previous else {}
    benchmarks.update(written)
    return {
        "schema_version": 1,
        "machine": machine(),
        "quick": quick,
        "benchmarks": benchmarks,
        "failed": failed,
    }


def write_latest(latest: dict[str, Any], results: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and the headline table ``latest.md``, with the full tables below."""
    results.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results / f"{LATEST}.json", results / f"{LATEST}.md"
    json_path.write_text(json.dumps(latest, indent=2))
    md = ["# Benchmark results", "", markdown_table(latest)]
    for name in latest["benchmarks"]:
        table = results / f"{name}.md"
        if table.is_file():
            md += [f"## {name}", "", table.read_text()]
    md_path.write_text("\n".join(md))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or ``--only`` some of it) and write the merged results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-sized runs (CI)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="e.g. gpu export_acceptance")
    ap.add_argument(
        "--reuse",
        nargs="+",
        metavar="NAME",
        default=[],
        help="take results/NAME.json from an earlier run instead of running NAME",
    )
    args = ap.parse_args(argv)
    chosen = suite()
    names = {m.removeprefix("benchmarks.") for m, _, _ in chosen}
    for option in ("only", "reuse"):
        unknown = {n.removeprefix("benchmarks.") for n in getattr(args, option) or []} - names
        if unknown:
            ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; see benchmarks/run.py")
    if args.only:
        wanted = {n.removeprefix("benchmarks.") for n in args.only}
        chosen = [s for s in chosen if s[0].removeprefix("benchmarks.") in wanted]
    written: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    reuse = {n.removeprefix("benchmarks.") for n in args.reuse}
    chosen = [s for s in chosen if s[0].removeprefix("benchmarks.") not in reuse]
    reused: set[str] = set()
    for name in sorted(reuse):
        found, error = reuse_one(name, RESULTS, quick=args.quick)
        written.update(found)
        reused.update(found)
        if error:
            failed[name] = error
    for module, full, small in chosen:
        python = python_for(module)
        if python is None:
            written.update(skipped_result(module, quick=args.quick))
            continue
        found, error = run_one(module, small if args.quick else full, RESULTS, python)
        written.update(found)
        if error:
            failed[module.removeprefix("benchmarks.")] = error
    previous_path = RESULTS / f"{LATEST}.json"
    previous = json.loads(previous_path.read_text()) if previous_path.is_file() else None
    latest = merge(previous, written, failed, quick=args.quick, keep_previous=bool(args.only))
    kept = set(previous.get("reused", [])) if previous and args.only else set()
    latest["reused"] = sorted((kept - set(written)) | reused)
    json_path, md_path = write_latest(latest, RESULTS)
    print("\n" + markdown_table(latest))
    print(f"wrote {json_path} and {md_path}")
    if failed:
        print(f"failed: {', '.join(f'{k} ({v})' for k, v in failed.items())}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
