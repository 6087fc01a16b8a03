"""What the agent asks of the inference worker for TensorRT: engines named as the in-process
backend names them, one per static DLA batch, and why TensorRT is skipped when the worker's
Python cannot host it (missing, too old, no GPU for the service user)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import edge_agent.runtime.hosted as hosted
from edge_agent.runtime import BuildSpec, BundleInfo, WorkerSettings, engine_cache_key
from edge_agent.runtime.cuda_buffers import GpuInfo

XAVIER = {"name": "Xavier", "major": 7, "minor": 2}


def _hello(**fields: Any) -> dict[str, Any]:
    return {"ok": True, "python": "3.8.10", "tensorrt": "8.5.2.2", "gpu": XAVIER, **fields}


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        (_hello(tensorrt=None, tensorrt_error="ModuleNotFoundError: tensorrt"),
         "TensorRT not installed for /usr/bin/python3 (ModuleNotFoundError"),
        (_hello(tensorrt="8.4.1.5"), "upgrade to JetPack 5.1.x"),
        (_hello(gpu=None), "service user must be in the video group"),
    ],
)  # fmt: skip
def test_tensorrt_is_skipped_with_the_workers_reason(
    monkeypatch: pytest.MonkeyPatch, hello: dict[str, Any], reason: str
) -> None:
    monkeypatch.setattr(hosted, "worker_hello", lambda python: hello)
    skip = hosted.tensorrt_skip(WorkerSettings("/usr/bin/python3"))
    assert skip is not None and skip.startswith("skipped:") and reason in skip
    monkeypatch.setattr(hosted, "worker_hello", lambda python: _hello())
    assert hosted.tensorrt_skip(WorkerSettings("/usr/bin/python3")) is None


def test_the_load_message_names_engines_as_the_backend_does(tiny_export: Path) -> None:
    info = BundleInfo.from_export_dir(tiny_export, digest="ab" * 32)
    load = hosted._tensorrt_load("fp16", tiny_export, info, Path("/cache"), _hello())
    (engine,) = load["engines"]
    key = engine_cache_key("ab" * 32, GpuInfo("Xavier", 7, 2), "8.5.2.2", "fp16")
    assert engine["path"] == f"/cache/{key}.plan"
    spec = BuildSpec.from_json(json.loads(json.dumps(engine["spec"])))
    assert spec.onnx == tiny_export / "model.fp32.onnx" and "FP16" in spec.builder_flags()
    assert load["max_batch"] == spec.batches[2] and load["input"] == "images"
    assert set(load["outputs"]) == {"grade_logits", "gradable_logit"}


def test_a_dla_step_loads_one_static_engine_per_batch(tiny_export: Path) -> None:
    recipe = json.loads((tiny_export / "recipe.json").read_text())
    info = BundleInfo.from_export_dir(tiny_export, digest="cd" * 32)
    info = BundleInfo(**{**info.__dict__, "recipe": {**recipe, "dla_core": 0,
                                                       "dla_batches": [1, 8]}})  # fmt: skip
    load = hosted._tensorrt_load("int8", tiny_export, info, Path("/cache"), _hello())
    specs = [BuildSpec.from_json(e["spec"]) for e in load["engines"]]
    assert [s.batches for s in specs] == [(1, 1, 1), (8, 8, 8)]
    assert all(s.dla_core == 0 for s in specs) and load["max_batch"] == 8
    assert [Path(e["path"]).name.split("-")[-2:] for e in load["engines"]] == [
        ["dla0", "b1.plan"],
        ["dla0", "b8.plan"],
    ]
