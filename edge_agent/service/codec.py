"""KServe v2 inference requests and responses: JSON tensors and the binary-tensor extension."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from edge_agent.service.errors import ApiError

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""KServe datatypes this agent can carry, with their little-endian numpy dtypes (no BYTES)."""

_ACCEPTS_KINDS = {"b": {"b"}, "u": {"u", "i"}, "i": {"u", "i"}, "f": {"u", "i", "f"}}
MAX_ELEMENTS = 1 << 26
"""No tensor may declare more elements than this (a bound on what a shape can ask for)."""

Param = StrictBool | StrictInt | StrictFloat | StrictStr


class _TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=256)
    shape: list[StrictInt] = Field(max_length=8)
    datatype: StrictStr
    parameters: dict[str, Param] | None = None
    data: Any = None


class _OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=256)
    parameters: dict[str, Param] | None = None


class _RequestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = Field(None, max_length=256)
    parameters: dict[str, Param] | None = None
    inputs: list[_TensorSpec] = Field(min_length=1, max_length=16)
    outputs: list[_OutputSpec] | None = Field(None, max_length=16)


@dataclass(frozen=True)
class RequestedOutput:
    """One output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: named input arrays and the outputs to send back."""

    id: str | None
    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: tuple[RequestedOutput, ...] | None
    binary_default: bool


def _error_text(exc: PydanticValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"invalid inference request: field {where!r}: {first['msg']}"


def _element_count(spec: _TensorSpec) -> int:
    if any(d < 0 for d in spec.shape):
        raise ApiError(400, f"input {spec.name!r}: shape {spec.shape} has a negative dimension")
    count = math.prod(spec.shape)
    if count > MAX_ELEMENTS:
        raise ApiError(413, f"input {spec.name!r}: shape {spec.shape} is too large")
    return count


def _dtype(spec: _TensorSpec) -> np.dtype[Any]:
    dtype = DTYPES.get(spec.datatype)
    if dtype is None:
        raise ApiError(
            400,
            f"input {spec.name!r}: datatype {spec.datatype!r} is not supported; "
            f"use one of {sorted(DTYPES)}",
        )
    return dtype


def _from_json_data(spec: _TensorSpec, count: int) -> np.ndarray:
    dtype = _dtype(spec)
    if spec.data is None:
        raise ApiError(400, f"input {spec.name!r} has neither 'data' nor 'binary_data_size'")
    if not isinstance(spec.data, list):
        raise ApiError(400, f"input {spec.name!r}: 'data' must be a JSON array")
    try:
        raw = np.asarray(spec.data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise ApiError(400, f"input {spec.name!r}: 'data' is not a regular array") from None
    if raw.dtype.kind not in _ACCEPTS_KINDS.get(dtype.kind, set()) and not (
        raw.size == 0 and raw.dtype.kind == "f"
    ):
        raise ApiError(
            400, f"input {spec.name!r}: 'data' holds values that are not {spec.datatype}"
        )
    if raw.size != count:
        raise ApiError(
            400,
            f"input {spec.name!r}: 'data' has {raw.size} elements, shape {spec.shape} "
            f"needs {count}",
        )
    with np.errstate(all="ignore"):
        array = raw.astype(dtype).reshape(spec.shape)
    if dtype.kind in "iu" and not np.array_equal(array, raw.reshape(spec.shape)):
        raise ApiError(400, f"input {spec.name!r}: values out of range for {spec.datatype}")
    return array


def _from_binary(spec: _TensorSpec, count: int, blob: memoryview, size: int) -> np.ndarray:
    dtype = _dtype(spec)
    if spec.data is not None:
        raise ApiError(400, f"input {spec.name!r} has both 'data' and 'binary_data_size'")
    if size != count * dtype.itemsize:
        raise ApiError(
            400,
            f"input {spec.name!r}: binary_data_size {size} does not match shape {spec.shape} "
            f"of {spec.datatype} ({count * dtype.itemsize} bytes)",
        )
    return np.frombuffer(blob, dtype=dtype, count=count).reshape(spec.shape)


def _parse_header(header: bytes) -> _RequestSpec:
    try:
        raw = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"the request header is not valid JSON: {exc}") from None
    try:
        return _RequestSpec.model_validate(raw)
    except PydanticValidationError as exc:
        raise ApiError(400, _error_text(exc)) from None


_CACHED_HEADER_BYTES = 2048
_parse_small_header = functools.lru_cache(maxsize=256)(_parse_header)


def _requested_outputs(spec: _RequestSpec) -> tuple[tuple[RequestedOutput, ...] | None, bool]:
    binary_default = (spec.parameters or {}).get("binary_data_output") is True
    if spec.outputs is None:
        return None, binary_default
    for o in spec.outputs:
        if "classification" in (o.parameters or {}):
            raise ApiError(400, f"output {o.name!r}: the classification extension is not supported")
    outputs = tuple(
        RequestedOutput(
            o.name, bool((o.parameters or {}).get("binary_data", binary_default) is True)
        )
        for o in spec.outputs
    )
    return outputs, binary_default


_PlannedTensor = tuple[str, np.dtype[Any], tuple[int, ...], int, int]
"""One binary input: name, dtype, shape, element count, bytes."""


@dataclass(frozen=True)
class _BinaryPlan:
    """A validated all-binary header: how to cut any body that carries it into arrays."""

    id: str | None
    tensors: tuple[_PlannedTensor, ...]
    nbytes: int
    datatypes: dict[str, str]
    outputs: tuple[RequestedOutput, ...] | None
    binary_default: bool

    def request(self, blob: memoryview) -> InferRequest:
        """The request for ``blob``, the ``nbytes`` bytes after the header."""
        inputs: dict[str, np.ndarray] = {}
        offset = 0
        for name, dtype, shape, count, size in self.tensors:
            inputs[name] = np.frombuffer(blob, dtype, count, offset).reshape(shape)
            offset += size
        return InferRequest(self.id, inputs, self.datatypes, self.outputs, self.binary_default)


@functools.lru_cache(maxsize=256)
def _binary_plan(header: bytes) -> _BinaryPlan | None:
    """The plan for a header whose inputs are all binary; None when any carries JSON data."""
    spec = _parse_header(header)
    tensors: list[_PlannedTensor] = []
    nbytes = 0
    for tensor in spec.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None or type(size) is not int or size < 0:
            return None  # the general path explains what is wrong
        if any(t[0] == tensor.name for t in tensors):
            raise ApiError(400, f"input {tensor.name!r} appears more than once")
        count = _element_count(tensor)
        dtype = _dtype(tensor)
        if tensor.data is not None or size != count * dtype.itemsize:
            return None
        tensors.append((tensor.name, dtype, tuple(tensor.shape), count, size))
        nbytes += size
    outputs, binary_default = _requested_outputs(spec)
    datatypes = {t.name: t.datatype for t in spec.inputs}
    return _BinaryPlan(spec.id, tuple(tensors), nbytes, datatypes, outputs, binary_default)


def decode_request(body: bytes | bytearray, header_length: int | None) -> InferRequest:
    """Parse an infer request body; ``header_length`` is the Inference-Header-Content-Length.

    Binary tensors become numpy views of ``body`` (writable when it is a bytearray).

    Raises ApiError (4xx) for anything malformed: bad JSON, unknown fields, a shape that
    does not match the data, binary sizes that do not add up, unsupported datatypes.
    """
    if header_length is None:
        header_length = len(body)
    elif not 0 < header_length <= len(body):
        raise ApiError(
            400,
            f"Inference-Header-Content-Length {header_length} is outside the body "
            f"({len(body)} bytes)",
        )
    header = bytes(body[:header_length])  # hashable, for the caches below
    blob = memoryview(body)[header_length:]
    if header_length <= _CACHED_HEADER_BYTES and b'"data"' not in header:
        # binary requests repeat the same header: validate it once, then only cut the body
        plan = _binary_plan(header)
        if plan is not None and plan.nbytes == len(blob):
            return plan.request(blob)
        spec = _parse_small_header(header)
    else:
        spec = _parse_header(header)
    return _decode(spec, blob)


def _decode(spec: _RequestSpec, blob: memoryview) -> InferRequest:
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    for tensor in spec.inputs:
        if tensor.name in inputs:
            raise ApiError(400, f"input {tensor.name!r} appears more than once")
        count = _element_count(tensor)
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            inputs[tensor.name] = _from_json_data(tensor, count)
        else:
            if type(size) is not int or size < 0 or offset + size > len(blob):
                raise ApiError(
                    400,
                    f"input {tensor.name!r}: binary_data_size {size!r} does not fit the "
                    f"{len(blob)} bytes after the header",
                )
            inputs[tensor.name] = _from_binary(tensor, count, blob[offset : offset + size], size)
            offset += size
        datatypes[tensor.name] = tensor.datatype
    if offset != len(blob):
        raise ApiError(
            400, f"{len(blob) - offset} bytes after the header belong to no input's binary data"
        )
    outputs, binary_default = _requested_outputs(spec)
    return InferRequest(spec.id, inputs, datatypes, outputs, binary_default)


_NAMES = {dtype: name for name, dtype in DTYPES.items()}


def datatype_of(array: np.ndarray) -> str:
    """The KServe datatype name of a numpy array."""
    name = _NAMES.get(array.dtype)
    if name is not None:
        return name
    for name, dtype in DTYPES.items():
        if array.dtype.kind == dtype.kind and array.itemsize == dtype.itemsize:
            return name
    raise ValueError(f"no KServe datatype for numpy dtype {array.dtype}")


@functools.lru_cache(maxsize=256)
def _quoted(text: str) -> str:
    return json.dumps(text)


def _little_endian_bytes(array: np.ndarray) -> bytes:
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


@dataclass(frozen=True)
class _BinaryLayout:
    """A response header for fixed outputs, split where the request id goes."""

    before_id: bytes
    after_id: bytes
    names: tuple[str, ...]


@functools.lru_cache(maxsize=64)
def _binary_layout(
    model_name: str,
    model_version: str,
    wanted: tuple[RequestedOutput, ...],
    shapes: tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...],
) -> _BinaryLayout:
    known = {name: (dtype, shape) for name, dtype, shape in shapes}
    parts = []
    for out in wanted:
        if out.name not in known:
            raise ApiError(400, f"unknown output {out.name!r}; the model has {sorted(known)}")
        dtype, shape = known[out.name]
        size = dtype.itemsize * math.prod(shape)
        parts.append(
            f'{{"name":{_quoted(out.name)},"datatype":"{datatype_of(np.empty(0, dtype))}",'
            f'"shape":[{",".join(map(str, shape))}],"parameters":{{"binary_data_size":{size}}}}}'
        )
    before = f'{{"model_name":{_quoted(model_name)},"model_version":{_quoted(model_version)}'
    after = f',"outputs":[{",".join(parts)}]}}'
    return _BinaryLayout(before.encode(), after.encode(), tuple(out.name for out in wanted))


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    results: dict[str, np.ndarray],
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, its JSON header length.

    Raises ApiError(400) when the request named an output the model does not have.
    """
    wanted = request.outputs or tuple(
        RequestedOutput(name, request.binary_default) for name in results
    )
    rid = "" if request.id is None else f',"id":{json.dumps(request.id)}'
    if all(out.binary for out in wanted):
        # the common case: the header only depends on output shapes, so it is built once
        shapes = tuple((name, a.dtype, a.shape) for name, a in results.items())
        layout = _binary_layout(model_name, model_version, wanted, shapes)
        header = b"".join((layout.before_id, rid.encode(), layout.after_id))
        chunks = [_little_endian_bytes(results[name]) for name in layout.names]
        return b"".join([header, *chunks]), len(header)
    parts: list[str] = []
    binary: list[bytes] = []
    for out in wanted:
        array = results.get(out.name)
        if array is None:
            raise ApiError(400, f"unknown output {out.name!r}; the model has {sorted(results)}")
        shape = ",".join(map(str, array.shape))
        head = f'{{"name":{_quoted(out.name)},"datatype":"{datatype_of(array)}","shape":[{shape}]'
        if out.binary:
            data = _little_endian_bytes(array)
            parts.append(f'{head},"parameters":{{"binary_data_size":{len(data)}}}}}')
            binary.append(data)
        else:
            parts.append(f'{head},"data":{json.dumps(array.ravel().tolist())}}}')
    header = (
        f'{{"model_name":{_quoted(model_name)},"model_version":{_quoted(model_version)}{rid},'
        f'"outputs":[{",".join(parts)}]}}'
    ).encode()
    if not binary:
        return header, None
    return b"".join([header, *binary]), len(header)


__all__ = [
    "DTYPES",
    "InferRequest",
    "RequestedOutput",
    "datatype_of",
    "decode_request",
    "encode_response",
]
