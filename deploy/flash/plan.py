"""What a flash does: the plan (shared by all hosts), the targets, and what happened per host."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploy.transport import Transport

SupervisorKind = Literal["auto", "systemd", "process"]
WorkerMode = Literal["auto", "yes", "no"]
HostStatus = Literal["flashed", "unchanged", "failed"]

DEFAULT_ROOT = "/var/lib/fovea"
DEFAULT_PREFIX = "/opt/fovea"
DEFAULT_PORT = 8000
FLEET_ACCOUNT = "fleet"
TEGRA_RELEASE = "/etc/nv_tegra_release"
"""The file that marks a Jetson (its first line names the L4T release, e.g. ``# R35 ...``)."""
SYSTEM_PYTHON = "/usr/bin/python3"
"""JetPack's own Python (3.8 on JetPack 5, 3.10 on JetPack 6): the one its apt tensorrt is for."""
_JETSON = Path(__file__).resolve().parents[1] / "jetson"
WORKER_REQUIREMENTS = {
    "R35": _JETSON / "worker-requirements-jp5.txt",
    "R36": _JETSON / "worker-requirements-jp6.txt",
}
"""The TensorRT worker's pinned requirements per L4T release (JetPack 5 = R35: Python 3.8,
CUDA 11.4; JetPack 6 = R36: Python 3.10, CUDA 12.2)."""


@dataclass(frozen=True)
class FlashPlan:
    """Settings shared by every host of one flash.

    ``wheel`` is the fovea-edge wheel (built once per flash) and ``wheelhouse`` a folder of the
    device architecture's dependency wheels (the site supplies Jetson builds); both may be None
    when ``agent_venv`` names a virtual environment that already holds fovea-edge on the device
    (then no venv is created and nothing is pip-installed). ``trusted_key`` is the bundle
    signer's public key installed into the device's ``keys/trusted/``.

    The TensorRT worker (``worker``: ``auto`` = only on a Jetson, i.e. where ``tegra_release``
    exists; ``yes``; ``no``) gets its own venv made by ``system_python -m venv
    --system-site-packages`` (so JetPack's apt ``tensorrt`` is visible) and filled from the
    wheelhouse with ``worker_requirements`` (None: the pins of the device's L4T release, see
    :data:`WORKER_REQUIREMENTS`); the agent config then names its Python as
    ``worker_python``. ``build_timeout`` is how long the ready step waits while the agent
    answers "starting" (worker starting, engines building).
    """

    bundle: Path
    trusted_key: Path
    wheel: Path | None = None
    wheelhouse: Path | None = None
    agent_venv: str | None = None
    device_python: str = "python3.11"
    extras: str = "agent"
    listen_host: str = "0.0.0.0"
    supervisor: SupervisorKind = "auto"
    service_user: str = "fovea"
    unit_name: str = "fovea-agent"
    fleet_account: str = FLEET_ACCOUNT
    rotate_token: bool = False
    ready_timeout: float = 120.0
    build_timeout: float = 1800.0
    step_timeout: float = 900.0
    parallel: int = 8
    worker: WorkerMode = "auto"
    system_python: str = SYSTEM_PYTHON
    worker_requirements: Path | None = None
    tegra_release: str = TEGRA_RELEASE

    def __post_init__(self) -> None:
        if not self.bundle.is_file():
            raise ValueError(f"bundle {self.bundle} does not exist; build one: fovea bundle build")
        if not self.trusted_key.is_file():
            raise ValueError(f"trusted key {self.trusted_key} does not exist (the signer's .pub)")
        if self.agent_venv is None and self.wheel is None:
            raise ValueError("give the fovea-edge wheel to install, or agent_venv to reuse")
        if self.wheel is not None and not self.wheel.is_file():
            raise ValueError(f"wheel {self.wheel} does not exist")
        if self.wheelhouse is not None and not self.wheelhouse.is_dir():
            raise ValueError(f"wheelhouse {self.wheelhouse} is not a directory")
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1, got {self.parallel}")
        if self.worker not in ("auto", "yes", "no"):
            raise ValueError(f"worker must be auto, yes or no, got {self.worker!r}")
        if self.ready_timeout <= 0 or self.build_timeout < self.ready_timeout:
            raise ValueError(
                f"ready_timeout must be > 0 and build_timeout >= ready_timeout, got "
                f"{self.ready_timeout} and {self.build_timeout}"
            )
        if self.worker_requirements is not None and not self.worker_requirements.is_file():
            raise ValueError(f"worker requirements {self.worker_requirements} do not exist")

    def wheel_files(self) -> list[Path]:
        """Every wheel to copy: fovea-edge's and the wheelhouse's."""
        found = [self.wheel] if self.wheel is not None else []
        if self.wheelhouse is not None:
            names = {p.name for p in found}
            found += sorted(
                p for p in self.wheelhouse.glob("*.whl") if p.is_file() and p.name not in names
            )
        return found


@dataclass(frozen=True)
class FlashTarget:
    """One device: how to reach it and where Fovea lives on it.

    ``root`` is the agent's device root, ``prefix`` holds the venv, copied wheels and bundles,
    ``port`` is the agent's HTTP port (checked for readiness from the device itself).
    """

    transport: Transport
    root: str = DEFAULT_ROOT
    prefix: str = DEFAULT_PREFIX
    port: int = DEFAULT_PORT

    def __post_init__(self) -> None:
        for name in ("root", "prefix"):
            value = getattr(self, name)
            if not value.startswith("/"):
                raise ValueError(f"{self.transport.host}: {name} {value!r} must be absolute")
        if not 0 < self.port < 65536:
            raise ValueError(f"{self.transport.host}: port {self.port} not in 1..65535")

    @property
    def host(self) -> str:
        """The device's display name."""
        return self.transport.host

    @property
    def venv(self) -> str:
        """The device venv made by the flash."""
        return f"{self.prefix}/venv"

    @property
    def worker_venv(self) -> str:
        """The TensorRT worker's venv (JetPack's Python) made by the flash on a Jetson."""
        return f"{self.prefix}/worker-venv"


@dataclass(frozen=True)
class StepResult:
    """One step on one host: whether it changed anything, and how long it took."""

    name: str
    changed: bool
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class HostResult:
    """What flashing one host did; ``token`` is the fleet account's token when one was issued."""

    host: str
    status: HostStatus
    seconds: float
    steps: tuple[StepResult, ...] = ()
    error: str | None = None
    url: str | None = None
    supervisor: str | None = None
    model: str | None = None
    model_version: int | None = None
    agent_version: str | None = None
    token: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True unless the host failed."""
        return self.status != "failed"


def plan_lines(plan: FlashPlan, targets: list[FlashTarget]) -> list[str]:
    """The plan as readable lines (what ``--dry-run`` prints); nothing is touched."""
    wheels = plan.wheel_files()
    size = sum(p.stat().st_size for p in wheels) / 1e6
    lines = [
        f"bundle {plan.bundle} ({plan.bundle.stat().st_size / 1e6:.1f} MB), "
        f"trusted key {plan.trusted_key.name}",
        f"agent: {f'existing venv {plan.agent_venv}' if plan.agent_venv else 'new venv'}; "
        f"{len(wheels)} wheels ({size:.1f} MB)"
        + (f" from {plan.wheelhouse}" if plan.wheelhouse else ""),
    ]
    for t in targets:
        venv = plan.agent_venv or t.venv
        lines += [
            f"{t.host}:",
            f"  probe: architecture, {plan.device_python}, Jetson (/etc/nv_tegra_release), PID 1",
            f"  copy wheels and bundle to {t.prefix} (resumable; identical files skipped)",
            f"  venv {venv}"
            + ("" if plan.agent_venv else f" ({plan.device_python} -m venv; pip --no-index)"),
            f"  worker ({plan.worker}; on a Jetson): {plan.system_python} -m venv "
            f"--system-site-packages {t.worker_venv}; pip --no-index -r "
            f"{plan.worker_requirements or 'the release pins'}; import tensorrt",
            f"  trust {plan.trusted_key.name} in {t.root}/keys/trusted/",
            f"  config {t.root}/agent.yaml: worker_python (when the worker is installed)",
            f"  service user {plan.service_user!r} in video (and render) (systemd only)",
            f"  fovea-agent install {plan.bundle.name} --root {t.root} (skipped if installed; "
            "as the service user under systemd)",
            f"  supervisor {plan.supervisor}: unit {plan.unit_name}.service (systemd) or "
            f"a process keeper; agent on {plan.listen_host}:{t.port}",
            f"  account {plan.fleet_account!r} (admin) and its token",
            f"  wait for http://127.0.0.1:{t.port}/v2/health/ready ({plan.ready_timeout:g} s; "
            f"up to {plan.build_timeout:g} s while it says 'starting')",
        ]
    return lines
