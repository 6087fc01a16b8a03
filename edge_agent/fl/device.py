"""What a round reads from the device: the deployed student and the clinicians' reviewed cases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import MANIFEST_NAME
from edge_agent.fl.local import Declined, LocalCases
from edge_agent.install import DeviceRoot, InstallError, active_manifest
from edge_agent.store import Store
from models import TaskSpec, TaskSpecError, missing_packages
from models.nets import CheckpointMeta, FundusNet, load_checkpoint, read_meta

__all__ = ["deployed_checkpoint", "load_deployed", "load_reviewed"]

log = logging.getLogger(__name__)


def deployed_checkpoint(root: Path) -> Path:
    """``ROOT/current/checkpoint/model.json``: the weights of the bundle the device serves."""
    return DeviceRoot(Path(root)).current / "checkpoint" / "model.json"


def load_deployed(root: Path) -> tuple[FundusNet, CheckpointMeta]:
    """The deployed student (eval mode), built for the task its checkpoint names. Raises
    :class:`Declined` when the device cannot train: no bundle installed, or one built before
    bundles carried their checkpoint."""
    path = deployed_checkpoint(root)
    if not path.is_file():
        raise Declined(
            f"no deployed checkpoint at {path}: install a bundle built from an export that "
            "carries checkpoint/model.json"
        )
    try:
        missing = missing_packages(read_meta(path).requires)
        if missing:
            raise Declined(
                f"the deployed model needs {', '.join(missing)} to train, which this device lacks: "
                f"install {' '.join(missing)} into the agent's environment to join the rounds"
            )
        model, meta = load_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise Declined(f"deployed checkpoint {path} cannot be loaded: {exc}") from None
    _check_manifest_task(Path(root), meta)
    return model, meta


def _check_manifest_task(root: Path, meta: CheckpointMeta) -> None:
    """Decline when the installed bundle's manifest names another task than its checkpoint
    (a device root without a manifest, as a rehearsal's simulated site, is not checked)."""
    if not (DeviceRoot(root).current / MANIFEST_NAME).is_file():
        return
    try:
        manifest = active_manifest(root)
    except InstallError as exc:
        raise Declined(str(exc)) from None
    if manifest is not None and manifest.task != meta.task:
        raise Declined(
            f"the installed bundle's manifest is for task {manifest.task.name}, its checkpoint "
            f"for task {meta.task.name}: reinstall a bundle whose checkpoint matches"
        )


def load_reviewed(root: Path, meta: CheckpointMeta) -> LocalCases:
    """Every reviewed, gradable case of the device's store, resized to the model's input and
    labelled in the model's task: the review's class index, or for a ``multilabel`` task the
    findings it named as an N x L 0/1 matrix. Only cases whose screening, review and image
    match their audit entries are read (a grade forged in state.db is never trained on); the
    others are logged with their case ids. Raises :class:`Declined` naming the value when a
    label is not one of the task's."""
    spec, task = meta.preprocess, meta.task
    db = DeviceRoot(Path(root)).state_db
    if not db.is_file():
        raise Declined(f"no agent store at {db}: this device has no reviewed cases")
    images: list[np.ndarray] = []
    labels: list[Any] = []
    multilabel = task.kind == "multilabel"
    skipped: list[str] = []
    device = DeviceRoot(Path(root))
    with Store(db, audit_key=device.audit_key) as store:
        for image, label in store.reviewed_cases(findings=multilabel, skipped=skipped):
            if image.shape != (spec.size, spec.size, spec.channels):
                image = spec.to_square(image)
            images.append(image)
            labels.append(_findings(task, label, db) if multilabel else label)
    if skipped:
        log.warning(
            "%d reviewed case(s) in %s do not verify against the audit chain and are not "
            "trained on (run 'fovea-agent audit verify'): %s",
            len(skipped), db, "; ".join(skipped),
        )  # fmt: skip
    size = spec.size
    stacked = np.stack(images) if images else np.zeros((0, size, size, spec.channels), np.uint8)
    width = (task.num_classes,) if multilabel else ()
    array = np.asarray(labels, dtype=np.int64).reshape(len(labels), *width)
    try:
        return LocalCases(stacked, array, spec, task)
    except TaskSpecError as exc:
        raise Declined(f"reviewed cases in {db} do not fit the deployed model: {exc}") from None


def _findings(task: TaskSpec, names: list[str], db: Path) -> list[int]:
    """A multilabel review's findings as a 0/1 row over the task's labels."""
    unknown = sorted(set(names) - set(task.classes))
    if unknown:
        raise Declined(
            f"reviewed cases in {db} name findings {unknown}, which task {task.name} does not "
            f"have ({', '.join(task.classes)})"
        )
    return [int(c in names) for c in task.classes]
