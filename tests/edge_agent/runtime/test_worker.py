"""The inference worker: its wire protocol, and a real worker process (ONNX Runtime on the CPU
inside, as JetPack's TensorRT would be) behind WorkerBackend: same outputs as in process,
killed or hung it is restarted, and meanwhile the backend says it is unavailable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trt_run import FakeBuffer, FakeEngine, FakeStream, fake_trt

import edge_agent.runtime.trt_build as trt_build
import edge_agent.runtime.trt_run as trt_run
from edge_agent.runtime import (
    BackendError,
    BackendUnavailable,
    WorkerBackend,
    WorkerSettings,
    create_backend,
    golden_check,
    probe_worker,
)
from edge_agent.runtime.worker import (
    ALIGN,
    WorkerProtocolError,
    _TrtModel,
    recv_message,
    send_message,
    tensor_layout,
)
from models import DR_GRADING

SIZE = 32  # the tiny export's input size


def test_messages_round_trip_and_a_clean_hangup_is_none() -> None:
    a, b = socket.socketpair()
    with a, b:
        send_message(a, {"op": "run", "n": 3})
        send_message(a, {"progress": "building 1 of 2 " + "x" * 70_000})
        assert recv_message(b) == {"op": "run", "n": 3}
        assert recv_message(b)["progress"].startswith("building 1 of 2")  # type: ignore[index]
        a.close()
        assert recv_message(b) is None


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (struct.pack("<I", 10) + b'{"op"', "closed inside a message"),
        (struct.pack("<I", 1 << 30), "over the"),
        (struct.pack("<I", 2) + b"[]", "must be a JSON object"),
    ],
)
def test_malformed_messages_are_refused(raw: bytes, error: str) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(raw)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(WorkerProtocolError, match=error):
            recv_message(b)


def test_shared_tensors_are_aligned_and_sized_for_the_largest_batch() -> None:
    layout, size = tensor_layout({"images": (3, 5, 5), "grade_logits": (5,), "q": (1,)}, 7)
    offsets = [offset for offset, _ in layout.values()]
    assert all(o % ALIGN == 0 for o in offsets) and offsets == sorted(offsets)
    assert offsets[1] >= 7 * 75 * 4 and offsets[2] >= offsets[1] + 7 * 5 * 4
    assert size >= offsets[2] + 7 * 4 and size % ALIGN == 0


def _ort_load(model: Path, max_batch: int = 8) -> Any:
    def load(hello: dict[str, Any]) -> dict[str, Any]:
        assert hello["onnxruntime"]  # the worker's own Python reports what it has
        return {
            "kind": "onnxruntime",
            "model": str(model),
            "providers": [["CPUExecutionProvider", {}]],
            "threads": 1,
            "input": "images",
            "outputs": {k: list(v) for k, v in DR_GRADING.output_shapes().items()},
            "max_batch": max_batch,
        }

    return load


def _worker(model: Path, **settings: Any) -> WorkerBackend:
    return WorkerBackend(
        model,
        "fp32",
        image_size=SIZE,
        kind="onnxruntime",
        settings=WorkerSettings(sys.executable, ("onnxruntime",), **settings),
        load=_ort_load(model),
    )


@pytest.fixture
def worker(tiny_export: Path) -> Iterator[WorkerBackend]:
    backend = _worker(tiny_export / "model.fp32.onnx")
    yield backend
    backend.close()


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE)).astype(np.float32)


def test_the_worker_answers_as_the_in_process_backend(
    worker: WorkerBackend, tiny_export: Path
) -> None:
    local = create_backend("onnxruntime", tiny_export / "model.fp32.onnx", "fp32", image_size=SIZE)
    for n in (1, 5, 8):
        x = _images(n, seed=n)
        got, want = worker.infer(x), local.infer(x)
        for name in want.names:
            np.testing.assert_array_equal(got[name], want[name])
    assert worker.kind == "onnxruntime" and worker.unavailable is None
    assert worker.describe()["backend"] == "onnxruntime"
    assert any("worker" in p for p in worker.providers)
    assert golden_check(worker, tiny_export).passed
    with pytest.raises(ValueError, match="exceeds"):
        worker.infer(_images(9))


def _back(worker: WorkerBackend, x: np.ndarray, within: float) -> tuple[float, list[str]]:
    """Seconds until ``worker`` runs ``x`` again, and the unavailable reasons seen meanwhile."""
    t0, seen = time.monotonic(), []
    while time.monotonic() - t0 < within:
        try:
            worker.infer(x)
            return time.monotonic() - t0, seen
        except BackendUnavailable as exc:
            seen.append(str(exc))
            time.sleep(0.05)
    raise AssertionError(f"the worker was not back within {within} s: {seen[-3:]}")


def test_a_killed_worker_is_restarted_and_unavailable_meanwhile(worker: WorkerBackend) -> None:
    x = _images(4)
    before = worker.infer(x)
    pid = worker._proc.pid
    os.kill(pid, signal.SIGKILL)
    _, seen = _back(worker, x, within=10.0)
    assert seen and all("restarting" in s or "hung up" in s or "exited" in s for s in seen)
    assert worker._proc.pid != pid and worker.describe()["worker_restarts"] == 1
    np.testing.assert_array_equal(worker.infer(x).grade_logits, before.grade_logits)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie left behind


def test_a_hung_worker_is_killed_after_the_run_timeout(tiny_export: Path) -> None:
    backend = _worker(tiny_export / "model.fp32.onnx", run_timeout_s=1.0)
    try:
        os.kill(backend._proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailable, match="did not answer 'run' in 1 s"):
            backend.infer(_images(2))
        assert time.monotonic() - t0 < 5
        assert backend.unavailable is not None
        _back(backend, _images(2), within=10.0)
    finally:
        backend.close()


def test_a_model_the_worker_cannot_load_fails_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "model.fp32.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BackendError, match=r"inference worker \(.*\): .*(INVALID|Load|protobuf)"):
        _worker(bad)


def test_a_missing_python_is_a_clear_error(tiny_export: Path) -> None:
    with pytest.raises(BackendError, match="cannot start the inference worker with /nonexistent"):
        WorkerBackend(
            tiny_export,
            "fp32",
            image_size=SIZE,
            kind="onnxruntime",
            settings=WorkerSettings("/nonexistent/python3.8"),
            load=_ort_load(tiny_export / "model.fp32.onnx"),
        )


def test_probe_reports_what_the_workers_python_lacks() -> None:
    hello = probe_worker(sys.executable)
    assert hello["python"] == ".".join(map(str, sys.version_info[:3]))
    assert hello["onnxruntime"] and "CPUExecutionProvider" in hello["providers"]
    if hello["tensorrt"] is None:
        assert "tensorrt" in hello["tensorrt_error"]


def test_the_worker_exits_when_the_agent_hangs_up(tmp_path: Path) -> None:
    from edge_agent.runtime.worker_client import WORKER_FILE

    parent, child = socket.socketpair()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # -I ignores it: nothing of Fovea leaks in
    proc = subprocess.Popen(
        [sys.executable, "-I", str(WORKER_FILE), "--fd", str(child.fileno())],
        pass_fds=(child.fileno(),),
        env=env,
    )
    child.close()
    send_message(parent, {"op": "hello"})
    assert recv_message(parent)["ok"] is True  # type: ignore[index]
    parent.close()
    assert proc.wait(timeout=10) == 0


def test_the_worker_runs_without_the_agents_packages(tmp_path: Path) -> None:
    """Loaded as JetPack's Python would: no ``models``, pydantic or FastAPI imported."""
    from edge_agent.runtime.worker_client import WORKER_FILE

    code = (
        "import runpy, sys, json\n"
        f"sys.argv = ['worker.py', '--help']\n"
        f"try:\n    runpy.run_path({str(WORKER_FILE)!r}, run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "from edge_agent.runtime import trt_run, trt_build, cuda_buffers\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('models', 'pydantic', 'fastapi', 'onnxruntime', 'server'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert "usage: worker.py --fd N" in out.stderr


def test_the_worker_builds_missing_engines_with_progress_then_runs_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The worker's TensorRT side, in this process with the fake TensorRT of test_trt_run: a
    DLA step's two static engines, one cached and one built (with a progress line)."""
    engines = {1: FakeEngine((1, 1)), 8: FakeEngine((8, 8))}
    trt = fake_trt(None)

    class Runtime(trt.Runtime):  # type: ignore[name-defined,misc]
        def deserialize_cuda_engine(self, plan: bytes) -> Any:
            self.core_at_deserialise = self.DLA_core
            return engines[int(plan)]

    trt.Runtime = Runtime  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_run, "DeviceBuffer", FakeBuffer)
    monkeypatch.setattr(trt_run, "Stream", FakeStream)
    monkeypatch.setattr(trt_run, "cuda_context", contextlib.nullcontext)
    built: list[int] = []

    def ensure(trt_module: Any, spec: trt_build.BuildSpec, path: Path) -> Path:
        if not path.is_file():
            built.append(spec.batches[0])
            path.write_bytes(str(spec.batches[0]).encode())
        return path

    monkeypatch.setattr(trt_build, "ensure_engine", ensure)
    specs = [
        trt_build.BuildSpec(onnx=tmp_path / "model.int8.onnx", generation="8.5",
                            input_name="images", input_shape=(3, 4, 4), batches=(b, b, b),
                            workspace_mb=64, precision="int8", dla_core=0)
        for b in (1, 8)
    ]  # fmt: skip
    (tmp_path / "b1.plan").write_bytes(b"1")  # cached already
    request = {
        "kind": "tensorrt",
        "engines": [{"spec": s.to_json(), "path": str(tmp_path / f"b{s.batches[0]}.plan")}
                    for s in specs],
        "input": "images",
    }  # fmt: skip
    progress: list[str] = []
    model = _TrtModel(request, progress.append)
    assert built == [8] and len(progress) == 1 and "int8 engine 2 of 2" in progress[0]
    assert [Runtime.made[-2].core_at_deserialise, Runtime.made[-1].core_at_deserialise] == [0, 0]
    out = model.run(np.ones((3, 3, 4, 4), np.float32))
    assert out["grade_logits"].shape == (3, 5) and model.providers == ["TensorRT 8.5.2.2"]
    model.close()


def _python38() -> str | None:
    """A Python 3.8 with numpy and onnxruntime (``FOVEA_PY38``, else ``python3.8`` on PATH)."""
    import shutil

    found = os.environ.get("FOVEA_PY38") or shutil.which("python3.8")
    if not found:
        return None
    probe = subprocess.run([found, "-c", "import numpy, onnxruntime"], capture_output=True)
    return found if probe.returncode == 0 else None


PY38 = _python38()


@pytest.mark.skipif(
    PY38 is None,
    reason="no Python 3.8 with numpy and onnxruntime here (JetPack 5's Python; FOVEA_PY38=PATH)",
)
def test_the_worker_runs_under_python_38(tiny_export: Path) -> None:
    """The worker under a real 3.8 (as on JetPack 5), its outputs those of the agent's own."""
    assert PY38 is not None
    model = tiny_export / "model.fp32.onnx"
    backend = WorkerBackend(
        model,
        "fp32",
        image_size=SIZE,
        kind="onnxruntime",
        settings=WorkerSettings(PY38, ("onnxruntime",)),
        load=_ort_load(model),
    )
    try:
        assert backend.hello["python"].startswith("3.8.")
        local = create_backend("onnxruntime", model, "fp32", image_size=SIZE)
        x = _images(6, seed=3)
        np.testing.assert_allclose(
            backend.infer(x).grade_logits, local.infer(x).grade_logits, atol=1e-5
        )
    finally:
        backend.close()
