"""What a round reads from the device: the deployed student and the clinicians' reviewed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.fl.local import Declined, LocalCases
from edge_agent.install import DeviceRoot
from edge_agent.store import Store
from models import missing_packages
from models.nets import CheckpointMeta, FundusNet, load_checkpoint, read_meta

__all__ = ["deployed_checkpoint", "load_deployed", "load_reviewed"]


def deployed_checkpoint(root: Path) -> Path:
    """``ROOT/current/checkpoint/model.json``: the weights of the bundle the device serves."""
    return DeviceRoot(Path(root)).current / "checkpoint" / "model.json"


def load_deployed(root: Path) -> tuple[FundusNet, CheckpointMeta]:
    """The deployed student (eval mode). Raises :class:`Declined` when the device cannot train:
    no bundle installed, or one built before bundles carried their checkpoint."""
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
        return load_checkpoint(path)
    except (OSError, ValueError) as exc:
        raise Declined(f"deployed checkpoint {path} cannot be loaded: {exc}") from None


def load_reviewed(root: Path, meta: CheckpointMeta) -> LocalCases:
    """Every reviewed, gradable case of the device's store, resized to the model's input."""
    spec = meta.preprocess
    db = DeviceRoot(Path(root)).state_db
    if not db.is_file():
        raise Declined(f"no agent store at {db}: this device has no reviewed cases")
    images: list[np.ndarray] = []
    grades: list[int] = []
    with Store(db) as store:
        for image, grade in store.reviewed_cases():
            if image.shape[:2] != (spec.size, spec.size):
                image = spec.to_square(image)
            images.append(image)
            grades.append(grade)
    size = spec.size
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return LocalCases(stacked, np.asarray(grades, dtype=np.int64), spec)
