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


def decode_request(body: bytes, header_length: int | None) -> InferRequest:
    """Parse an infer request body; ``header_length`` is the Inference-Header-Content-Length.

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
    header = memoryview(body)[:header_length].tobytes()
    if header_length <= _CACHED_HEADER_BYTES and b'"data"' not in header:
        spec = _parse_small_header(header)  # binary requests repeat the same header
    else:
        spec = _parse_header(header)
    blob = memoryview(body)[header_length:]
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
    binary_default = (spec.parameters or {}).get("binary_data_output") is True
    outputs = None
    if spec.outputs is not None:
        outputs = tuple(
            RequestedOutput(
                o.name, bool((o.parameters or {}).get("binary_data", binary_default) is True)
            )
            for o in spec.outputs
        )
        for o in spec.outputs:
            if "classification" in (o.parameters or {}):
                raise ApiError(
                    400, f"output {o.name!r}: the classification extension is not supported"
                )
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
    parts: list[str] = []
    chunks: list[bytes] = []
    for out in wanted:
        array = results.get(out.name)
        if array is None:
            raise ApiError(400, f"unknown output {out.name!r}; the model has {sorted(results)}")
        shape = ",".join(map(str, array.shape))
        head = f'{{"name":{_quoted(out.name)},"datatype":"{datatype_of(array)}","shape":[{shape}]'
        if out.binary:
            data = _little_endian_bytes(array)
            parts.append(f'{head},"parameters":{{"binary_data_size":{len(data)}}}}}')
            chunks.append(data)
        else:
            parts.append(f'{head},"data":{json.dumps(array.ravel().tolist())}}}')
    rid = "" if request.id is None else f',"id":{json.dumps(request.id)}'
    header = (
        f'{{"model_name":{_quoted(model_name)},"model_version":{_quoted(model_version)}{rid},'
        f'"outputs":[{",".join(parts)}]}}'
    ).encode()
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


__all__ = [
    "DTYPES",
    "InferRequest",
    "RequestedOutput",
    "datatype_of",
    "decode_request",
    "encode_response",
]
