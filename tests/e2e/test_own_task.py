"""Acceptance (issue 15): a second task from a CSV with no code change, only a task spec and
configs. Referable glaucoma as a binary task on grey photographs, without a quality head,
prepared from a folder of JPEGs and a CSV, through every stage to a federated round."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from own_loop import (
    QUICK_EXPORT,
    disc_csv_folder,
    disc_photo,
    federated_round,
    fovea,
    jpeg,
    prepare_and_teach,
    screen_and_review,
    write_yaml,
)

TASKS = Path(__file__).parents[2] / "configs" / "tasks"
SIZE = 32


def _grey_glaucoma(path: Path) -> dict[str, object]:
    """The shipped glaucoma spec, told to read grey photographs at 32 px, plainly resized,
    with no image-quality head: a user's edit of a YAML file."""
    spec = yaml.safe_load((TASKS / "glaucoma-referral.yaml").read_text())
    spec["input"] = {"channels": 1, "size": SIZE, "preprocessing": "resize"}
    spec["quality_head"] = False
    write_yaml(path, spec)
    return spec


@pytest.mark.slow
def test_a_second_task_runs_the_whole_loop_from_a_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path
    monkeypatch.chdir(work)  # the configs' relative paths are the user's working directory
    spec = _grey_glaucoma(work / "glaucoma.yaml")
    classes = tuple(spec["classes"])  # type: ignore[arg-type]
    sites = {
        site: disc_csv_folder(work / "raw" / site, n, classes, seed)  # type: ignore[arg-type]
        for site, n, seed in (("north", 200, 0), ("south", 64, 1))
    }
    for out in prepare_and_teach(work, "glaucoma.yaml", sites, "resnet-teacher-small", 3):
        assert "task glaucoma-referral" in out
    data = {"dir": "data", "train_sites": ["north"], "test_site": "south"}
    write_yaml(work / "distill.yaml", {
        "teacher": "runs/teacher/teacher.json", "student": {"name": "resnet-student"},
        "data": data, "train": {"epochs": 3}, "search": {"enabled": False},
        "bootstrap": 50, "out": "runs/distill",
    })  # fmt: skip
    fovea("distill", "distill.yaml", cwd=work)
    write_yaml(work / "compress.yaml", {
        "teacher": "runs/teacher/teacher.json", "start": "runs/distill/student.json",
        "distill": {"data": data, "train": {"epochs": 1}, "bootstrap": 50},
        "steps": [{"kind": "qat", "epochs": 1}], "out": "runs/compress", "latency_runs": 0,
    })  # fmt: skip
    fovea("compress", "compress.yaml", cwd=work)
    write_yaml(work / "export.yaml", {**QUICK_EXPORT, "int8_source": "qat"})
    fovea("export", "runs/compress", "--config", "export.yaml", cwd=work)
    export = work / "runs" / "compress" / "export"

    import onnx

    graph = onnx.load(str(export / "model.fp32.onnx")).graph
    assert [o.name for o in graph.output] == ["glaucoma_logit"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]] == [1, SIZE, SIZE]

    fovea("keys", "generate", "publisher", "--dir", "keys", cwd=work)
    fovea("bundle", "build", export, "--version", "1", "--key", "keys/publisher.key",
          "--out", "glaucoma-v1.tar", cwd=work)  # fmt: skip
    rng = np.random.default_rng(7)
    devices = {}
    for name in ("clinic-1", "clinic-2"):
        truth = [bool(rng.integers(0, 2)) for _ in range(12)]
        photos = [(jpeg(disc_photo(t, rng)), classes[t]) for t in truth]
        answers, metadata = screen_and_review(
            work / name, work / "glaucoma-v1.tar", work / "keys" / "publisher.pub", photos
        )
        devices[name] = work / name
        # the agent speaks the task: its outputs, its classes, no quality head to report
        assert [o["name"] for o in metadata["outputs"]] == ["glaucoma_logit"]
        assert metadata["inputs"][0]["shape"] == [-1, 1, SIZE, SIZE]
        assert metadata["parameters"]["classes"] == list(classes)
        for answer in answers:
            assert answer["task"]["name"] == "glaucoma-referral"
            (eye,) = answer["eyes"]
            assert eye["class"] in classes
            assert set(eye["probabilities"]) == set(classes)
            assert eye["quality"]["assessed"] is False
        referred = [a["eyes"][0]["referable"] for a in answers]
        agree = np.mean(np.array(referred) == np.array(truth))
        assert agree >= 0.7, f"the bundle should screen: {referred} vs {truth}"

    decision = federated_round(
        work, devices, export, work / "glaucoma-v1.tar", work / "keys" / "publisher.key"
    )
    assert decision["reason"], decision
    assert set(decision["candidate"]) >= {"accuracy", "referable_sensitivity"}
    if decision["promoted"]:
        from deploy.flash import bundle_manifest

        assert bundle_manifest(Path(decision["bundle"])).task.name == "glaucoma-referral"
