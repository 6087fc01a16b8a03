"""An in-memory labelled fundus set: uint8 images with grades (or findings), gradability, site
and patient."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.datasets.shards import ShardedImages, write_shard
from models.task import TaskSpec

SCHEMA_VERSION = 1
SHARDED_SCHEMA_VERSION = 2
UNKNOWN_GRADE = -1
INDEX_FILE = "index.npz"
ImageArray = np.ndarray | ShardedImages
"""Pixels in memory, or in shards on disk read on demand."""


@dataclass(frozen=True)
class FundusArrays:
    """Images (N, H, W, C) uint8 (C = 3 for RGB, 1 for grey) and their labels.

    ``grade`` is the class index in the task's classes (for DR, the ICDR grade), -1 where unknown
    or ungradable; which indices are valid is the task's to say (``TaskSpec.check_labels``).

    ``labels`` holds a multilabel task's findings, N x L uint8 0/1 (L labels in the task's
    order), and is None for single-label tasks. With ``labels``, ``grade`` is 0 for a labelled
    gradable image and -1 for an ungradable or unknown one (whose row of ``labels`` is zeros).
    :meth:`targets` gives the training targets of either.

    ``images`` is an array in memory, or :class:`ShardedImages` on disk (a prepared site at
    clinical scale, :meth:`load_sharded`): indexing either gives arrays, and :meth:`subset`
    and :meth:`concat` keep sharded images on disk.
    """

    images: ImageArray
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

    @property
    def sharded(self) -> bool:
        """Whether the images stay on disk (read on demand) rather than in memory."""
        return isinstance(self.images, ShardedImages)

    def pixels(self) -> np.ndarray:
        """Every image in memory as one array: for samples (a sharded site may not fit)."""
        return np.asarray(self.images)

    def fitting_sample(self, pixels: int = 1 << 26) -> np.ndarray:
        """Evenly spaced images holding at most ``pixels`` pixels (all of a small set), in
        memory: enough to measure mean and std without reading a whole site."""
        n = len(self)
        per_image = max(int(np.prod(self.images.shape[1:3])), 1)
        keep = max(1, min(n, pixels // per_image))
        if keep >= n:
            return self.pixels()
        return np.asarray(self.images[np.linspace(0, n - 1, keep).round().astype(np.int64)])

    def subset(self, index: np.ndarray | slice) -> FundusArrays:
        """The rows selected by ``index`` (an index array, boolean mask or slice)."""
        images = self.images
        return FundusArrays(
            images=images.take(index) if isinstance(images, ShardedImages) else images[index],
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
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields[1:]}
        sharded = [p.images for p in parts if isinstance(p.images, ShardedImages)]
        if not sharded:
            return FundusArrays(images=np.concatenate([p.images for p in parts]), **joined)
        if len(sharded) != len(parts):
            raise ValueError("cannot concatenate images on disk with images in memory")
        return FundusArrays(images=ShardedImages.concat(sharded), **joined)

    def _columns(self) -> dict[str, np.ndarray]:
        """Everything but the pixels, as saved."""
        columns = {
            "grade": self.grade.astype(np.int64),
            "gradable": self.gradable.astype(np.bool_),
            "site": self.site.astype(np.str_),
            "patient": self.patient.astype(np.str_),
        }
        if self.labels is not None:  # multilabel findings; files without them still load
            columns["labels"] = self.labels
        return columns

    def save(self, path: str | Path) -> Path:
        """Write to a compressed ``.npz`` file (no pickled objects) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {
            "schema_version": np.int64(SCHEMA_VERSION),
            "images": np.asarray(self.images),
            **self._columns(),
        }
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FundusArrays:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset file at {path}")
        z = _read_npz(path, SCHEMA_VERSION, "dataset file")
        return cls(
            images=z["images"],
            grade=z["grade"],
            gradable=z["gradable"],
            site=z["site"],
            patient=z["patient"],
            labels=z.get("labels"),
        )

    def save_index(self, directory: str | Path, shards: list[str]) -> Path:
        """Write the index of a sharded site (everything but the pixels, which are already in
        ``shards``, files in ``directory`` holding the rows in order) and return its path."""
        directory = Path(directory)
        arrays = {
            "schema_version": np.int64(SHARDED_SCHEMA_VERSION),
            "shards": np.array(shards, dtype=np.str_),
            **self._columns(),
        }
        tmp = directory / f"{INDEX_FILE}.tmp.npz"
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        path = directory / INDEX_FILE
        tmp.replace(path)
        return path

    def save_sharded(self, directory: str | Path, shard_size: int = 1024) -> Path:
        """Write as a sharded site: ``images-NNNNN.npy`` shards of ``shard_size`` rows and
        ``index.npz`` in ``directory``; returns the index's path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        names = []
        for number, start in enumerate(range(0, max(len(self), 1), shard_size)):
            names.append(f"images-{number:05d}.npy")
            write_shard(directory / names[-1], np.asarray(self.images[start : start + shard_size]))
        return self.save_index(directory, names)

    @classmethod
    def load_sharded(cls, directory: str | Path) -> FundusArrays:
        """A sharded site (:meth:`save_sharded`, ``fovea data prepare``): the index in memory,
        the images on disk."""
        index = Path(directory) / INDEX_FILE
        if not index.is_file():
            raise FileNotFoundError(f"no sharded dataset at {directory} (no {INDEX_FILE})")
        z = _read_npz(index, SHARDED_SCHEMA_VERSION, "dataset index")
        shards = [index.parent / str(name) for name in z["shards"]]
        columns = {k: z[k] for k in ("grade", "gradable", "site", "patient")}
        labels = z.get("labels")
        images = ShardedImages(shards)
        if len(images) != len(columns["grade"]):
            raise ValueError(
                f"{index}: {len(columns['grade'])} rows but the shards hold {len(images)} images"
            )
        return cls(images=images, labels=labels, **columns)


def _read_npz(path: Path, version: int, what: str) -> dict[str, np.ndarray]:
    """Every array of a Fovea ``.npz`` of schema ``version``; ValueError names the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            found = int(z["schema_version"]) if "schema_version" in z else None
            if found != version:
                raise ValueError(f"schema_version {found}, expected {version}")
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable Fovea {what} ({e or type(e).__name__})") from None
