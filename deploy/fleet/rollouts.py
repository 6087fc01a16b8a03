"""Staged rollout: canaries first, a soak that watches health and errors, then the rest.

A canary that fails its install, its health check or its soak stops the rollout and every
canary is rolled back; devices outside the canary stage are left untouched. Every rollout is
recorded in the inventory with per-host results and step timings.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from deploy.fleet import probe
from deploy.fleet.change import Change
from deploy.fleet.device import Connect, DeviceError, DeviceOps, connect
from deploy.fleet.inventory import Device, HostOutcome, Inventory, Rollout
from deploy.fleet.polling import poll
from deploy.transport import TransportError

Event = Callable[[str, str], None]
"""Progress callback: (host, what happened)."""


@dataclass(frozen=True)
class RolloutPlan:
    """How cautiously to roll out.

    ``build_timeout_s``: how long a device whose agent answers 503 "starting" (its inference
    worker starting, TensorRT engines building: minutes on a Xavier) is waited on, in its
    ready wait and in the soak, before it counts as failed.
    """

    canary: int = 1
    soak_s: float = 60.0
    check_interval_s: float = 2.0
    ready_timeout_s: float = 120.0
    build_timeout_s: float = 1800.0
    max_new_errors: int = 0
    parallel: int = 8
    canary_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.canary < 1:
            raise ValueError(f"canary must be >= 1 (got {self.canary}): a rollout starts small")
        if self.soak_s < 0 or self.check_interval_s <= 0 or self.ready_timeout_s <= 0:
            raise ValueError(
                f"soak_s >= 0, check_interval_s > 0 and ready_timeout_s > 0 are needed "
                f"(got {self.soak_s}, {self.check_interval_s}, {self.ready_timeout_s})"
            )
        if self.max_new_errors < 0 or self.parallel < 1:
            raise ValueError("max_new_errors must be >= 0 and parallel >= 1")
        if self.build_timeout_s < self.ready_timeout_s:
            raise ValueError(
                f"build_timeout_s ({self.build_timeout_s}) must be >= ready_timeout_s "
                f"({self.ready_timeout_s}): an engine build is waited on longer, not shorter"
            )


@dataclass
class _Host:
    device: Device
    ops: DeviceOps
    stage: str = "rest"
    before: str | None = None
    result: str = "skipped"
    error: str | None = None
    t0: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def outcome(self, to_version: str | None) -> HostOutcome:
        return HostOutcome(
            host=self.device.host, stage=self.stage, result=self.result,
            from_version=self.before, to_version=to_version, seconds=round(self.seconds, 3),
            steps=dict(self.ops.steps), error=self.error,
        )  # fmt: skip


class _Run:
    """One rollout in progress."""

    def __init__(
        self, inventory: Inventory, change: Change, plan: RolloutPlan, conn: Connect, on: Event
    ) -> None:
        self.inventory, self.change, self.plan, self.on = inventory, change, plan, on
        self.connect = conn
        self.rollout_id = 0

    async def preflight(self, devices: Sequence[Device]) -> list[_Host]:
        """Each device's health and current version (in parallel)."""

        async def one(device: Device) -> _Host:
            host = _Host(device, DeviceOps(device, self.connect(device)))
            reply = await probe.ready(device.url)
            if not reply.ok:
                host.error = f"not ready before the rollout ({reply.error or reply.status})"
                return host
            try:
                host.before = await self.change.current(host.ops)
            except DeviceError as exc:
                host.error = str(exc)
                return host
            host.result = "unchanged" if host.before == self.change.target else "pending"
            return host

        return list(await asyncio.gather(*(one(d) for d in devices)))

    async def update(self, host: _Host) -> None:
        """Apply, restart, wait ready, verify; on failure the host is marked failed."""
        host.t0 = time.perf_counter()
        self.on(
            host.device.host, f"{host.stage}: installing {self.change.kind} {self.change.target}"
        )
        try:
            await self.change.apply(host.ops, host.before)
            await self._wait_ready(host)
            await self.change.verify(host.ops)
        except (DeviceError, TransportError) as exc:
            host.result, host.error = "failed", str(exc)
            self.on(host.device.host, f"[red]failed[/red]: {exc}")
        else:
            host.result = "updated"
            self.on(host.device.host, f"updated in {time.perf_counter() - host.t0:.1f}s")
        host.seconds = time.perf_counter() - host.t0

    async def _wait_ready(self, host: _Host) -> None:
        name = host.device.host
        await host.ops.wait_ready(
            self.plan.ready_timeout_s,
            self.plan.build_timeout_s,
            lambda text: self.on(name, f"{host.stage}: starting: {text}"),
        )

    def _starting(self, h: _Host, reply: probe.Reply, since: dict[str, float]) -> bool:
        """True while ``h`` answers "starting" within the build timeout (progress shown)."""
        state, progress = probe.readiness(reply)
        if reply.status != 503 or state != probe.STARTING:
            since.pop(h.device.host, None)
            return False
        first = since.setdefault(h.device.host, time.perf_counter())
        if time.perf_counter() - first > self.plan.build_timeout_s:
            h.result = "failed"
            h.error = (
                f"still starting after {self.plan.build_timeout_s:g}s during the soak "
                f"(build timeout; last progress: {progress})"
            )
            return False
        self.on(h.device.host, f"soak: starting: {progress}")
        return True

    async def soak(self, hosts: list[_Host]) -> None:
        """Watch readiness and server-error counters of ``hosts`` for the soak time; a host
        answering "starting" is waited on (up to the build timeout) and the soak lasts until
        every host has been ready for its last check."""
        baseline = {h.device.host: await probe.server_errors(h.device.url) for h in hosts}
        t0 = time.perf_counter()
        starting: dict[str, float] = {}
        self.on("fleet", f"soaking {len(hosts)} canary(ies) for {self.plan.soak_s:g}s")
        while True:
            for h in hosts:
                reply = await probe.ready(h.device.url)
                if not reply.ok:
                    if not self._starting(h, reply, starting) and h.result != "failed":
                        h.result = "failed"
                        h.error = f"health failed during the soak: {reply.error or reply.status}"
                    continue
                starting.pop(h.device.host, None)
                now, base = await probe.server_errors(h.device.url), baseline[h.device.host]
                if now is not None and base is not None and now - base > self.plan.max_new_errors:
                    h.result = "failed"
                    h.error = (
                        f"server errors rose from {base:g} to {now:g} during the soak "
                        f"(allowed: {self.plan.max_new_errors})"
                    )
            failed = [h for h in hosts if h.result == "failed"]
            for h in failed:
                self.on(h.device.host, f"[red]failed[/red]: {h.error}")
            done = time.perf_counter() - t0 >= self.plan.soak_s and not starting
            if failed or done:
                return
            await asyncio.sleep(min(self.plan.check_interval_s, max(self.plan.soak_s, 0.1)))

    async def revert(self, host: _Host) -> None:
        """Undo the change on ``host`` and wait until it serves again."""
        t0 = time.perf_counter()
        try:
            await self.change.revert(host.ops)
            await self._wait_ready(host)
        except (DeviceError, TransportError) as exc:
            host.result = "failed"
            host.error = f"{host.error}; rolling back also failed: {exc}"
            self.on(host.device.host, f"[red]rollback failed[/red]: {exc}")
        else:
            host.result = "rolled back"
            self.on(host.device.host, f"rolled back in {time.perf_counter() - t0:.1f}s")
        host.ops.steps["revert"] = round(time.perf_counter() - t0, 3)
        host.seconds += time.perf_counter() - t0

    async def run(self, devices: Sequence[Device]) -> str:
        hosts = await self.preflight(devices)
        pending = [h for h in hosts if h.result == "pending"]
        preferred = {name: i for i, name in enumerate(self.plan.canary_hosts)}
        pending.sort(key=lambda h: preferred.get(h.device.host, len(preferred)))
        canaries, rest = pending[: self.plan.canary], pending[self.plan.canary :]
        for h in canaries:
            h.stage = "canary"
        for h in hosts:
            if h.error:
                self.on(h.device.host, f"skipped: {h.error}")
        try:
            status = await self._stages(canaries, rest)
        finally:
            for h in hosts:
                if h.result == "pending":
                    h.result = "skipped"
                self.inventory.record_host(self.rollout_id, h.outcome(self.change.target))
                await h.ops.transport.close()
        return status

    async def _stages(self, canaries: list[_Host], rest: list[_Host]) -> str:
        if not canaries:
            return "succeeded"  # nothing to do: every reachable device already runs it
        await asyncio.gather(*(self.update(h) for h in canaries))
        if all(h.result == "updated" for h in canaries):
            await self.soak(canaries)
        if any(h.result == "failed" for h in canaries):
            for h in rest:
                h.error = "not touched: the canary stage failed"
            self.on("fleet", "[red]a canary failed[/red]: rolling the canaries back")
            await asyncio.gather(*(self.revert(h) for h in canaries if self.change.changed(h.ops)))
            return "rolled back"
        gate = asyncio.Semaphore(self.plan.parallel)
        stop = asyncio.Event()

        async def one(h: _Host) -> None:
            async with gate:
                if stop.is_set():
                    h.error = "not touched: an earlier device failed"
                    return
                await self.update(h)
                if h.result == "failed":
                    stop.set()
                    if self.change.changed(h.ops):
                        await self.revert(h)

        await asyncio.gather(*(one(h) for h in rest))
        return "failed" if stop.is_set() else "succeeded"


def _progress(on: Event, host: str, text: str) -> None:
    on(host, f"starting: {text}")


def _summary(status: str, hosts: list[HostOutcome]) -> str:
    counts: dict[str, int] = {}
    for h in hosts:
        counts[h.result] = counts.get(h.result, 0) + 1
    return f"{status}: " + ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))


async def rollout(
    inventory: Inventory,
    change: Change,
    plan: RolloutPlan,
    *,
    hosts: Sequence[str] | None = None,
    site: str | None = None,
    conn: Connect = connect,
    on: Event = lambda host, text: None,
) -> Rollout:
    """Roll ``change`` out to the fleet (or ``hosts`` / ``site``) as ``plan`` says; recorded."""
    devices = inventory.devices(hosts, site)
    if not devices:
        raise ValueError(f"no devices to roll out to in {inventory.path}; `fovea fleet add` first")
    run = _Run(inventory, change, plan, conn, on)
    plan_dict = {**asdict(plan), "hosts": [d.host for d in devices]}
    run.rollout_id = inventory.start_rollout(
        change.kind, str(change.artifact), change.target, plan_dict
    )
    status = "failed"
    try:
        status = await run.run(devices)
    finally:
        record = inventory.rollout(run.rollout_id)
        inventory.finish_rollout(run.rollout_id, status, _summary(status, record.hosts))
        await poll(inventory, [d.host for d in devices], conn=conn)
    return inventory.rollout(run.rollout_id)


async def rollback(
    inventory: Inventory,
    *,
    hosts: Sequence[str] | None = None,
    ready_timeout_s: float = 120.0,
    build_timeout_s: float = 1800.0,
    parallel: int = 8,
    conn: Connect = connect,
    on: Event = lambda host, text: None,
) -> Rollout:
    """Roll the named devices (default: all) back to their previous bundle; recorded.

    An agent answering "starting" after its restart is waited on up to ``build_timeout_s``.
    """
    devices = inventory.devices(hosts)
    if not devices:
        raise ValueError(f"no devices in {inventory.path}")
    plan = {"ready_timeout_s": ready_timeout_s, "hosts": [d.host for d in devices]}
    rid = inventory.start_rollout("rollback", "-", "previous", plan)
    gate = asyncio.Semaphore(parallel)

    async def one(device: Device) -> HostOutcome:
        async with gate:
            ops = DeviceOps(device, conn(device))
            t0 = time.perf_counter()
            before = error = None
            try:
                before = await ops.served_version()
                await ops.rollback_bundle()
                await ops.restart()
                await ops.wait_ready(
                    ready_timeout_s,
                    max(build_timeout_s, ready_timeout_s),
                    functools.partial(_progress, on, device.host),
                )
                after = await ops.served_version()
                on(device.host, f"rolled back v{before} -> v{after}")
            except (DeviceError, TransportError) as exc:
                after, error = None, str(exc)
                on(device.host, f"[red]failed[/red]: {exc}")
            finally:
                await ops.transport.close()
            outcome = HostOutcome(
                host=device.host, stage="rest", result="failed" if error else "rolled back",
                from_version=None if before is None else str(before),
                to_version=None if after is None else str(after),
                seconds=round(time.perf_counter() - t0, 3), steps=ops.steps, error=error,
            )  # fmt: skip
            inventory.record_host(rid, outcome)
            return outcome

    outcomes = await asyncio.gather(*(one(d) for d in devices))
    status = "failed" if any(o.error for o in outcomes) else "succeeded"
    inventory.finish_rollout(rid, status, _summary(status, list(outcomes)))
    await poll(inventory, [d.host for d in devices], conn=conn)
    return inventory.rollout(rid)


__all__ = ["Event", "RolloutPlan", "rollback", "rollout"]
