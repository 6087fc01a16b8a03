"""The app in-process: KServe endpoints, auth, limits, errors, screening, review, status."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

SIZE = 32
URL = "/v2/models/fovea-student/infer"


def _binary_request(images: np.ndarray, binary_out: bool = True) -> tuple[bytes, dict[str, str]]:
    raw = images.astype("<f4").tobytes()
    head = {
        "inputs": [
            {
                "name": "images",
                "shape": list(images.shape),
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": binary_out},
    }
    header = json.dumps(head).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _split_binary(response: Any) -> dict[str, np.ndarray]:
    n = int(response.headers["inference-header-content-length"])
    head = json.loads(response.content[:n])
    out, offset = {}, n
    for o in head["outputs"]:
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(response.content[offset : offset + size], "<f4").reshape(
            o["shape"]
        )
        offset += size
    assert offset == len(response.content)
    return out


def test_health_needs_no_token_but_metadata_does(client: TestClient, agent: Any) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").json() == {"ready": True}
    r = client.get("/v2/models/fovea-student")
    assert r.status_code == 401 and "bearer" in r.json()["error"].lower()
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v2/models/fovea-student", headers=agent.headers())
    meta = r.json()
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]
    assert [o["name"] for o in meta["outputs"]] == ["grade_logits", "gradable_logit"]
    assert meta["versions"] == ["3"]
    assert client.get("/v2/models/other", headers=agent.headers()).status_code == 404
    assert client.get("/v2/models/fovea-student/ready", headers=agent.headers()).status_code == 200
    server = client.get("/v2", headers=agent.headers()).json()
    assert "binary_tensor_data" in server["extensions"]


def test_json_infer_matches_the_model(client: TestClient, agent: Any, expected: Any) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    body = {
        "id": "r1",
        "inputs": [
            {"name": "images", "shape": [2, 3, SIZE, SIZE], "datatype": "FP32", "data": x.tolist()}
        ],
    }
    r = client.post(URL, json=body, headers=agent.headers())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == "fovea-student"
    want = expected(x)
    got = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in out["outputs"]}
    np.testing.assert_allclose(got["grade_logits"], want["grade_logits"], rtol=1e-6)
    assert got["gradable_logit"].shape == (2, 1)


def test_binary_infer_round_trips_and_gzip(client: TestClient, agent: Any, expected: Any) -> None:
    x = np.random.default_rng(1).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    body, headers = _binary_request(x)
    r = client.post(URL, content=body, headers={**headers, **agent.headers()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    out = _split_binary(r)
    np.testing.assert_array_equal(out["grade_logits"], expected(x)["grade_logits"])
    y = x + 1.0  # same header bytes (parsed once, cached), different tensor
    body_y, _ = _binary_request(y)
    r = client.post(URL, content=body_y, headers={**headers, **agent.headers()})
    np.testing.assert_array_equal(_split_binary(r)["grade_logits"], expected(y)["grade_logits"])
    zipped = gzip.compress(body)
    r = client.post(
        "/v2/models/fovea-student/versions/3/infer",
        content=zipped,
        headers={**headers, **agent.headers(), "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(_split_binary(r)["gradable_logit"], np.full((3, 1), 4.0))


def _one_row_json(**change: Any) -> dict[str, Any]:
    tensor = {
        "name": "images",
        "shape": [1, 3, SIZE, SIZE],
        "datatype": "FP32",
        "data": [0.5] * (3 * SIZE * SIZE),
    }
    tensor.update(change)
    return {"inputs": [tensor]}


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[]", 400, "invalid inference request"),
        (json.dumps({"inputs": []}).encode(), 400, "inputs"),
        (json.dumps(_one_row_json(name="pixels")).encode(), 400, "named 'images'"),
        (json.dumps(_one_row_json(datatype="FP64")).encode(), 400, "must be FP32"),
        (json.dumps(_one_row_json(datatype="BYTES")).encode(), 400, "not supported"),
        (json.dumps(_one_row_json(shape=[1, 3, SIZE, SIZE + 1])).encode(), 400, "elements"),
        (json.dumps(_one_row_json(shape=[3, SIZE, SIZE])).encode(), 400, "must have shape"),
        (json.dumps(_one_row_json(data=["a"] * (3 * SIZE * SIZE))).encode(), 400, "not FP32"),
        (json.dumps(_one_row_json(data=[float("nan")] * (3 * SIZE * SIZE))).encode(), 400, "NaN"),
        (
            json.dumps(
                _one_row_json(shape=[9, 3, SIZE, SIZE], data=[0.0] * (9 * 3 * SIZE * SIZE))
            ).encode(),
            413,
            "at most 8",
        ),
        (json.dumps({**_one_row_json(), "extra": 1}).encode(), 400, "extra"),
        (
            json.dumps({**_one_row_json(), "outputs": [{"name": "nope"}]}).encode(),
            400,
            "unknown output",
        ),
    ],
)
def test_bad_infer_requests_get_4xx_json(
    client: TestClient, agent: Any, body: bytes, status: int, phrase: str
) -> None:
    r = client.post(
        URL, content=body, headers={**agent.headers(), "Content-Type": "application/json"}
    )
    assert r.status_code == status, r.text
    assert phrase.lower() in r.json()["error"].lower()


def test_bad_binary_framing_and_sizes(client: TestClient, agent: Any) -> None:
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    body, headers = _binary_request(x)
    for header_len, extra, phrase in [
        ("abc", b"", "integer"),
        (str(len(body) + 5), b"", "outside the body"),
        (headers["Inference-Header-Content-Length"], b"xx", "belong to no input"),
        (str(int(headers["Inference-Header-Content-Length"]) - 1), b"", "not valid json"),
    ]:
        r = client.post(
            URL,
            content=body + extra,
            headers={**agent.headers(), "Inference-Header-Content-Length": header_len},
        )
        assert r.status_code == 400, (header_len, r.text)
        assert phrase in r.json()["error"].lower()
    short = body[: len(body) - 4]
    r = client.post(URL, content=short, headers={**agent.headers(), **headers})
    assert r.status_code == 400 and "does not fit" in r.json()["error"]
    r = client.post(
        URL,
        content=gzip.compress(b"x" * (5 << 20)),
        headers={**agent.headers(), "Content-Encoding": "gzip"},
    )
    assert r.status_code == 413
    r = client.post(URL, content=b"x" * (5 << 20), headers=agent.headers())
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = client.post(URL, content=body, headers={**agent.headers(), "Content-Encoding": "br"})
    assert r.status_code == 415
    assert client.get(URL, headers=agent.headers()).status_code in (404, 405)


def test_roles_and_tokens(client: TestClient, agent: Any) -> None:
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    body, headers = _binary_request(x)
    assert client.post(URL, content=body, headers=headers).status_code == 401
    bad = {**headers, "Authorization": "Bearer nope"}
    assert client.post(URL, content=body, headers=bad).status_code == 401
    basic = {**headers, "Authorization": "Basic abc"}
    assert client.post(URL, content=body, headers=basic).status_code == 401
    r = client.post("/v1/cases/x/review", json={"grade": 1}, headers=agent.headers("technician"))
    assert r.status_code == 403 and "clinician" in r.json()["error"]
    r = client.post("/v1/screen", headers=agent.headers("admin"))
    assert r.status_code == 403
    assert client.get("/v1/status").status_code == 401


def test_status_and_metrics(client: TestClient, agent: Any) -> None:
    x = np.zeros((2, 3, SIZE, SIZE), np.float32)
    body, headers = _binary_request(x)
    assert client.post(URL, content=body, headers={**headers, **agent.headers()}).status_code == 200
    assert client.post(URL, content=b"{", headers=agent.headers()).status_code == 400
    status = client.get("/v1/status", headers=agent.headers("admin")).json()
    assert status["model"]["name"] == "fovea-student" and status["model"]["version"] == 3
    assert status["precision_choice"]["chosen"]["precision"] == "fp32"
    assert status["telemetry"]["cpu"]["percent"] == 12.5
    text = client.get("/metrics").text
    assert 'fovea_requests_total{endpoint="infer",status="200"} 1.0' in text
    assert 'fovea_errors_total{endpoint="infer",kind="client"} 1.0' in text
    assert "fovea_model_version 3.0" in text
    assert "fovea_device_cpu_percent 12.5" in text
    assert 'fovea_requests_total{endpoint="/v1/status",status="200"} 1.0' in text


def test_screen_both_eyes_then_review(client: TestClient, agent: Any, fundus: Any) -> None:
    files = {
        "left": ("l.png", fundus(1), "image/png"),
        "right": ("r.png", fundus(2), "image/png"),
    }
    r = client.post("/v1/screen", files=files, headers=agent.headers())
    assert r.status_code == 200, r.text
    out = r.json()
    assert [e["eye"] for e in out["eyes"]] == ["left", "right"]
    assert out["model"]["version"] == 3
    assert out["patient"]["recommendation"] in {"refer", "rescreen_12_months", "retake_image"}
    for eye in out["eyes"]:
        assert set(eye["probabilities"]) and abs(sum(eye["probabilities"].values()) - 1) < 1e-6
        assert agent.store.get_case(eye["case_id"]).user == "technician-1"
    assert agent.predictor.calls[-1] == 2  # both eyes in one model call
    assert agent.store.case_image(out["eyes"][1]["case_id"]) is None  # kept once reviewed
    case = out["eyes"][0]["case_id"]
    r = client.post(
        f"/v1/cases/{case}/review",
        json={"grade": 2, "comment": "ok"},
        headers=agent.headers("clinician"),
    )
    assert r.status_code == 200, r.text
    latest = agent.store.get_case(case).latest_review
    assert (latest.user, latest.grade, latest.comment) == ("clinician-1", 2, "ok")
    assert agent.store.case_image(case).shape == (SIZE, SIZE, 3)
    r = client.post(
        f"/v1/cases/{case}/review",
        json={"gradable": False, "grade": None},
        headers=agent.headers("clinician"),
    )
    assert r.status_code == 200 and agent.store.get_case(case).latest_review.gradable is False
    bad = client.post(
        f"/v1/cases/{case}/review", json={"grade": 7}, headers=agent.headers("clinician")
    )
    assert bad.status_code == 400 and "grade" in bad.json()["error"]
    missing = client.post(
        "/v1/cases/nope/review", json={"grade": 1}, headers=agent.headers("clinician")
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("files", "status"),
    [
        ({"image": ("x.png", b"", "image/png")}, 400),
        ({"image": ("x.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "image/png")}, 400),
        ({"image": ("x.txt", b"hello world", "text/plain")}, 415),
        ({"nose": ("x.png", b"abc", "image/png")}, 400),
        ({"left": (None, "not a file")}, 400),
    ],
)
def test_bad_uploads_get_4xx(client: TestClient, agent: Any, files: Any, status: int) -> None:
    r = client.post(
        "/v1/screen",
        files=files or None,
        data=None if files else {"a": "b"},
        headers=agent.headers(),
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]


def test_screen_wrong_content_type_and_non_fundus(client: TestClient, agent: Any) -> None:
    r = client.post("/v1/screen", json={"image": "x"}, headers=agent.headers())
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(buf, format="JPEG")
    r = client.post(
        "/v1/screen",
        files={"image": ("g.jpg", buf.getvalue(), "image/jpeg")},
        headers=agent.headers(),
    )
    assert r.status_code == 200, r.text
    assert r.json()["patient"]["recommendation"] == "retake_image"
    assert r.json()["eyes"][0]["quality"]["reasons"]


def test_page_is_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "screen-form" in r.text
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def test_infer_never_enters_fastapi_middleware(new_agent: Any, tmp_path: Path) -> None:
    agent = new_agent(tmp_path)
    seen: list[str] = []

    @agent.app.middleware("http")
    async def record(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        return await call_next(request)

    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    body, headers = _binary_request(x)
    with TestClient(agent.app) as client:
        reply = client.post(URL, content=body, headers={**headers, **agent.headers()})
        assert reply.status_code == 200
        assert client.get("/v2/health/live").status_code == 200
    assert seen == ["/v2/health/live"]


def test_binary_infer_with_id_and_json_outputs_is_framed(
    client: TestClient, agent: Any, expected: Any
) -> None:
    x = np.random.default_rng(2).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    raw = x.tobytes()
    tensor = {"name": "images", "shape": list(x.shape), "datatype": "FP32"}
    for rid in ("a", "b"):  # the same layout, a different id each time
        head = {
            "id": rid,
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "outputs": [
                {"name": "gradable_logit", "parameters": {"binary_data": True}},
                {"name": "grade_logits", "parameters": {"binary_data": False}},
            ],
        }
        header = json.dumps(head).encode()
        r = client.post(
            URL,
            content=header + raw,
            headers={"Inference-Header-Content-Length": str(len(header)), **agent.headers()},
        )
        assert r.status_code == 200, r.text
        n = int(r.headers["inference-header-content-length"])
        reply = json.loads(r.content[:n])
        assert reply["id"] == rid
        assert [o["name"] for o in reply["outputs"]] == ["gradable_logit", "grade_logits"]
        np.testing.assert_allclose(
            reply["outputs"][1]["data"], expected(x)["grade_logits"].ravel(), rtol=1e-6
        )
        assert np.frombuffer(r.content[n:], "<f4").tolist() == [4.0, 4.0]
