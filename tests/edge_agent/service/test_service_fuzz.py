"""Property-based request bodies: the agent answers 2xx or 4xx with a JSON error, never 5xx."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SIZE = 32
_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["images", "x", ""]),
        "shape": st.lists(st.integers(-2, 40), max_size=5) | st.just([1, 3, SIZE, SIZE]),
        "datatype": st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "BYTES", "fp32"]),
    },
    optional={
        "data": st.lists(st.floats(allow_nan=True) | st.integers(), max_size=50) | json_values,
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "x"]), st.integers(-5, 100000) | json_values
        ),
    },
)
request = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=3)},
    optional={
        "id": json_values,
        "outputs": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["grade_logits", "gradable_logit", "zz"])},
                optional={"parameters": st.dictionaries(st.just("binary_data"), json_values)},
            ),
            max_size=3,
        ),
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "q"]), json_values),
    },
)


def _check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert isinstance(response.json()["error"], str)


@_SETTINGS
@given(body=request, tail=st.binary(max_size=64), header_cut=st.integers(-3, 3) | st.none())
def test_infer_bodies_never_500(
    client: TestClient, agent: Any, body: Any, tail: bytes, header_cut: int | None
) -> None:
    head = json.dumps(body).encode()
    headers = agent.headers()
    if header_cut is not None:
        headers["Inference-Header-Content-Length"] = str(len(head) + header_cut)
    r = client.post("/v2/models/fovea-student/infer", content=head + tail, headers=headers)
    _check(r)


@_SETTINGS
@given(raw=st.binary(max_size=300))
def test_raw_bytes_never_500(client: TestClient, agent: Any, raw: bytes) -> None:
    _check(client.post("/v2/models/fovea-student/infer", content=raw, headers=agent.headers()))
    _check(client.post("/v1/cases/abc/review", content=raw, headers=agent.headers("clinician")))


@_SETTINGS
@given(
    data=st.binary(max_size=400),
    field=st.sampled_from(["left", "right", "image", "other"]),
    ctype=st.sampled_from(["image/png", "image/jpeg", "application/dicom", "text/plain", ""]),
)
def test_uploads_never_500(
    client: TestClient, agent: Any, data: bytes, field: str, ctype: str
) -> None:
    r = client.post("/v1/screen", files={field: ("f", data, ctype)}, headers=agent.headers())
    _check(r)


@_SETTINGS
@given(
    review=st.dictionaries(st.sampled_from(["grade", "gradable", "comment", "eye"]), json_values)
)
def test_review_bodies_never_500(client: TestClient, agent: Any, review: Any) -> None:
    body = json.dumps(review).encode()  # NaN and Infinity included, as some clients send them
    r = client.post("/v1/cases/abc/review", content=body, headers=agent.headers("clinician"))
    _check(r)
