"""Flashing one host: the steps, each idempotent, in order."""

from __future__ import annotations

import json
import shlex
import tarfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.flash.plan import FlashPlan, FlashTarget, HostResult, StepResult
from deploy.flash.remote import read_text, sh
from deploy.flash.supervisor import (
    ServiceSpec,
    Supervisor,
    detect_supervisor,
    ensure_service_user,
)
from deploy.flash.worker import install_worker, l4t_release, write_config
from deploy.transport import SshTransport, TransportError, file_sha256
from edge_agent.bundle import Manifest

STEPS: tuple[str, ...] = (
    "probe", "copy", "venv", "worker", "trust", "config", "user", "install", "account",
    "service", "ready",
)  # fmt: skip
"""The step names, in order (progress shows them)."""
WHEEL_STAMP = ".fovea-wheel.sha256"
"""File in the device venv: sha256 of the fovea-edge wheel flash installed there (a re-flash
with the same wheel skips pip). The wheel itself stays in ``PREFIX/wheels/``, where fleet agent
upgrades find it as the way back."""

_READY_SCRIPT = """\
import json, sys, time, urllib.error, urllib.request
url, wait, build = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
end, last = t0 + wait, "no answer"
while time.monotonic() < end:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
            last = f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        last = f"HTTP {e.code}"
        try:
            body = json.loads(e.read())
        except ValueError:
            body = None
        if e.code == 503 and isinstance(body, dict) and body.get("state") == "starting":
            last = f"starting: {body.get('progress', '')}"
            end = min(t0 + build, max(end, time.monotonic() + wait))
    except Exception as e:
        last = str(e)
    time.sleep(0.2)
print(last)
sys.exit(1)
"""


def bundle_manifest(bundle: Path) -> Manifest:
    """The manifest inside a bundle tar (unverified: the device verifies)."""
    try:
        with tarfile.open(bundle) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                raise ValueError(f"bundle {bundle}: manifest.json is not a file")
            return Manifest.model_validate_json(member.read())
    except (KeyError, tarfile.TarError) as e:
        raise ValueError(f"bundle {bundle} is not a Fovea bundle ({e})") from None


@dataclass
class _State:
    changed: bool = False
    token: str | None = None
    supervisor: Supervisor | None = None
    installed: tuple[str, int] | None = None
    release: str | None = None
    worker_python: str | None = None
    as_service: tuple[str, ...] = ()


class HostFlash:
    """The steps of flashing one target with one plan; ``run`` never raises."""

    def __init__(
        self,
        target: FlashTarget,
        plan: FlashPlan,
        manifest: Manifest,
        on_step: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.t = target
        self.plan = plan
        self.manifest = manifest
        self.on_step = on_step
        self.tr = target.transport
        self.venv = plan.agent_venv or target.venv
        self.agent = f"{self.venv}/bin/fovea-agent"
        self.s = _State()
        self.jetson = False

    async def run(self) -> HostResult:
        """Run every step; the first failure stops this host and is reported."""
        t0 = time.perf_counter()
        steps: list[StepResult] = []
        actions: dict[str, Callable[[], Awaitable[tuple[bool, str]]]] = {
            "probe": self._probe, "copy": self._copy, "venv": self._venv,
            "worker": self._worker, "trust": self._trust, "config": self._config,
            "user": self._user, "install": self._install, "account": self._account,
            "service": self._service, "ready": self._ready,
        }  # fmt: skip
        error: str | None = None
        for name in STEPS:
            self.on_step(name)
            s0 = time.perf_counter()
            try:
                changed, detail = await actions[name]()
            except (TransportError, ValueError, OSError) as e:
                msg = str(e)
                error = msg if msg.startswith(self.tr.host) else f"{self.tr.host}: {msg}"
                error = f"{error} [step {name}]"
                break
            steps.append(StepResult(name, changed, time.perf_counter() - s0, detail))
            self.s.changed |= changed and name not in ("probe", "copy", "ready")
        agent_version = None
        if error is None:
            res = await self.tr.run([self.agent, "version"])
            agent_version = res.stdout.split()[-1] if res.ok and res.stdout.split() else None
        return HostResult(
            host=self.tr.host,
            status="failed" if error else ("flashed" if self.s.changed else "unchanged"),
            seconds=time.perf_counter() - t0,
            steps=tuple(steps),
            error=error,
            url=f"http://{self._address()}:{self.t.port}",
            supervisor=self.s.supervisor.kind if self.s.supervisor else None,
            model=self.s.installed[0] if self.s.installed else None,
            model_version=self.s.installed[1] if self.s.installed else None,
            agent_version=agent_version,
            token=self.s.token,
        )

    def _address(self) -> str:
        if isinstance(self.tr, SshTransport) and self.plan.listen_host in ("0.0.0.0", "::"):
            return self.tr.target.host
        return "127.0.0.1" if self.plan.listen_host in ("0.0.0.0", "::") else self.plan.listen_host

    async def _probe(self) -> tuple[bool, str]:
        py, tegra = shlex.quote(self.plan.device_python), shlex.quote(self.plan.tegra_release)
        res = await sh(
            self.tr,
            f"uname -m; test -f {tegra} && echo jetson || echo generic; "
            f"{py} -c 'import sys; print(sys.version_info[0], sys.version_info[1])' "
            f"2>/dev/null || echo none; head -n 1 {tegra} 2>/dev/null || true",
        )
        lines = res.check().stdout.split("\n")
        arch, kind, pyver, release = [*lines, "", "", "", ""][:4]
        self.jetson = kind.strip() == "jetson"
        self.s.release = l4t_release(release) if self.jetson else None
        if self.plan.agent_venv is None and pyver.strip() != "3 11":
            raise ValueError(
                f"{self.plan.device_python} on the device is {pyver.strip() or 'missing'}, "
                f"not Python 3.11; install python3.11 there or pass --device-python PATH"
            )
        where = f" {self.s.release or release.strip()[:60]}" if self.jetson else ""
        return False, f"{arch.strip()} {kind.strip()}{where}"

    @property
    def _wants_worker(self) -> bool:
        return self.plan.worker == "yes" or (self.plan.worker == "auto" and self.jetson)

    async def _copy(self) -> tuple[bool, str]:
        p = self.t.prefix
        await self.tr.run(["mkdir", "-p", f"{p}/wheels", f"{p}/bundles", f"{p}/run"])
        need = self.plan.agent_venv is None or self._wants_worker
        wheels = self.plan.wheel_files() if need else []
        for wheel in wheels:
            await self.tr.put(wheel, f"{p}/wheels/{wheel.name}")
        await self.tr.put(self.plan.bundle, self._remote_bundle)
        return True, f"{len(wheels)} wheels + {self.plan.bundle.name}"

    @property
    def _remote_bundle(self) -> str:
        return f"{self.t.prefix}/bundles/{self.plan.bundle.name}"

    async def _venv(self) -> tuple[bool, str]:
        if self.plan.agent_venv is not None:
            (await self.tr.run([self.agent, "version"])).check()
            return False, f"reusing {self.venv}"
        assert self.plan.wheel is not None
        stamp, want = f"{self.venv}/{WHEEL_STAMP}", file_sha256(self.plan.wheel)
        had = await read_text(self.tr, stamp)
        if had is not None and had.strip() == want:
            return False, "up to date"
        create = [self.plan.device_python, "-m", "venv", self.venv]
        if self.jetson:  # JetPack's tensorrt module lives in the system site-packages
            create.insert(3, "--system-site-packages")
        if (await self.tr.run(["test", "-x", f"{self.venv}/bin/python"])).rc != 0:
            (await self.tr.run(create, timeout=self.plan.step_timeout)).check()
        wheel = f"{self.t.prefix}/wheels/{self.plan.wheel.name}"
        pip = [f"{self.venv}/bin/python", "-m", "pip", "install", "--no-index", "--find-links",
               f"{self.t.prefix}/wheels", "--disable-pip-version-check", "-q"]  # fmt: skip
        env = {"PIP_CONFIG_FILE": "/dev/null"}
        res = await self.tr.run(
            [*pip, f"{wheel}[{self.plan.extras}]"], env=env, timeout=self.plan.step_timeout
        )
        if not res.ok:
            raise ValueError(
                f"pip could not install the agent from {self.t.prefix}/wheels: "
                f"{res.stderr.strip()[-800:]}; supply the device architecture's wheels "
                f"with --wheelhouse"
            )
        if had is not None:  # same version, new build: replace the package itself
            await self.tr.run([*pip, "--no-deps", "--force-reinstall", wheel], env=env)
        await sh(self.tr, f"echo {want} > {shlex.quote(stamp)}")
        return True, f"{self.venv}{' (system site-packages)' if self.jetson else ''}"

    async def _worker(self) -> tuple[bool, str]:
        if not self._wants_worker:
            return False, "in-process " + ("(worker off)" if self.jetson else "(not a Jetson)")
        env = await install_worker(self.tr, self.plan, self.t, self.s.release)
        self.s.worker_python = env.python
        return env.changed, env.detail

    async def _config(self) -> tuple[bool, str]:
        return await write_config(self.tr, self.t.root, self.s.worker_python)

    async def _user(self) -> tuple[bool, str]:
        """Under systemd: the service user (in video/render) owns the root, and the agent's
        commands (precision measured at install) run as that user."""
        sup = await detect_supervisor(self.tr, self._spec(), self.plan.supervisor)
        self.s.supervisor = sup
        if sup.kind != "systemd":
            return False, f"{sup.kind}: the agent runs as the login user"
        user = self.plan.service_user
        groups = await ensure_service_user(self.tr, user, self.t.root)
        (await self.tr.run(["chown", "-R", f"{user}:{user}", self.t.root])).check()
        self.s.as_service = ("runuser", "-u", user, "--")
        return False, f"{user} in {', '.join(groups) or 'no device group'}"

    def _agent_cmd(self, *args: str) -> list[str]:
        """``fovea-agent ARGS``, as the service user once the user step set one."""
        return [*self.s.as_service, self.agent, *args]

    async def _trust(self) -> tuple[bool, str]:
        key = self.plan.trusted_key
        dest = f"{self.t.root}/keys/trusted/{key.name}"
        have = await read_text(self.tr, dest)
        if have == key.read_text():
            return False, key.name
        await self.tr.run(["mkdir", "-p", f"{self.t.root}/keys/trusted"])
        await self.tr.put(key, dest)
        return True, key.name

    async def _status(self) -> dict[str, object]:
        res = (await self.tr.run(self._agent_cmd("status", "--root", self.t.root))).check()
        return dict(json.loads(res.stdout))

    async def _install(self) -> tuple[bool, str]:
        m = self.manifest
        installed = (await self._status()).get("installed")
        if isinstance(installed, dict):
            name, version = str(installed.get("name")), int(str(installed.get("version")))
            self.s.installed = (name, version)
            if name == m.name and version >= m.version:
                return False, f"{name} v{version} already installed"
        res = await self.tr.run(
            self._agent_cmd("install", self._remote_bundle, "--root", self.t.root),
            timeout=self.plan.step_timeout,
        )
        if not res.ok:
            why = (res.stderr.strip() or res.stdout.strip()).splitlines()
            raise ValueError(
                f"the device refused bundle {self.plan.bundle.name}: "
                f"{why[-1] if why else 'no output'}"
            )
        self.s.installed = (m.name, m.version)
        return True, f"{m.name} v{m.version}"

    async def _account(self) -> tuple[bool, str]:
        name, root = self.plan.fleet_account, self.t.root
        add = self._agent_cmd("users", "add", name, "--role", "admin", "--root", root)
        res = await self.tr.run(add)
        if res.ok:
            self.s.token = res.stdout.strip().splitlines()[-1]
            return True, f"{name} created"
        if "already exists" not in res.stderr + res.stdout:
            res.check()
        if not self.plan.rotate_token:
            return False, f"{name} exists (its token was given when it was created)"
        code = (
            "import sys; from pathlib import Path; from edge_agent.install import DeviceRoot; "
            "from edge_agent.store import Store; print(Store(DeviceRoot(Path(sys.argv[1]))"
            ".ensure().state_db).rotate_token(sys.argv[2], actor='flash'))"
        )
        python = [*self.s.as_service, f"{self.venv}/bin/python"]
        out = await self.tr.run([*python, "-c", code, root, name])
        self.s.token = out.check().stdout.strip().splitlines()[-1]
        return True, f"{name} token rotated"

    def _spec(self) -> ServiceSpec:
        argv = (self.agent, "serve", "--root", self.t.root,
                "--host", self.plan.listen_host, "--port", str(self.t.port))  # fmt: skip
        return ServiceSpec(
            name=self.plan.unit_name, argv=argv, root=self.t.root, prefix=self.t.prefix,
            user=self.plan.service_user, python=f"{self.venv}/bin/python",
        )  # fmt: skip

    async def _service(self) -> tuple[bool, str]:
        spec = self._spec()
        sup = self.s.supervisor or await detect_supervisor(self.tr, spec, self.plan.supervisor)
        self.s.supervisor = sup
        changed = await sup.install(spec)
        if (changed or self.s.changed) and await sup.is_active():
            await sup.restart()
            return True, f"{sup.kind}: restarted"
        if not await sup.is_active():
            await sup.start()
            return True, f"{sup.kind}: started"
        return changed, f"{sup.kind}: running"

    async def _ready(self) -> tuple[bool, str]:
        url = f"http://127.0.0.1:{self.t.port}/v2/health/ready"
        t0 = time.perf_counter()
        wait, build = self.plan.ready_timeout, self.plan.build_timeout
        res = await self.tr.run(
            [f"{self.venv}/bin/python", "-c", _READY_SCRIPT, url, str(wait), str(build)],
            timeout=build + 30,
        )
        if not res.ok:
            log = await self._log_tail()
            raise ValueError(
                f"the agent was not ready at {url} ({res.stdout.strip()}; waited up to "
                f"{wait:g} s, {build:g} s while starting); last log lines:\n{log}"
            )
        return False, f"ready in {time.perf_counter() - t0:.1f} s"

    async def _log_tail(self) -> str:
        if self.s.supervisor is not None and self.s.supervisor.kind == "systemd":
            cmd = f"journalctl -u {shlex.quote(self.plan.unit_name)} -n 15 --no-pager"
        else:
            cmd = f"tail -n 15 {shlex.quote(self._spec().log)}"
        return (await sh(self.tr, cmd + " 2>&1")).stdout
