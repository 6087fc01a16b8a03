"""An in-memory labelled fundus set: uint8 images with grades, gradability, site and patient."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
UNKNOWN_GRADE = -1


@dataclass(frozen=True)
class FundusArrays:
    """Images (N, H, W, C) uint8 (C = 3 for RGB, 1 for grey) and their labels.

    ``grade`` is the class index in the task's classes (for DR, the ICDR grade), -1 where unknown
    or ungradable; which indices are valid is the task's to say (``TaskSpec.check_labels``).
    """

    images: np.ndarray
    grade: np.ndarray
    gradable: np.ndarray
    site: np.ndarray
    patient: np.ndarray

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
        )

    @staticmethod
    def concat(parts: list[FundusArrays]) -> FundusArrays:
        """All rows of ``parts`` in order."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return FundusArrays(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("images", "grade", "gradable", "site", "patient")
            )
        )

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` file (no pickled objects) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            schema_version=np.int64(SCHEMA_VERSION),
            images=self.images,
            grade=self.grade.astype(np.int64),
            gradable=self.gradable.astype(np.bool_),
            site=self.site.astype(np.str_),
            patient=self.patient.astype(np.str_),
        )
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
                )
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            raise ValueError(
                f"{path}: not a readable Fovea dataset file ({e or type(e).__name__})"
            ) from None
