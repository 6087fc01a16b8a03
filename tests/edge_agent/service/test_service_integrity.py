"""The agent serves only what verifies: a swapped or damaged model file, or outputs that miss
golden.npz, make it roll back to the other slot when that verifies, or refuse to start; while
serving, a re-hash that fails turns readiness off."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper

from deploy.bundle import build_bundle
from deploy.keys import generate_keypair
from edge_agent.install import DeviceRoot, install, read_updates
from edge_agent.service import AgentConfig
from edge_agent.service.integrity import SlotRefused
from edge_agent.service.server import LoadedAgent, load_agent
from models import DR_GRADING, PreprocessSpec

SIZE = 32
CONFIG = AgentConfig(max_batch=2, threads=1, verify_interval_s=0)
MODEL = "model.fp32.onnx"


def _model(path: Path, favourite: int) -> None:
    """Mean per channel -> linear: DR grade logits where grade ``favourite`` wins, a quality
    logit; a model of a few hundred bytes that tells bundles apart by its answers."""
    w = np.full((3, 5), 0.1, np.float32)
    b = np.zeros(5, np.float32)
    b[favourite] = 8.0
    q = np.ones((3, 1), np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["mixed"]),
        helper.make_node("Add", ["mixed", "b"], ["grade_logits"]),
        helper.make_node("MatMul", ["flat", "q"], ["gradable_logit"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, a.shape, a.ravel()) for n, a in
             (("w", w), ("b", b), ("q", q))]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("grade_logits", TensorProto.FLOAT, ["N", 5]),
         helper.make_tensor_value_info("gradable_logit", TensorProto.FLOAT, ["N", 1])],
        inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _export(out: Path, favourite: int, golden_of: int | None = None) -> Path:
    """A ``fovea export``-shaped directory; ``golden_of``: take golden.npz from another model
    (a bundle whose files all verify but whose model misses its golden outputs)."""
    out.mkdir(parents=True)
    spec = PreprocessSpec.for_task(DR_GRADING, SIZE)
    _model(out / MODEL, favourite)
    reference = out / "reference.onnx"
    _model(reference, favourite if golden_of is None else golden_of)
    images = np.random.default_rng(0).integers(0, 255, (8, SIZE, SIZE, 3), dtype=np.uint8)
    x = spec.normalise(images)
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    grades, gradable = session.run(["grade_logits", "gradable_logit"], {"images": x})
    reference.unlink()
    np.savez(out / "golden.npz", images=x, grade_logits=grades, gradable_logit=gradable)
    labels = np.full(8, favourite)
    np.savez(out / "validation.npz", images=images, grade=labels, gradable=np.ones(8, bool))
    report = {
        "schema_version": 1,
        "model": {"name": "tiny-dr", "family": "tiny"},
        "task": DR_GRADING.model_dump(mode="json"),
        "preprocess": spec.model_dump(mode="json"),
        "budget": {"fp16_points": 1.0, "int8_points": 2.0},
        "operating_point": {"referral_threshold": 0.5},
        "precisions": {"fp32": {"file": MODEL, "size_bytes": (out / MODEL).stat().st_size}},
    }
    (out / "export.json").write_text(json.dumps(report))
    return out


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The publisher's public key, and signed bundles: v1 (grade 0 wins), v2 (grade 2 wins),
    v3 (grade 3 wins, but its golden.npz holds v2's outputs)."""
    work = tmp_path_factory.mktemp("integrity")
    private, public = generate_keypair(work / "keys", "publisher")
    made = {
        "v1": build_bundle(_export(work / "e1", 0), work / "v1.tar", 1, private),
        "v2": build_bundle(_export(work / "e2", 2), work / "v2.tar", 2, private),
        "v3": build_bundle(_export(work / "e3", 3, golden_of=2), work / "v3.tar", 3, private),
    }
    return public, made


@pytest.fixture
def device(tmp_path: Path, bundles: tuple[Path, dict[str, Path]]) -> DeviceRoot:
    root = DeviceRoot(tmp_path / "device").ensure()
    shutil.copy(bundles[0], root.keys.trusted / "publisher.pub")
    return root


@pytest.fixture
def installed(
    device: DeviceRoot, bundles: tuple[Path, dict[str, Path]]
) -> Callable[..., DeviceRoot]:
    def put(*names: str) -> DeviceRoot:
        for name in names:
            install(device, bundles[1][name])
        return device

    return put


@pytest.fixture
def started() -> Iterator[Callable[..., LoadedAgent]]:
    agents: list[LoadedAgent] = []

    def start(root: DeviceRoot, config: AgentConfig = CONFIG) -> LoadedAgent:
        agents.append(load_agent(root.path, config, log=print))
        return agents[-1]

    yield start
    for agent in agents:
        agent.store.close()


def _refusals(agent: LoadedAgent) -> list[dict[str, Any]]:
    return [e.detail for e in agent.store.audit_entries() if e.action == "slot refused"]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_swapped_model_file_rolls_back_to_the_slot_that_verifies(
    installed: Callable[..., DeviceRoot], started: Callable[..., LoadedAgent]
) -> None:
    device = installed("v1", "v2")  # v1 in slot a, v2 active in slot b
    shutil.copy(device.slot("a") / MODEL, device.slot("b") / MODEL)  # another bundle's model
    agent = started(device)
    assert agent.manifest.version == 1 and device.active_slot() == "a"
    assert agent.watch is not None and agent.watch.verified.fell_back_from == "b"
    (refusal,) = _refusals(agent)
    assert refusal["slot"] == "b" and MODEL in refusal["reason"]
    last = agent.store.updates()[-1]
    assert (last.status, last.from_version, last.to_version) == ("rolled back", 2, 1)
    assert MODEL in last.detail["journal"]
    assert read_updates(device.updates_log)[-1].status == "rolled-back"
    assert agent.store.verify_audit().ok


def test_a_flipped_byte_with_no_other_slot_refuses_to_start(
    installed: Callable[..., DeviceRoot], started: Callable[..., LoadedAgent]
) -> None:
    device = installed("v1")
    _flip_byte(device.slot("a") / MODEL)
    with pytest.raises(SlotRefused) as refused:
        started(device)
    message = str(refused.value)
    assert f"{MODEL} does not match the manifest" in message
    assert "Reinstall a bundle: fovea-agent install BUNDLE" in message
    assert device.active_slot() == "a"  # nothing switched to an empty slot


def test_both_slots_damaged_refuses_and_names_each_file(
    installed: Callable[..., DeviceRoot], started: Callable[..., LoadedAgent]
) -> None:
    device = installed("v1", "v2")
    _flip_byte(device.slot("b") / MODEL)
    _flip_byte(device.slot("a") / "golden.npz")
    with pytest.raises(SlotRefused) as refused:
        started(device)
    message = str(refused.value)
    assert f"slots/b: {MODEL} does not match" in message
    assert "slots/a: golden.npz does not match" in message
    assert device.active_slot() == "b"


@pytest.mark.parametrize(
    ("precision", "says"),
    [("fp32", "does not reproduce golden.npz"), ("auto", "golden check failed")],
    ids=["opened-then-golden-checked", "measured-at-start"],
)
def test_outputs_that_miss_golden_are_refused_though_every_hash_matches(
    installed: Callable[..., DeviceRoot],
    started: Callable[..., LoadedAgent],
    precision: str,
    says: str,
) -> None:
    device = installed("v2", "v3")  # v3 installed without its install-time golden check
    agent = started(device, CONFIG.model_copy(update={"precision": precision}))
    assert agent.manifest.version == 2 and device.active_slot() == "a"
    (refusal,) = _refusals(agent)
    assert refusal["slot"] == "b" and says in refusal["reason"]


def test_periodic_recheck_turns_readiness_off_and_answers_503(
    installed: Callable[..., DeviceRoot], started: Callable[..., LoadedAgent], fundus: Any
) -> None:
    device = installed("v1")
    agent = started(device, CONFIG.model_copy(update={"verify_interval_s": 0.05}))
    token = agent.store.add_user("tech", "technician")
    auth = {"Authorization": f"Bearer {token}"}
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    infer = f"/v2/models/{agent.served.info.name}/infer"
    with TestClient(agent.app, raise_server_exceptions=False) as client:
        assert client.get("/v2/health/ready").status_code == 200
        assert client.post(infer, json=body, headers=auth).status_code == 200
        _flip_byte(device.slot("a") / MODEL)
        deadline = time.monotonic() + 10
        while client.get("/v2/health/ready").status_code == 200:
            assert time.monotonic() < deadline, "the re-check never turned readiness off"
            time.sleep(0.05)
        r = client.post(infer, json=body, headers=auth)
        assert r.status_code == 503 and MODEL in r.json()["error"]  # says why, not "not ready"
        files = {"image": ("eye.png", fundus(1), "image/png")}
        r = client.post("/v1/screen", files=files, headers=auth)
        assert r.status_code == 503 and MODEL in r.json()["error"]
        status = client.get("/v1/status", headers=auth).json()
        assert MODEL in status["integrity"]["refused"]
        (refusal,) = _refusals(agent)
        assert refusal["serving"] is True and MODEL in refusal["reason"]


def test_recheck_passes_and_skips_a_slot_an_install_switched_away_from(
    installed: Callable[..., DeviceRoot],
    started: Callable[..., LoadedAgent],
    bundles: tuple[Path, dict[str, Path]],
) -> None:
    device = installed("v1")
    agent = started(device)
    assert agent.watch is not None
    assert agent.watch.check() is True and agent.served.ready()
    install(device, bundles[1]["v2"])  # slot b now active; slot a may be replaced next
    shutil.rmtree(device.slot("a"))
    assert agent.watch.check() is None and agent.served.ready()


def test_cli_rollback_golden_checks_the_slot_and_records_it_once(
    installed: Callable[..., DeviceRoot], bundles: tuple[Path, dict[str, Path]]
) -> None:
    from typer.testing import CliRunner

    from edge_agent.cli import app as cli
    from edge_agent.store import Store

    device = installed("v3")  # slot a: every hash matches, the outputs miss golden.npz
    install(device, bundles[1]["v1"], allow_downgrade=True)  # slot b, active
    runner, root = CliRunner(), ["--root", str(device.path)]
    refused = runner.invoke(cli, ["rollback", *root])
    assert refused.exit_code == 1 and "golden check failed" in refused.output
    assert device.active_slot() == "b"
    install(device, bundles[1]["v2"])  # slot a again, now a model that verifies
    done = runner.invoke(cli, ["rollback", *root])
    assert done.exit_code == 0, done.output
    assert device.active_slot() == "b"
    with Store(device.state_db) as store:
        rows = store.updates()
        assert (rows[-1].status, rows[-1].to_version) == ("rolled back", 1)
        assert "reconciled" not in rows[-1].detail  # recorded as it happened
        assert [r.to_version for r in rows if r.status == "installed"] == [3, 1, 2]
