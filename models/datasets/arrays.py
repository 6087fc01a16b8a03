"""An in-memory labelled fundus set: uint8 images with grades (or findings), gradability, site
and patient."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.task import TaskSpec

SCHEMA_VERSION = 1
UNKNOWN_GRADE = -1


@dataclass(frozen=True)
class FundusArrays:
    """Images (N, H, W, C) uint8 (C = 3 for RGB, 1 for grey) and their labels.

    ``grade`` is the class index in the task's classes (for DR, the ICDR grade), -1 where unknown
    or ungradable; which indices are valid is the task's to say (``TaskSpec.check_labels``).

    ``labels`` holds a multilabel task's findings, N x L uint8 0/1 (L labels in the task's
    order), and is None for single-label tasks. With ``labels``, ``grade`` is 0 for a labelled
    gradable image and -1 for an ungradable or unknown one (whose row of ``labels`` is zeros).
    :meth:`targets` gives the training targets of either.
    """

    images: np.ndarray
    grade: np.ndarray
    gradable: np.ndarray
    site: np.ndarray
    patient: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if (
            self.images.ndim != 4
            or self.images.shape[-1] not in (1, 3)
            or self.images.dtype != np.uint8
        ):
            raise ValueError(
                f"images must be uint8 of shape (N, H, W, 3) or (N, H, W, 1), got "
                f"{self.images.dtype} {self.images.shape}"
            )
        for name in ("grade", "gradable", "site", "patient"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
        if self.grade.min(initial=0) < UNKNOWN_GRADE:
            raise ValueError("grade values are class indices >= 0, or -1 for unknown")
        if self.labels is not None:
            lab = self.labels
            if lab.ndim != 2 or len(lab) != n or lab.dtype != np.uint8 or lab.max(initial=0) > 1:
                raise ValueError(
                    f"labels must be uint8 0/1 of shape ({n}, L), got {lab.dtype} {lab.shape}"
                )
            if self.grade.max(initial=0) > 0:
                raise ValueError("with labels, grade is 0 (labelled) or -1 (unknown)")

    def targets(self, task: TaskSpec) -> np.ndarray:
        """What ``task`` trains and scores on: ``labels`` (N x L) for ``multilabel``, else
        ``grade``; raises when the file does not hold that kind of label."""
        if task.kind != "multilabel":
            if self.labels is not None:
                raise ValueError(f"task {task.name} is {task.kind}, but these images hold findings")
            return self.grade
        if self.labels is None or self.labels.shape[1] != task.num_classes:
            held = "no findings" if self.labels is None else f"{self.labels.shape[1]} findings"
            raise ValueError(
                f"task {task.name} has {task.num_classes} labels, but these images hold {held}; "
                "prepare them with this task"
            )
        return self.labels

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Image side in pixels."""
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | slice) -> FundusArrays:
        """The rows selected by ``index`` (an index array, boolean mask or slice)."""
        return FundusArrays(
            images=self.images[index],
            grade=self.grade[index],
            gradable=self.gradable[index],
            site=self.site[index],
            patient=self.patient[index],
            labels=None if self.labels is None else self.labels[index],
        )

    @staticmethod
    def concat(parts: list[FundusArrays]) -> FundusArrays:
        """All rows of ``parts`` in order."""
        if not parts:
            raise ValueError("nothing to concatenate")
        held = {p.labels is None for p in parts}
        if len(held) > 1:
            raise ValueError("cannot concatenate images with findings and images without")
        fields: tuple[str, ...] = ("images", "grade", "gradable", "site", "patient")
        if held == {False}:
            fields = (*fields, "labels")
        return FundusArrays(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in fields})

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` file (no pickled objects) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {
            "schema_version": np.int64(SCHEMA_VERSION),
            "images": self.images,
            "grade": self.grade.astype(np.int64),
            "gradable": self.gradable.astype(np.bool_),
            "site": self.site.astype(np.str_),
            "patient": self.patient.astype(np.str_),
        }
        if self.labels is not None:  # multilabel findings; files without them still load
            arrays["labels"] = self.labels
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FundusArrays:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset file at {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                version = int(z["schema_version"]) if "schema_version" in z else None
                if version != SCHEMA_VERSION:
                    raise ValueError(f"schema_version {version}, expected {SCHEMA_VERSION}")
                return cls(
                    images=z["images"],
                    grade=z["grade"],
                    gradable=z["gradable"],
                    site=z["site"],
                    patient=z["patient"],
                    labels=z.get("labels"),
                )
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(
                f"{path}: not a readable Fovea dataset file ({e or type(e).__name__})"
            ) from None
