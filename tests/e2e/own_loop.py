"""The whole loop on what a user brings, as a user runs it: files on disk, a task spec, the
``fovea`` command, a signed bundle, agents screening JPEGs over HTTP, clinicians' reviews, one
federated round and a promotion decision. Shared by the acceptance tests of issue 15."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

FOVEA = [sys.executable, "-m", "server"]
"""The ``fovea`` command of this environment (``python -m server`` is the same app)."""


def fovea(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``fovea ARGS`` in ``cwd``; its output, or a failure that shows it."""
    done = subprocess.run(
        [*FOVEA, *map(str, args)],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "160", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"fovea {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def jpeg(image: np.ndarray) -> bytes:
    """``image`` (H x W x 3, or H x W x 1 grey) as JPEG bytes."""
    pixels = image[..., 0] if image.shape[-1] == 1 else image
    out = BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=92)
    return out.getvalue()


def eyepacs_folder(root: Path, site: str, n: int, size: int, seed: int) -> Path:
    """``n`` synthetic fundus JPEGs of ``site`` as EyePACS lays them out: ``trainLabels.csv``
    (image,level) beside ``<image>.jpeg`` files named ``<patient>_<eye>``."""
    from models.synth import SITES, generate

    data = generate(SITES[site], n, size=size, seed=seed)
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        name = f"{site}{i // 2}_{'left' if i % 2 == 0 else 'right'}"
        (root / f"{name}.jpeg").write_bytes(jpeg(data.images[i]))
        rows.append({"image": name, "level": max(int(data.grade[i]), 0)})
    _write_csv(root / "trainLabels.csv", rows)
    return root


def disc_photo(positive: bool, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A grey photograph (size x size x 1) of a bright disc: large when ``positive``."""
    yy, xx = np.mgrid[:size, :size]
    img = rng.normal(90, 20, (size, size))
    cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
    r = size * (0.23 if positive else 0.12)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 100
    return img.clip(0, 255).astype(np.uint8)[..., None]


def disc_csv_folder(root: Path, n: int, classes: tuple[str, str], seed: int) -> Path:
    """``n`` grey disc JPEGs in ``root/images`` and ``root/labels.csv`` (image,label,patient)
    naming each one's class; two images per patient."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        positive = bool(rng.integers(0, 2))
        name = f"img{i:04d}.jpg"
        (root / "images" / name).write_bytes(jpeg(disc_photo(positive, rng)))
        rows.append({"image": name, "label": classes[positive], "patient": f"p{seed}-{i // 2}"})
    _write_csv(root / "labels.csv", rows)
    return root


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as YAML at ``path``."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def prepare_and_teach(
    work: Path, task_file: str, sites: dict[str, Path], model: str, epochs: int
) -> list[str]:
    """``fovea data prepare`` each CSV site folder (``images/`` beside ``labels.csv``) into
    ``work/data`` for ``task_file``, then ``fovea teacher train`` ``model`` on the first site,
    testing on the last; the prepare outputs."""
    outputs = []
    for site, raw in sites.items():
        args = ("--csv", raw / "labels.csv", "--task", task_file, "--site", site, "--out", "data")
        outputs.append(fovea("data", "prepare", raw / "images", *args, cwd=work))
    names = list(sites)
    args = ("--train-sites", names[0], "--test-site", names[-1], "--epochs", str(epochs))
    fovea("teacher", "train", "--data", "data", "--out", "runs/teacher", "--model", model,
          *args, cwd=work)  # fmt: skip
    return outputs


QUICK_EXPORT = {
    "calibration_size": 64,
    "min_calibration": 16,
    "calibration_methods": ["MinMax"],
    "heldout_limit": 64,
    "latency_runs": 2,
    "throughput_batch": 4,
    "threads": 1,
    "validation_size": 64,
}
"""Export settings sized for a test: every precision, few images, few timed runs."""


def screen_and_review(
    root: Path, bundle: Path, public_key: Path, photos: list[tuple[bytes, str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Install ``bundle`` on the device root ``root``, serve it, screen every JPEG over HTTP
    and have a clinician review it with its true label; the answers and the model metadata."""
    from fastapi.testclient import TestClient

    from deploy.flash import bundle_manifest
    from edge_agent.install import DeviceRoot, install
    from edge_agent.service import AgentConfig
    from edge_agent.service.server import load_agent

    name = bundle_manifest(bundle).name
    device = DeviceRoot(root).ensure()
    shutil.copy(public_key, device.keys.trusted / public_key.name)
    install(device, bundle)
    agent = load_agent(root, AgentConfig(max_batch=4, max_wait_ms=1.0, threads=1))
    tech = {"Authorization": f"Bearer {agent.store.add_user('tech-1', 'technician')}"}
    doc = {"Authorization": f"Bearer {agent.store.add_user('doc-1', 'clinician')}"}
    answers = []
    with TestClient(agent.app) as client:
        metadata = client.get(f"/v2/models/{name}", headers=tech).json()
        for i, (photo, label) in enumerate(photos):
            files = {"image": (f"photo{i}.jpg", photo, "image/jpeg")}
            r = client.post("/v1/screen", files=files, headers=tech)
            assert r.status_code == 200, r.text
            answer = r.json()
            review = client.post(
                f"/v1/cases/{answer['case_id']}/review", json={"label": label}, headers=doc
            )
            assert review.status_code == 200, review.text
            answers.append(answer)
    return answers, metadata


def federated_round(
    work: Path, devices: dict[str, Path], export_dir: Path, bundle: Path, key: Path
) -> dict[str, Any]:
    """One FedProx round over ``devices`` on loopback (a real SuperLink and SuperNodes), the
    candidate scored on the server's held-out site and the promotion gate's decision."""
    from server.demo.federation import _export_inputs, demo_run_config
    from server.federation import LocalNode, LoopbackFederation, Registry

    fed_dir = work / "federation"
    fed_dir.mkdir(parents=True)
    inputs = _export_inputs(export_dir, fed_dir)
    config = demo_run_config(fed_dir / "run", export_dir, key, 2, inputs) | {
        "num-rounds": 1,
        "min-train-nodes": len(devices),
        "min-evaluate-nodes": len(devices),
        "min-available-nodes": len(devices),
        "min-cases": 8,
        "heldout-limit": 64,
        "round-timeout": 240.0,
    }
    with LoopbackFederation(fed_dir) as fed:
        fed.start([LocalNode(name, root) for name, root in devices.items()])
        outcome = fed.run(config, timeout=420.0)
        assert outcome.completed, f"{outcome.status}: {outcome.details}\n{fed.logs(3000)}"
    decisions = Registry(fed_dir / "run" / "registry.db").decisions()
    assert decisions, f"no promotion decision; see {outcome.log}"
    return json.loads(json.dumps(dataclasses.asdict(decisions[-1]), default=str))
