"""The systemd unit ``fovea flash`` writes: resource limits from the service spec."""

from __future__ import annotations

import pytest

from deploy.flash import ServiceSpec, render_unit


def _spec(**change: object) -> ServiceSpec:
    return ServiceSpec("fovea-agent", ("fovea-agent", "serve"), "/var/lib/fovea", "/opt/fovea",
                       **change)  # type: ignore[arg-type]  # fmt: skip


def _settings(unit: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)


def test_unit_sets_open_files_tasks_and_memory_limits_by_default() -> None:
    service = _settings(render_unit(_spec()))
    assert service["LimitNOFILE"] == "65536"
    assert service["TasksMax"] == "512"
    assert (service["MemoryHigh"], service["MemoryMax"]) == ("75%", "90%")


def test_unit_limits_follow_the_spec() -> None:
    spec = _spec(open_files=4096, tasks_max=64, memory_high="3G", memory_max="infinity")
    service = _settings(render_unit(spec))
    assert (service["LimitNOFILE"], service["TasksMax"]) == ("4096", "64")
    assert (service["MemoryHigh"], service["MemoryMax"]) == ("3G", "infinity")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"memory_max": "lots"}, "memory_max='lots'"),
        ({"memory_high": "3GB"}, "memory_high"),
        ({"open_files": 100}, "open_files must be >= 1024"),
    ],
)
def test_spec_refuses_limits_systemd_would_not_take(change: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        _spec(**change)
