"""``flash()``: several hosts in parallel, with a progress display and a summary."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from deploy.flash.plan import FlashPlan, FlashTarget, HostResult
from deploy.flash.steps import STEPS, HostFlash, bundle_manifest


async def flash_async(
    targets: Sequence[FlashTarget], plan: FlashPlan, *, console: Console | None = None
) -> list[HostResult]:
    """Flash every target (at most ``plan.parallel`` at once); one failure stops only its host.

    Results come back in the order of ``targets``. Transports are closed at the end.
    """
    names = [t.host for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"the same host is named twice: {names}")
    manifest = bundle_manifest(plan.bundle)
    limit = asyncio.Semaphore(plan.parallel)
    console = console or Console(stderr=True)
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    )  # fmt: skip

    async def one(target: FlashTarget) -> HostResult:
        task = progress.add_task(f"{target.host}: waiting", total=len(STEPS))
        done = 0

        def step(name: str) -> None:
            nonlocal done
            progress.update(task, description=f"{target.host}: {name}", completed=done)
            done += 1

        async with limit:
            try:
                result = await HostFlash(target, plan, manifest, step).run()
            finally:
                await target.transport.close()
        mark = "[green]ok[/green]" if result.ok else "[red]failed[/red]"
        progress.update(task, description=f"{target.host}: {mark}", completed=len(STEPS))
        return result

    with progress:
        return list(await asyncio.gather(*(one(t) for t in targets)))


def flash(
    targets: Sequence[FlashTarget], plan: FlashPlan, *, console: Console | None = None
) -> list[HostResult]:
    """Flash ``targets`` with ``plan`` (see :func:`flash_async`); returns one result per host."""
    return asyncio.run(flash_async(targets, plan, console=console))


def summary_table(results: Sequence[HostResult]) -> Table:
    """One line per host: status, model, supervisor, URL, time, and the error if any."""
    table = Table(title="fovea flash")
    for col in ("host", "status", "model", "agent", "supervisor", "url", "time", "note"):
        table.add_column(col, overflow="fold")
    colours = {"flashed": "green", "unchanged": "cyan", "failed": "red"}
    for r in results:
        model = f"{r.model} v{r.model_version}" if r.model else "-"
        note = r.error or ("fleet token issued" if r.token else "")
        table.add_row(
            r.host, f"[{colours[r.status]}]{r.status}[/]", model, r.agent_version or "-",
            r.supervisor or "-", r.url or "-", f"{r.seconds:.1f} s", note,
        )  # fmt: skip
    return table
