"""Serving a device root: load the active bundle on its chosen backend, run the app on uvicorn."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from edge_agent.bundle import Manifest
from edge_agent.install import DeviceRoot, read_updates, recover, sync_history
from edge_agent.runtime import Backend, BatcherSettings, DynamicBatcher, serving_batch
from edge_agent.screening import carried_threshold
from edge_agent.service.app import create_app
from edge_agent.service.config import AgentConfig
from edge_agent.service.drift import DriftWatch
from edge_agent.service.integrity import SlotWatch, open_verified
from edge_agent.service.limits import raise_open_files_limit
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.protocol import http_protocol
from edge_agent.service.screen import ScreeningSettings
from edge_agent.service.served import ServedModel, model_info
from edge_agent.service.sitepoint import SitePointWatch
from edge_agent.service.starting import StartingApp
from edge_agent.store import Retention, Store

Log = Callable[[str], None]
GIL_SWITCH_S = 0.001


def inline_batches(config: AgentConfig) -> bool:
    """Whether batches run on the event loop; unset, when this process has one core.

    On one core a worker thread cannot overlap the loop's request handling, it only adds a
    GIL hand-over per batch.
    """
    if config.inline_batches is not None:
        return config.inline_batches
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) == 1
    return os.cpu_count() == 1


@dataclass
class LoadedAgent:
    """A ready app and what it holds open."""

    app: FastAPI
    served: ServedModel
    store: Store
    manifest: Manifest
    watch: SlotWatch | None = None
    """The served slot's re-checks (and how it verified at start)."""


def load_agent(root_path: Path, config: AgentConfig, log: Log = lambda s: None) -> LoadedAgent:
    """Everything ``fovea-agent serve`` runs: the active bundle behind the app.

    Serves only a slot that verifies (signed manifest, every file's sha256, golden outputs):
    the active one, else the other one rolled back to (``open_verified``). Raises ValueError
    (nothing installed, neither slot verifies, no loadable precision) with what to do.
    """
    root = _active(Path(root_path))
    store = Store(
        root.state_db,
        retention=Retention(
            max_cases=config.case_retention_count, max_age_days=config.case_retention_days
        ),
    )
    try:
        sync_history(root, store)  # state.db records what the install journal says was done
        verified = open_verified(root, config, store, log)
    except BaseException:
        store.close()
        raise
    manifest, backend, record = verified.manifest, verified.backend, verified.record
    telemetry = _Telemetry()
    metrics = AgentMetrics(telemetry.read)
    # batches no larger than the size the precision choice found fastest on this device
    batching = config.model_copy(update={"max_batch": serving_batch(record, config.max_batch)})
    served = _served(manifest, backend, batching, metrics, telemetry, _BusyMark(root.busy_file))
    watch = SlotWatch(root, verified, served, store, config.verify_interval_s, log)

    def status_extra() -> dict[str, Any]:
        updates = [u.model_dump(mode="json") for u in read_updates(root.updates_log)[-5:]]
        return {
            "precision_choice": record,
            "updates": updates,
            "store": store.counts(),
            "integrity": watch.status(),
            "audit_head": store.signed_head(),
        }

    drift = DriftWatch.for_slot(verified.slot_dir, root.path, verified.digest)
    threshold = manifest.thresholds.referral
    carried = carried_threshold(verified.slot_dir, config.site or root.path.name)
    site = SitePointWatch(
        root.path, verified.digest, threshold, manifest.task, store, carried, manifest.version
    )
    screening = dataclasses.replace(_screening(manifest), referral_threshold=site.threshold)
    app = create_app(
        served,
        store,
        store,
        screening,  # at the threshold approved for this site, if one was
        config,
        telemetry=telemetry.read,
        status_extra=status_extra,
        metrics=metrics,
        drift=drift,
        site_point=site,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watch.start()
        telemetry.tegrastats.start()
        yield
        telemetry.tegrastats.stop()
        watch.stop()
        for pool in app.state.pools:
            pool.close()
        await served.close()
        drift.save()
        store.close()

    app.router.lifespan_context = lifespan
    return LoadedAgent(app, served, store, manifest, watch)


def _active(path: Path) -> DeviceRoot:
    """The device root, an interrupted install recovered."""
    root = DeviceRoot(path)
    root.ensure()
    recover(root)
    return root


def _served(
    manifest: Manifest,
    backend: Backend,
    config: AgentConfig,
    metrics: AgentMetrics,
    telemetry: _Telemetry,
    busy: _BusyMark,
) -> ServedModel:
    """``backend`` behind a dynamic batcher whose batches feed metrics, telemetry and ``busy``."""

    def on_batch(rows: int, _seconds: float) -> None:
        metrics.observe_batch(rows)
        telemetry.rows += rows
        busy.touch()

    batcher = DynamicBatcher(
        backend,
        BatcherSettings(
            max_batch=config.max_batch,
            max_wait_ms=config.max_wait_ms,
            inline=inline_batches(config),
            check_finite=False,  # model_input() refuses NaN/inf per request, with its own 400
        ),
        on_batch=on_batch,
    )
    info = model_info(
        manifest.name,
        manifest.version,
        backend,
        max_request_rows=config.max_request_rows,
        extra={
            "family": manifest.family,
            "labels": list(manifest.labels),
            "providers": backend.providers,
        },
    )
    return ServedModel(info, batcher)


def _screening(manifest: Manifest) -> ScreeningSettings:
    """The bundle's screening rules, in its task."""
    return ScreeningSettings(
        spec=manifest.preprocess,
        task=manifest.task,
        referral_threshold=manifest.thresholds.referral,
        gradable_threshold=manifest.thresholds.gradable,
    )


class _BusyMark:
    """Refreshes the device's busy file while batches run (at most twice a second), so that
    federated training on the device (edge_agent.fl) yields to screening."""

    def __init__(self, path: Path, every_s: float = 0.5) -> None:
        self.path, self.every_s, self._last = path, every_s, 0.0

    def touch(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            pass  # a read-only root must not fail inference; training just will not pause


class _Telemetry:
    """Device readings plus energy per inference (RAPL or Jetson rails) since the last reading."""

    def __init__(self, root: Path = Path("/")) -> None:
        from edge_agent.telemetry import EnergyMeter, TegrastatsReader

        self.root = root
        self.meter = EnergyMeter(root)
        self.tegrastats = TegrastatsReader(root)
        """Power rails from tegrastats where sysfs has none (started with the app)."""
        self.rows = 0  # images inferred so far (the batcher's hook adds to it)
        self._rows_seen = 0

    def read(self) -> dict[str, Any]:
        from edge_agent.telemetry import snapshot

        rows, self._rows_seen = self.rows - self._rows_seen, self.rows
        energy: dict[str, Any] = {"source": self.meter.source, "inferences": self.rows}
        if self.meter.available:
            energy["joules_total"] = self.meter.total_joules()
            energy["joules_per_inference"] = self.meter.joules_per_inference(rows)
        line = self.tegrastats.latest()
        return {**snapshot(self.root, tegrastats_line=line), "energy": energy}


def serve(root_path: Path, config: AgentConfig, log: Log = print) -> None:
    """Load the root and serve it with uvicorn until interrupted (TLS when configured)."""
    import uvicorn

    from edge_agent.service.memory import tune_allocator

    tune_allocator()  # uploads' buffers go back to the system once answered
    # the event loop waits at most this long for the GIL while an image thread runs Python
    # (5 ms by default): health checks and refusals stay quick beside camera-size decodes
    sys.setswitchinterval(GIL_SWITCH_S)
    raise_open_files_limit(log)  # before load_agent: the connection limit follows it
    scheme = "https" if config.tls else "http"
    server: uvicorn.Server | None = None

    refused: list[str] = []

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    def on_refused(reason: str) -> None:  # the served slot failed a re-check while serving
        refused.append(reason)
        if config.refused_restart_s > 0:
            log(f"exiting in {config.refused_restart_s:g} s so the agent starts on a verified slot")
            threading.Timer(config.refused_restart_s, stop).start()

    def load(note: Log) -> LoadedAgent:
        agent = load_agent(root_path, config, note)
        if agent.watch is not None:
            agent.watch.on_refused = on_refused
        info = agent.served.info
        log(f"serving {info.name} v{info.version} ({info.backend} {info.precision})")
        return agent

    # listening from the start: live, and not ready with progress while the model loads
    starting = StartingApp(load, stop, log)
    log(f"listening on {scheme}://{config.host}:{config.port}; loading the model")
    server = uvicorn.Server(
        uvicorn.Config(
            starting,
            host=config.host,
            port=config.port,
            ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
            ssl_keyfile=str(config.tls_key) if config.tls_key else None,
            log_level=config.log_level,
            access_log=False,
            proxy_headers=False,
            http=http_protocol(),  # admission, deadlines, infer (edge_agent.service.protocol)
            server_header=False,  # nothing to gain from naming the server, a header less per reply
        )
    )
    server.run()
    if starting.error is not None:
        raise starting.error
    if refused and config.refused_restart_s > 0:  # non-zero: the supervisor starts it again
        raise RuntimeError(f"{refused[0]}; exited so the supervisor starts the agent again")


__all__ = ["LoadedAgent", "inline_batches", "load_agent", "serve"]
