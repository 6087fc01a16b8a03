"""The TensorRT worker's environment on a Jetson, and the agent config that points at it.

JetPack 5 ships TensorRT's Python bindings for its own Python 3.8 only (JetPack 6: 3.10), while
the agent runs in a Python 3.11 venv; so the worker gets a venv of its own, made by JetPack's
Python with ``--system-site-packages`` (JetPack's apt ``tensorrt`` stays visible) and filled
from the site's wheelhouse with pinned requirements (``deploy/jetson/``), and the agent config
names that venv's Python as ``worker_python``.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.flash.plan import WORKER_REQUIREMENTS, FlashPlan, FlashTarget
from deploy.flash.remote import read_text, sh, write_text
from deploy.transport import Transport

WORKER_STAMP = ".fovea-worker.sha256"
"""File in the worker venv: sha256 of the requirements pip installed there (same: no pip)."""
CONFIG_NAME = "agent.yaml"
"""The agent's config file in the device root (``edge_agent.service.config.CONFIG_NAME``)."""
_RELEASE = re.compile(r"#\s*(R\d+)\b")
_TRT_CHECK = "import tensorrt, sys; print(tensorrt.__version__, sys.version.split()[0])"


def l4t_release(text: str | None) -> str | None:
    """``R35`` from an ``/etc/nv_tegra_release`` first line (``# R35 (release), REVISION:
    3.1, ...``); None when the text names none."""
    match = _RELEASE.search(text or "")
    return match.group(1) if match else None


def requirements_for(plan: FlashPlan, release: str | None, host: str = "") -> Path:
    """The worker's requirements file: the plan's, else the pins of the L4T ``release``."""
    if plan.worker_requirements is not None:
        return plan.worker_requirements
    if release in WORKER_REQUIREMENTS:
        pins = WORKER_REQUIREMENTS[release]
        if not pins.is_file():
            raise ValueError(
                f"{host}: the worker's pins {pins} are not installed with this fovea-edge "
                "(deploy/jetson/ is missing); run fovea from a source checkout or pass "
                "--worker-requirements FILE"
            )
        return pins
    known = ", ".join(f"{r} ({p.name})" for r, p in WORKER_REQUIREMENTS.items())
    raise ValueError(
        f"{host}: no worker requirements for L4T release {release or '(unknown)'} (known: "
        f"{known}); pass a requirements file for its Python (--worker-requirements) or no worker"
    )


@dataclass(frozen=True)
class WorkerEnv:
    """What the worker step did: whether it changed anything, and the Python to configure."""

    changed: bool
    python: str
    detail: str


async def install_worker(
    tr: Transport, plan: FlashPlan, target: FlashTarget, release: str | None
) -> WorkerEnv:
    """Make (or keep) the worker venv, pip-install its requirements from the copied wheelhouse,
    and check that ``import tensorrt`` works under its Python; ValueError saying what to fix."""
    venv, wheels = target.worker_venv, f"{target.prefix}/wheels"
    python = f"{venv}/bin/python"
    requirements = requirements_for(plan, release, tr.host)
    if (await tr.run(["test", "-x", plan.system_python])).rc != 0:
        raise ValueError(
            f"{plan.system_python} (JetPack's Python, which runs the TensorRT worker) is "
            "missing; install python3 and python3-venv, or pass --system-python PATH"
        )
    text = requirements.read_text()
    want = hashlib.sha256(text.encode()).hexdigest()
    changed = False
    if (await read_text(tr, f"{venv}/{WORKER_STAMP}") or "").strip() != want:
        if (await tr.run(["test", "-x", python])).rc != 0:
            create = [plan.system_python, "-m", "venv", "--system-site-packages", venv]
            res = await tr.run(create, timeout=plan.step_timeout)
            if not res.ok:
                raise ValueError(
                    f"`{shlex.join(create)}` failed: {res.stderr.strip()[-400:]}; "
                    "install python3-venv (apt) on the device"
                )
        remote_req = f"{target.prefix}/{requirements.name}"
        await write_text(tr, remote_req, text)
        pip = [python, "-m", "pip", "install", "--no-index", "--find-links", wheels,
               "--disable-pip-version-check", "-q", "-r", remote_req]  # fmt: skip
        res = await tr.run(pip, env={"PIP_CONFIG_FILE": "/dev/null"}, timeout=plan.step_timeout)
        if not res.ok:
            raise ValueError(
                f"pip could not install the worker's requirements ({requirements.name}) from "
                f"{wheels}: {res.stderr.strip()[-600:]}; add wheels for {plan.system_python} "
                f"on this device's architecture to --wheelhouse (see {requirements.name})"
            )
        await sh(tr, f"echo {want} > {shlex.quote(f'{venv}/{WORKER_STAMP}')}")
        changed = True
    res = await tr.run([python, "-c", _TRT_CHECK], timeout=120)
    if not res.ok:
        why = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(
            f"`import tensorrt` fails under {python} ({why}); JetPack's TensorRT Python "
            f"bindings are for {plan.system_python}: install them (sudo apt-get install "
            "python3-libnvinfer, part of nvidia-jetpack)"
        )
    trt, py = [*res.stdout.split(), "?", "?"][:2]
    return WorkerEnv(changed, python, f"{venv} (Python {py}, TensorRT {trt})")


def config_with_worker(text: str | None, worker_python: str | None, path: str) -> str | None:
    """The agent config text with ``worker_python`` set (or removed when None); None when
    nothing needs writing. Other settings are kept; ValueError when the file is not a mapping."""
    try:
        data: Any = yaml.safe_load(text) if text else None
    except yaml.YAMLError as exc:
        raise ValueError(
            f"{path} on the device is not valid YAML ({exc}); fix or remove it"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} on the device is not a mapping of settings; fix or remove it")
    if worker_python is None:
        if "worker_python" not in data:
            return None
        del data["worker_python"]
    elif data.get("worker_python") == worker_python:
        return None
    else:
        data["worker_python"] = worker_python
    return yaml.safe_dump(data, sort_keys=False) if data else ""


async def write_config(tr: Transport, root: str, worker_python: str | None) -> tuple[bool, str]:
    """Set ``worker_python`` in ``ROOT/agent.yaml`` (created when needed); (changed, detail)."""
    path = f"{root}/{CONFIG_NAME}"
    new = config_with_worker(await read_text(tr, path), worker_python, path)
    if new is None:
        return False, f"{path}: worker_python {worker_python or 'unset (in-process)'}"
    await tr.run(["mkdir", "-p", root])
    await write_text(tr, path, new)
    return True, f"{path}: worker_python {worker_python or 'removed (in-process)'}"
