"""The inference worker: a TensorRT engine (or an ONNX Runtime session) in its own process,
under the Python that has the GPU libraries (JetPack 5's Python 3.8), fed by the agent.

The agent (``worker_client.py``) starts it as ``python worker.py --fd N`` with one end of a
Unix socket pair. Messages both ways are a 4-byte little-endian length and a JSON object. Tensors
do not go through the socket: the agent maps one shared-memory file holding the input rows and
each output's rows (float32, 64-byte aligned), writes a batch there and sends ``run``; the worker
runs it and writes the outputs in place.

Operations (each answered ``{"ok": true, ...}`` or ``{"error": "..."}``; ``load`` may first send
``{"progress": "..."}`` lines while it builds engines):

- ``hello``: the worker's Python, numpy, TensorRT, ONNX Runtime and GPU, each with why it is
  missing.
- ``load``: ``{"kind": "tensorrt", "engines": [{"spec": BuildSpec JSON, "path": ...}]}`` (each
  engine built when its file is missing, then deserialised on its DLA core or the GPU) or
  ``{"kind": "onnxruntime", "model": path, "providers": [[name, {options}]], "threads": n}``,
  both with ``"input"``, ``"outputs"`` ({name: row shape}) and ``"max_batch"``.
- ``map``: ``{"path": shared-memory file, "layout": {tensor: [offset, row shape]}}``.
- ``run``: ``{"n": rows}``.
- ``close``.

It must stay loadable by Python 3.8 with nothing but numpy and the GPU libraries: the standard
library at the top, Fovea's own 3.8-clean modules (``trt_build``, ``trt_run``, ``cuda_buffers``)
imported inside functions. ``make lint`` checks it as Python 3.8.
"""

from __future__ import annotations

import json
import mmap
import os
import platform
import signal
import socket
import struct
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

PROTOCOL = 1
ALIGN = 64
MAX_MESSAGE = 64 << 20
_LENGTH = struct.Struct("<I")
Message = Dict[str, Any]  # typing's: module-level aliases are evaluated, and 3.8 has no dict[...]
Progress = Callable[[str], None]


class WorkerProtocolError(RuntimeError):
    """The other side sent something that is not a message of this protocol, or hung up."""


def send_message(sock: socket.socket, message: Mapping[str, Any]) -> None:
    """Send one length-prefixed JSON message."""
    data = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_message(sock: socket.socket) -> Message | None:
    """The next message, or None when the other side closed the socket between messages."""
    head = _recv_exact(sock, _LENGTH.size)
    if head is None:
        return None
    (size,) = _LENGTH.unpack(head)
    if size > MAX_MESSAGE:
        raise WorkerProtocolError(f"a message of {size} bytes is over the {MAX_MESSAGE} limit")
    body = _recv_exact(sock, size)
    if body is None:
        raise WorkerProtocolError("the socket closed inside a message")
    message = json.loads(body)
    if not isinstance(message, dict):
        raise WorkerProtocolError(f"a message must be a JSON object, not {type(message).__name__}")
    return message


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return None
            raise WorkerProtocolError("the socket closed inside a message")
        got += n
    return bytes(buf)


def tensor_layout(
    rows: Mapping[str, tuple[int, ...]], max_batch: int
) -> tuple[dict[str, list[Any]], int]:
    """Offsets of ``max_batch`` float32 rows of each tensor (64-byte aligned), and the size."""
    layout: dict[str, list[Any]] = {}
    offset = 0
    for name, shape in rows.items():
        layout[name] = [offset, list(shape)]
        size = max_batch * int(np.prod(shape, dtype=np.int64)) * 4
        offset += -(-size // ALIGN) * ALIGN
    return layout, max(offset, ALIGN)


def tensor_views(
    buffer: mmap.mmap, layout: Mapping[str, list[Any]], max_batch: int
) -> dict[str, np.ndarray]:
    """Numpy views (``max_batch`` x row shape, float32) of each tensor in ``buffer``."""
    views = {}
    for name, (offset, shape) in layout.items():
        count = max_batch * int(np.prod(shape, dtype=np.int64))
        flat = np.frombuffer(buffer, np.float32, count=count, offset=int(offset))
        views[name] = flat.reshape((max_batch, *shape))
    return views


def hello() -> Message:
    """What this Python can run: versions, and why TensorRT, ONNX Runtime or a GPU is missing."""
    info: Message = {
        "protocol": PROTOCOL,
        "pid": os.getpid(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import tensorrt as trt

        info["tensorrt"] = str(trt.__version__)
    except Exception as exc:  # ImportError, or a broken install that fails loading its libs
        info["tensorrt"], info["tensorrt_error"] = None, f"{type(exc).__name__}: {exc}"
    try:
        import onnxruntime as ort

        info["onnxruntime"] = str(ort.__version__)
        info["providers"] = list(ort.get_available_providers())
    except Exception as exc:
        info["onnxruntime"], info["onnxruntime_error"] = None, f"{type(exc).__name__}: {exc}"
    from edge_agent.runtime.cuda_buffers import gpu_info

    gpu = gpu_info()
    info["gpu"] = (
        None if gpu is None else {"name": gpu.name, "major": gpu.major, "minor": gpu.minor}
    )
    return info


class _OrtModel:
    """An ONNX Runtime session (JetPack's onnxruntime-gpu build, or the CPU one in tests)."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        chain = [(p, dict(o)) for p, o in request.get("providers") or [] if p in available]
        if request.get("providers") and not chain:
            raise RuntimeError(
                f"none of {[p for p, _ in request['providers']]} is available here "
                f"(ONNX Runtime {ort.__version__} has {sorted(available)})"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(request.get("threads") or 0)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(request["model"]),
            sess_options=opts,
            providers=[p for p, _ in chain] or None,
            provider_options=[o for _, o in chain] or None,
        )
        self.input = str(request["input"])
        self.outputs = list(request["outputs"])
        self.providers = list(self.session.get_providers())

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        arrays = self.session.run(self.outputs, {self.input: images})
        return dict(zip(self.outputs, arrays))

    def close(self) -> None:
        return None


class _TrtModel:
    """TensorRT engines, built from their specs where the cache lacks them, then run."""

    def __init__(self, request: Mapping[str, Any], progress: Progress) -> None:
        import tensorrt as trt

        from edge_agent.runtime.trt_build import BuildSpec, check_version, ensure_engine
        from edge_agent.runtime.trt_run import EngineRunner, EngineSet

        check_version(trt.__version__)
        engines = list(request["engines"])
        runners: list[Any] = []
        try:
            for i, entry in enumerate(engines, 1):
                spec = BuildSpec.from_json(entry["spec"])
                path = Path(entry["path"])
                if not (path.is_file() and path.stat().st_size > 0):
                    progress(
                        f"building the {spec.precision} engine {i} of {len(engines)} "
                        f"(batch {spec.batches[0]}-{spec.batches[2]}); this takes minutes"
                    )
                ensure_engine(trt, spec, path)
                runners.append(EngineRunner(trt, path.read_bytes(), spec.input_name, spec.dla_core))
            self.engines = EngineSet(runners)
        except BaseException:
            for runner in runners:
                runner.close()
            raise
        self.providers = [f"TensorRT {trt.__version__}"]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        return self.engines.run(images)

    def close(self) -> None:
        self.engines.close()


class _Worker:
    """One loaded model and its shared tensors; handles one message at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.model: Any = None
        self.views: dict[str, np.ndarray] = {}
        self.input = ""
        self._buffer: mmap.mmap | None = None

    def handle(self, message: Mapping[str, Any]) -> Message:
        op = message.get("op")
        if op == "run":
            n = int(message["n"])
            outputs = self.model.run(self.views[self.input][:n])
            for name, array in outputs.items():
                self.views[name][:n] = array  # cast to float32 in place
            return {"ok": True}
        if op == "hello":
            return {"ok": True, **hello()}
        if op == "load":
            return self._load(message)
        if op == "map":
            return self._map(message)
        raise ValueError(f"unknown operation {op!r}")

    def _load(self, request: Mapping[str, Any]) -> Message:
        if self.model is not None:
            self.model.close()
            self.model = None

        def progress(text: str) -> None:
            send_message(self.sock, {"progress": text})

        kind = request.get("kind")
        if kind == "tensorrt":
            self.model = _TrtModel(request, progress)
        elif kind == "onnxruntime":
            self.model = _OrtModel(request)
        else:
            raise ValueError(f"unknown model kind {kind!r}: tensorrt or onnxruntime")
        self.input = str(request["input"])
        return {"ok": True, "providers": self.model.providers}

    def _map(self, request: Mapping[str, Any]) -> Message:
        fd = os.open(str(request["path"]), os.O_RDWR)
        try:
            self._buffer = mmap.mmap(fd, int(request["size"]))
        finally:
            os.close(fd)  # the mapping keeps the memory; the agent unlinks the file
        self.views = tensor_views(self._buffer, request["layout"], int(request["max_batch"]))
        return {"ok": True}

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


def serve(sock: socket.socket) -> int:
    """Answer messages until ``close`` or until the agent hangs up (then exit too)."""
    worker = _Worker(sock)
    try:
        while True:
            message = recv_message(sock)
            if message is None or message.get("op") == "close":
                return 0
            try:
                reply = worker.handle(message)
            except Exception as exc:  # the agent decides: a failed load, a failed batch
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            send_message(sock, reply)
    except (OSError, WorkerProtocolError):
        return 1  # the agent went away mid-message
    finally:
        worker.close()


def _stub_packages() -> None:
    """Make ``edge_agent.runtime.X`` import this folder's files without running the packages'
    ``__init__`` (which needs the agent's Python 3.11 and its libraries)."""
    runtime = Path(__file__).resolve().parent
    for name, path in (("edge_agent", runtime.parent), ("edge_agent.runtime", runtime)):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module


def main(argv: list[str] | None = None) -> int:
    """``worker.py --fd N``: serve the socket inherited as file descriptor N."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--fd" or not args[1].isdigit():
        print("usage: worker.py --fd N (started by the Fovea agent)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent stops it, not a terminal's ^C
    return serve(socket.socket(fileno=int(args[1])))


if __name__ == "__main__":
    _stub_packages()
    sys.exit(main())
