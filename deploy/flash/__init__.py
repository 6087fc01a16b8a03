"""Flashing devices: the agent, its venv, the bundle, the trusted key and the service, per host.

``flash(targets, FlashPlan(...))`` flashes several devices in parallel over any
:class:`~deploy.transport.Transport` (SSH, or a local device root) and returns a
:class:`HostResult` per host; ``build_offline_installer`` makes the same install carryable.
"""

from deploy.flash.artifacts import build_wheel, make_wheelhouse
from deploy.flash.offline import OfflineInstaller, build_offline_installer
from deploy.flash.plan import (
    DEFAULT_PORT,
    DEFAULT_PREFIX,
    DEFAULT_ROOT,
    FlashPlan,
    FlashTarget,
    HostResult,
    StepResult,
    plan_lines,
)
from deploy.flash.run import flash, flash_async, summary_table
from deploy.flash.steps import STEPS, WHEEL_STAMP, bundle_manifest
from deploy.flash.supervisor import (
    ProcessSupervisor,
    ServiceSpec,
    Supervisor,
    SystemdSupervisor,
    detect_supervisor,
    render_unit,
)

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_PREFIX",
    "DEFAULT_ROOT",
    "STEPS",
    "WHEEL_STAMP",
    "FlashPlan",
    "FlashTarget",
    "HostResult",
    "OfflineInstaller",
    "ProcessSupervisor",
    "ServiceSpec",
    "StepResult",
    "Supervisor",
    "SystemdSupervisor",
    "build_offline_installer",
    "build_wheel",
    "bundle_manifest",
    "detect_supervisor",
    "flash",
    "flash_async",
    "make_wheelhouse",
    "plan_lines",
    "render_unit",
    "summary_table",
]
