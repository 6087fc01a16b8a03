"""The agent follows the bundle's task: a binary grey task and a multiclass task without a
quality head, each a tiny ONNX model named per its spec, signed, installed and served."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from typer.testing import CliRunner

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.cli import app as cli
from edge_agent.install import DeviceRoot
from edge_agent.service import AgentConfig
from edge_agent.service.server import load_agent
from models import PreprocessSpec, TaskSpec, parse_task

SIZE = 32
TASKS = Path(__file__).parents[3] / "configs" / "tasks"


def _task(file: str, **change: Any) -> TaskSpec:
    data = yaml.safe_load((TASKS / file).read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    return parse_task(data, file)


GREY_BINARY = _task(
    "glaucoma-referral.yaml",
    input={"channels": 1, "size": SIZE, "preprocessing": "resize"},
    outputs={"quality": "image_ok_logit"},
)
"""Binary, one grey channel, plain resize, a quality head under its own output name."""
AMD_NO_QUALITY = _task("amd-staging.yaml", quality_head=False, input={"size": SIZE})
"""Multiclass (four AMD stages), colour, no quality head."""


def _model(task: TaskSpec, path: Path) -> None:
    """Global mean per channel -> a linear layer: the class logits (and a constant quality
    logit), every name and width from ``task``; the second class always wins."""
    c, width = task.input.channels, task.output_shapes()[task.outputs.classes][0]
    weight = np.full((c, width), 0.1, np.float32)
    bias = np.zeros(width, np.float32)
    bias[0 if width == 1 else 2] = 8.0  # binary: P(positive) ~ 1; else the third class
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mixed"]),
        helper.make_node("Add", ["mixed", "b"], [task.outputs.classes]),
    ]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel()),
             helper.make_tensor("b", TensorProto.FLOAT, bias.shape, bias)]  # fmt: skip
    outputs = [helper.make_tensor_value_info(task.outputs.classes, TensorProto.FLOAT, ["N", width])]
    if task.quality_head:
        q = np.ones((c, 1), np.float32)
        inits += [helper.make_tensor("q", TensorProto.FLOAT, q.shape, q.ravel()),
                  helper.make_tensor("five", TensorProto.FLOAT, (1,), [5.0])]  # fmt: skip
        nodes += [helper.make_node("MatMul", ["flat", "q"], ["qm"]),
                  helper.make_node("Mul", ["qm", "zero"], ["qz"]),
                  helper.make_node("Add", ["qz", "five"], [task.outputs.quality])]  # fmt: skip
        inits.append(helper.make_tensor("zero", TensorProto.FLOAT, (1,), [0.0]))
        outputs.append(
            helper.make_tensor_value_info(task.outputs.quality, TensorProto.FLOAT, ["N", 1])
        )
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", c, SIZE, SIZE])
    graph = helper.make_graph(nodes, "tiny", [images], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _export(task: TaskSpec, out: Path) -> Path:
    """A ``fovea export``-shaped directory for ``task``: model, golden, validation, export.json."""
    out.mkdir(parents=True)
    spec = PreprocessSpec.for_task(task, SIZE)
    _model(task, out / "model.fp32.onnx")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, SIZE, SIZE, 3), dtype=np.uint8)
    x = spec.normalise(images)
    session = ort.InferenceSession(str(out / "model.fp32.onnx"), providers=["CPUExecutionProvider"])
    names = list(task.output_shapes())
    golden = dict(zip(names, session.run(names, {"images": x}), strict=True))
    np.savez(out / "golden.npz", images=x, **golden)
    labels = np.arange(8) % task.num_classes
    np.savez(out / "validation.npz", images=images, labels=labels, gradable=np.ones(8, bool))
    size = (out / "model.fp32.onnx").stat().st_size
    report = {
        "schema_version": 1,
        "model": {"name": f"tiny-{task.name}", "family": "tiny"},
        "task": task.model_dump(mode="json"),
        "preprocess": spec.model_dump(mode="json"),
        "budget": {"fp16_points": 1.0, "int8_points": 2.0},
        "operating_point": {"referral_threshold": 0.5},
        "precisions": {"fp32": {"file": "model.fp32.onnx", "size_bytes": size}},
    }
    (out / "export.json").write_text(json.dumps(report))
    return out


@pytest.fixture(scope="module", params=[GREY_BINARY, AMD_NO_QUALITY], ids=lambda t: t.name)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TaskSpec, TestClient, dict[str, str]]]:
    """The task's bundle installed with ``fovea-agent install`` and served in process; a
    client and a token per role."""
    task: TaskSpec = request.param
    work = tmp_path_factory.mktemp(task.name)
    export = _export(task, work / "export")
    private, public = generate_keypair(work / "keys", "publisher")
    root = DeviceRoot(work / "root").ensure()
    root.keys.trusted.mkdir(parents=True, exist_ok=True)
    shutil.copy(public, root.keys.trusted / "publisher.pub")
    bundle = build_bundle(export, work / "bundle.tar", 1, private)
    result = CliRunner().invoke(cli, ["install", str(bundle), "--root", str(root.path)])
    assert result.exit_code == 0, result.output
    agent = load_agent(root.path, AgentConfig(max_batch=4, max_wait_ms=1.0, threads=1))
    tokens = {role: agent.store.add_user(f"{role}-1", role) for role in ("technician", "clinician")}
    with TestClient(agent.app, raise_server_exceptions=False) as client:
        yield task, client, tokens


def _auth(tokens: dict[str, str], role: str = "technician") -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def test_metadata_shows_the_task_outputs(served: Any) -> None:
    task, client, tokens = served
    meta = client.get(f"/v2/models/tiny-{task.name}", headers=_auth(tokens)).json()
    c = task.input.channels
    assert meta["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, c, SIZE, SIZE]}]
    want = [
        {
            "name": task.outputs.classes,
            "datatype": "FP32",
            "shape": [-1, 1 if task.kind == "binary" else 4],
        }
    ]
    if task.quality_head:
        want.append({"name": task.outputs.quality, "datatype": "FP32", "shape": [-1, 1]})
    assert meta["outputs"] == want
    params = meta["parameters"]
    assert (params["task"], params["task_kind"]) == (task.name, task.kind)
    assert params["classes"] == list(task.classes)


def test_infer_takes_the_task_channels(served: Any) -> None:
    task, client, tokens = served
    c = task.input.channels
    body = {"inputs": [{"name": "images", "shape": [1, c, SIZE, SIZE], "datatype": "FP32",
                        "data": [0.0] * (c * SIZE * SIZE)}]}  # fmt: skip
    r = client.post(f"/v2/models/tiny-{task.name}/infer", json=body, headers=_auth(tokens))
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == list(task.output_shapes())
    wrong = {"inputs": [{**body["inputs"][0], "shape": [1, 4 - c, SIZE, SIZE],
                         "data": [0.0] * ((4 - c) * SIZE * SIZE)}]}  # fmt: skip
    r = client.post(f"/v2/models/tiny-{task.name}/infer", json=wrong, headers=_auth(tokens))
    assert r.status_code == 400 and f"[-1, {c}, {SIZE}, {SIZE}]" in r.json()["error"]


def test_screen_answers_in_the_task_classes(served: Any, fundus: Any) -> None:
    task, client, tokens = served
    files = {"left": ("l.png", fundus(1), "image/png"), "right": ("r.png", fundus(2), "image/png")}
    r = client.post("/v1/screen", files=files, headers=_auth(tokens))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"]["name"] == task.name and out["task"]["classes"] == list(task.classes)
    positive = task.classes[1] if task.kind == "binary" else task.classes[2]
    for eye in out["eyes"]:
        assert "grade" not in eye
        assert list(eye["probabilities"]) == list(task.classes)
        assert abs(sum(eye["probabilities"].values()) - 1) < 1e-6
        assert eye["class"] == positive and eye["class_index"] == task.classes.index(positive)
        assert eye["referable"] is True and eye["referable_probability"] > 0.99
        assert eye["recommendation"] == "refer"
        if task.quality_head:
            assert eye["quality"]["gradable"] is True and eye["quality"]["score"] > 0.99
        else:
            assert eye["quality"]["assessed"] is False
            assert eye["quality"]["gradable"] is None and eye["quality"]["score"] is None
    assert out["patient"]["recommendation"] == "refer"
    assert out["patient"]["decided_by"] == ["left", "right"]


def test_review_takes_the_task_classes_and_refuses_others(served: Any, fundus: Any) -> None:
    task, client, tokens = served
    files = {"image": ("i.png", fundus(3), "image/png")}
    case = client.post("/v1/screen", files=files, headers=_auth(tokens)).json()["case_id"]
    url, doc = f"/v1/cases/{case}/review", _auth(tokens, "clinician")
    ok = client.post(url, json={"label": task.classes[1]}, headers=doc)
    assert ok.status_code == 200, ok.text
    assert ok.json()["label"] == task.classes[1] and ok.json()["class_index"] == 1
    by_index = client.post(url, json={"label": 0}, headers=doc)
    assert by_index.status_code == 200 and by_index.json()["label"] == task.classes[0]
    bad = client.post(url, json={"label": "proliferative DR"}, headers=doc)
    assert bad.status_code == 422
    message = bad.json()["error"]
    assert "'proliferative DR'" in message and all(c in message for c in task.classes)
    out_of_range = client.post(url, json={"label": task.num_classes}, headers=doc)
    assert out_of_range.status_code == 422 and str(task.num_classes) in out_of_range.json()["error"]
    by_grade = client.post(url, json={"grade": 1}, headers=doc)
    assert by_grade.status_code == 422 and "label" in by_grade.json()["error"]


def test_page_shows_the_task_classes(served: Any) -> None:
    task, client, _ = served
    page = client.get("/").text
    assert f"{task.name} screening" in page and "Diabetic retinopathy" not in page
    assert all(f">{c}</option>" in page for c in task.classes)
    assert "no DR" not in page
