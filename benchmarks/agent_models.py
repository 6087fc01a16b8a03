"""The models agent_load measures, and their export directories (built once, cached).

The demo's own exports where ``--workdir`` has them; otherwise untrained nets exported into
``.fovea/bench/agent_load`` (throughput does not depend on weights). timm's nets import only
beside PyPI's torch build, so the clinical-size student is exported by the timm venv's
interpreter in a subprocess (``FOVEA_TIMM_PYTHON`` names another one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(".fovea/bench/agent_load")


def _run_dir_config(run_dir: Path, arch: str, data: Path) -> None:
    from server.distill import dump_config, parse_config

    cfg = parse_config(
        {
            "teacher": None,
            "student": {"name": arch},
            "data": {"dir": str(data.resolve())},
            "out": str(run_dir.resolve()),
            "monitor": {"enabled": False},
        }
    )
    (run_dir / "config.yaml").write_text(dump_config(cfg))


def _data(workdir: Path, quick: bool, size: int = 64) -> Path:
    """Images for export (calibration, golden and validation samples) at ``size`` px."""
    from models.synth import SITES
    from server.training import dataset_matches, synthesise

    if size == 64 and (workdir / "data" / "dataset.json").is_file():
        return workdir / "data"
    out = CACHE / ("data" if size == 64 else f"data-{size}")
    n = 60 if quick or size > 64 else 400
    if not dataset_matches(out, sites=list(SITES), per_site=n, size=size, seed=0):
        synthesise(out, sites=list(SITES), per_site=n, size=size, seed=0)
    return out


@dataclass(frozen=True)
class BenchModel:
    """One model the benchmark loads: its architecture, input size and ratio target."""

    arch: str
    size: int
    target: float
    python: str | None = None
    """The interpreter that builds it (timm needs the timm venv), None: this one."""


# the checkout's timm venv (``make test-timm`` builds it), as ``make bench`` finds it
TIMM_PYTHON = Path(
    os.environ.get("FOVEA_TIMM_PYTHON") or Path(__file__).parents[1] / ".venv-timm/bin/python"
)
MODELS = {
    "student": BenchModel("resnet-student", 64, 0.60),
    "teacher": BenchModel("resnet-teacher", 64, 0.85),
    "clinical-student": BenchModel("timm:mobilenetv3_large_100", 384, 0.90, str(TIMM_PYTHON)),
}
TARGETS = {name: m.target for name, m in MODELS.items()}


def build_untrained(arch: str, size: int, run_dir: Path, data: Path, quick: bool) -> None:
    """Export an untrained ``arch`` net at ``size`` px into ``run_dir/export`` (fp32 only
    when ``quick`` or when ``size`` > 64: speed does not depend on weights or precision
    search, and calibrating INT8 at clinical size takes long on two cores)."""
    import torch

    from models import PreprocessSpec
    from models.nets import build_model, save_checkpoint
    from server.export import ExportConfig, export

    torch.manual_seed(0)
    run_dir.mkdir(parents=True, exist_ok=True)
    net = build_model(arch)
    save_checkpoint(net, run_dir / "student", name=arch, preprocess=PreprocessSpec(size=size))
    _run_dir_config(run_dir, arch, data)
    config = ExportConfig(precisions=["fp32"]) if quick or size > 64 else ExportConfig()
    export(run_dir, run_dir / "export", config, log=lambda s: None)


def _build_elsewhere(python: str, arch: str, size: int, run_dir: Path, data: Path) -> None:
    """:func:`build_untrained` in another interpreter (timm imports only in its own venv)."""
    if not Path(python).is_file():
        raise RuntimeError(f"{arch} needs the timm venv's interpreter {python} (FOVEA_TIMM_PYTHON)")
    call = f"build_untrained({arch!r}, {size}, Path({str(run_dir)!r}), Path({str(data)!r}), False)"
    code = f"from pathlib import Path; from benchmarks.agent_models import build_untrained; {call}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"exporting {arch} with {python} failed:\n{done.stderr[-3000:]}")


def export_dir(model: str, workdir: Path, quick: bool) -> tuple[Path, str]:
    """An export directory for ``model`` (a key of MODELS) and where it came from."""
    spec = MODELS[model]
    if model == "student" and (workdir / "student/export/export.json").is_file():
        return workdir / "student/export", f"demo student export ({workdir / 'student/export'})"
    trained = model == "teacher" and (workdir / "teacher/teacher.json").is_file()
    run_dir = CACHE / f"{model}-{'demo' if trained else 'untrained'}{'-quick' * quick}"
    out = run_dir / "export"
    source = (
        f"demo teacher checkpoint {workdir / 'teacher/teacher.json'}, exported to {out}"
        if trained
        else f"untrained {spec.arch} at {spec.size} px, exported to {out}"
    )
    if (out / "export.json").is_file():
        return out, source
    run_dir.mkdir(parents=True, exist_ok=True)
    data = _data(workdir, quick, spec.size)
    print(f"exporting {model} ({source}) ...", flush=True)
    if spec.python is not None:
        _build_elsewhere(spec.python, spec.arch, spec.size, run_dir.resolve(), data.resolve())
    elif trained:
        from server.export import ExportConfig, export

        for suffix in (".json", ".safetensors"):
            shutil.copy(workdir / f"teacher/teacher{suffix}", run_dir / f"student{suffix}")
        _run_dir_config(run_dir, spec.arch, data)
        config = ExportConfig(precisions=["fp32"]) if quick else ExportConfig()
        export(run_dir, out, config, log=lambda s: None)
    else:
        build_untrained(spec.arch, spec.size, run_dir, data, quick)
    return out, source


__all__ = ["CACHE", "MODELS", "TARGETS", "BenchModel", "build_untrained", "export_dir"]
