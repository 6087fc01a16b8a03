import json
from pathlib import Path
from typing import Any

from server.distill import run


def test_search_tries_the_grid_compares_with_no_teacher_and_is_reused(
    tiny_data: Path, tiny_teacher: Path, tmp_path: Path, distill_config: Any
) -> None:
    cfg = distill_config(
        tiny_data,
        tiny_teacher,
        tmp_path,
        train={"epochs": 1, "batch_size": 32, "threads": 1},
        monitor={"enabled": False},
        search={"enabled": True, "temperatures": [2.0, 5.0], "alphas": [0.8], "epochs": 1},
    )
    logs: list[str] = []
    out = run(cfg, log=logs.append)
    search = json.loads((tmp_path / "search.json").read_text())
    assert [(t["temperature"], t["alpha"]) for t in search["trials"]] == [(2.0, 0.8), (5.0, 0.8)]
    assert "accuracy" in search["without_teacher"] and isinstance(search["teacher_helps"], bool)
    chosen = out.metrics["search"]
    resolved = (tmp_path / "config.yaml").read_text()
    assert f"start: {chosen['temperature']}" in resolved and f"start: {chosen['alpha']}" in resolved
    assert [line[:10] for line in logs if line.startswith("search ")][:2] == [
        "search 1/2",
        "search 2/2",
    ]
    assert any("without a teacher" in line for line in logs)
    logs.clear()
    run(cfg, log=logs.append, resume=True)
    assert any("reusing the search" in line for line in logs)
