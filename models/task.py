"""The screening task as data: kind, classes, referral and patient rules, quality head, outputs.

A :class:`TaskSpec` says what a model is asked and how its answer becomes a referral. It is
read from YAML (``safe_load``, unknown keys refused, the offending file and field named) and is
meant to travel with every checkpoint, export and bundle manifest. Diabetic-retinopathy grading
(ICDR 0-4, refer at moderate NPDR or worse, with an image-quality head) is the built-in default,
:data:`DR_GRADING`; the module's constants are its values.

The referral score of an eye is one probability whatever the kind: the softmax mass of the
referral classes (``grading``, ``multiclass``), the positive class's sigmoid (``binary``), or
the chance that any referral label is present, labels taken as independent (``multilabel``).
The operating point is a threshold on that score, set on validation at ``target_sensitivity``,
with ``specificity_floor`` the specificity it should keep (reported when it is not kept); its
calibrated reading (temperature scaling of the score's logit, fitted on validation) is in
:mod:`models.calibration`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TaskKind = Literal["grading", "multiclass", "binary", "multilabel"]
KINDS: tuple[str, ...] = ("grading", "multiclass", "binary", "multilabel")


class TaskSpecError(ValueError):
    """A task spec that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Referral(_Strict):
    """Which answers mean "refer", and the operating point the threshold is set at."""

    classes: tuple[str, ...] = ()
    """Single-label kinds: refer when the eye is one of these classes."""
    labels: tuple[str, ...] = ()
    """``multilabel``: refer when any of these labels is present."""
    target_sensitivity: float = Field(0.95, gt=0, lt=1)
    """The threshold on the referral score reaches this sensitivity on validation."""
    specificity_floor: float = Field(0.80, ge=0, lt=1)
    """The specificity the operating point should keep on validation; when the target
    sensitivity is reached only below it, the threshold keeps the sensitivity and says so."""


class InputSpec(_Strict):
    """What the model sees: channels, square size and how a photograph is brought to it."""

    channels: Literal[1, 3] = 3
    size: int = Field(64, ge=16, le=1024)
    preprocessing: Literal["fundus_crop", "resize"] = "fundus_crop"
    """``fundus_crop``: crop the black border to the fundus circle, then resize; ``resize``:
    resize only."""


class OutputNames(_Strict):
    """The names of the model's outputs (the exporter, KServe metadata and screening use them)."""

    classes: str = Field("class_logits", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    quality: str = Field("quality_logit", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class TaskSpec(_Strict):
    """One screening task: what the model answers and how the answer becomes a decision."""

    schema_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    kind: TaskKind
    classes: tuple[str, ...] = Field(min_length=2, max_length=256)
    """Class names in output order (``grading``: from least to most severe); for
    ``multilabel``, the label names; for ``binary``, (negative, positive)."""
    referral: Referral
    patient_rule: Literal["worse_eye", "any_positive"] = "any_positive"
    """``worse_eye`` (``grading`` only): the patient's grade is the worse eye's; either way the
    patient is referred when any eye is."""
    quality_head: bool = True
    """Whether the model also says if the image is gradable (a sigmoid logit)."""
    input: InputSpec = InputSpec()
    outputs: OutputNames = OutputNames()

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes repeat a name: {list(self.classes)}")
        if self.kind == "binary" and len(self.classes) != 2:
            raise ValueError(
                f"a binary task has two classes (negative, positive), not {self.classes}"
            )
        if self.kind == "multilabel":
            if self.referral.classes or not self.referral.labels:
                raise ValueError(
                    "a multilabel task refers by referral.labels, not referral.classes"
                )
            unknown = [x for x in self.referral.labels if x not in self.classes]
        else:
            if self.referral.labels or not self.referral.classes:
                raise ValueError(f"a {self.kind} task refers by referral.classes")
            unknown = [x for x in self.referral.classes if x not in self.classes]
            if set(self.referral.classes) == set(self.classes):
                raise ValueError("referral.classes name every class: nothing would be cleared")
        if unknown:
            raise ValueError(
                f"referral names {unknown}, which are not in classes {list(self.classes)}"
            )
        if self.patient_rule == "worse_eye" and self.kind != "grading":
            raise ValueError(
                f"patient_rule worse_eye needs ordered classes (kind grading), not {self.kind}"
            )
        if self.outputs.classes == self.outputs.quality:
            raise ValueError(
                f"outputs.classes and outputs.quality are both {self.outputs.classes!r}"
            )
        return self

    # --------------------------------------------------------------------------- outputs
    @property
    def num_classes(self) -> int:
        """How many classes (or labels) the task has."""
        return len(self.classes)

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each output's shape per image, in order: the class logits, then the quality logit."""
        width = 1 if self.kind == "binary" else self.num_classes
        shapes: dict[str, tuple[int, ...]] = {self.outputs.classes: (width,)}
        if self.quality_head:
            shapes[self.outputs.quality] = (1,)
        return shapes

    @property
    def head_width(self) -> int:
        """Every output's width side by side: the columns of a model's one linear head."""
        return sum(width for (width,) in self.output_shapes().values())

    def check_outputs(self, outputs: dict[str, np.ndarray]) -> None:
        """Raise :class:`TaskSpecError` when ``outputs`` (batch-first) do not match the spec."""
        for name, shape in self.output_shapes().items():
            if name not in outputs:
                raise TaskSpecError(f"task {self.name}: the model has no output {name!r}")
            got = tuple(np.shape(outputs[name])[1:])
            if got != shape and not (shape == (1,) and got == ()):
                raise TaskSpecError(
                    f"task {self.name}: output {name!r} is N x {got}, the task needs N x {shape}"
                )

    # --------------------------------------------------------------------------- labels
    def class_index(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Indices of class names; an unknown name is an error that names it."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        bad = sorted({n for n in names if n not in lookup})
        if bad:
            raise TaskSpecError(
                f"task {self.name}: labels {bad} are not among {list(self.classes)}"
            )
        return np.array([lookup[n] for n in names], dtype=np.int64)

    def check_labels(self, labels: np.ndarray) -> None:
        """Refuse labels outside the task: class indices (single-label kinds; -1 = unknown) or
        an N x L 0/1 matrix (``multilabel``)."""
        y = np.asarray(labels)
        if self.kind == "multilabel":
            if y.ndim != 2 or y.shape[1] != self.num_classes or not np.isin(y, (0, 1)).all():
                raise TaskSpecError(
                    f"task {self.name}: labels must be N x {self.num_classes} of 0/1, "
                    f"got shape {y.shape}"
                )
            return
        bad = sorted({int(v) for v in y.reshape(-1) if not -1 <= v < self.num_classes})
        if bad:
            raise TaskSpecError(
                f"task {self.name}: labels {bad} are outside 0..{self.num_classes - 1} "
                f"({', '.join(self.classes)}; -1 for unknown)"
            )

    def is_referable(self, labels: np.ndarray) -> np.ndarray:
        """Whether each labelled eye should be referred (the ground truth of the rule)."""
        y = np.asarray(labels)
        if self.kind == "multilabel":
            return np.asarray(y[:, self._referral_columns()].astype(bool).any(axis=1))
        return np.asarray(np.isin(y, self._referral_columns()))

    # --------------------------------------------------------------------------- scores
    def probabilities(self, class_logits: np.ndarray) -> np.ndarray:
        """Per-class probabilities: softmax (single-label), sigmoid per label (``multilabel``),
        and (1 - p, p) for ``binary``."""
        z = np.asarray(class_logits, dtype=np.float64)
        if self.kind == "multilabel":
            return _sigmoid(z)
        if self.kind == "binary":
            p = _sigmoid(z.reshape(len(z), -1)[:, 0])
            return np.stack([1.0 - p, p], axis=1)
        return softmax(z)

    def referral_score(self, class_logits: np.ndarray) -> np.ndarray:
        """P(refer) per eye, on which the operating point's threshold is set."""
        return self.referral_from(self.probabilities(class_logits))

    def referral_from(self, probabilities: np.ndarray) -> np.ndarray:
        """P(refer) per eye from :meth:`probabilities` already worked out."""
        p = probabilities[:, self._referral_columns()]
        if self.kind == "multilabel":
            return 1.0 - np.prod(1.0 - p, axis=1)
        return p.sum(axis=1)

    def patient_refers(self, eyes: list[bool]) -> bool:
        """The patient rule's referral: any eye referred refers the patient."""
        return any(eyes)

    def patient_class(self, eye_classes: list[int]) -> int | None:
        """The patient's class under ``worse_eye`` (the highest grade); ``None`` otherwise."""
        if self.patient_rule != "worse_eye" or not eye_classes:
            return None
        return max(eye_classes)

    def _referral_columns(self) -> list[int]:
        wanted = self.referral.labels if self.kind == "multilabel" else self.referral.classes
        return [self.classes.index(c) for c in wanted]

    # --------------------------------------------------------------------------- files
    def to_yaml(self) -> str:
        """The spec as YAML, in the form :func:`load_task` reads."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def parse_task(data: Any, source: str = "<task>") -> TaskSpec:
    """A :class:`TaskSpec` from already-read data; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise TaskSpecError(f"{source}: a task spec is a mapping, got {type(data).__name__}")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise TaskSpecError(f"{source}: {where}: {message}") from None


def load_task(path: str | Path) -> TaskSpec:
    """Read a task spec YAML file (data only, never code)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TaskSpecError(f"{path}: no such task spec file") from None
    except yaml.YAMLError as exc:
        raise TaskSpecError(f"{path}: not valid YAML: {exc}") from None
    return parse_task(data, str(path))


DR_GRADING = TaskSpec(
    name="dr-grading",
    description="Diabetic retinopathy, ICDR grades 0-4; refer at moderate NPDR or worse.",
    kind="grading",
    classes=("no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR"),
    referral=Referral(classes=("moderate NPDR", "severe NPDR", "proliferative DR")),
    patient_rule="worse_eye",
    quality_head=True,
    outputs=OutputNames(classes="grade_logits", quality="gradable_logit"),
)
"""The built-in default task."""

GRADE_NAMES: tuple[str, ...] = DR_GRADING.classes
NUM_GRADES = DR_GRADING.num_classes
REFERABLE_MIN_GRADE = DR_GRADING.classes.index(DR_GRADING.referral.classes[0])
OUTPUT_NAMES: tuple[str, str] = (DR_GRADING.outputs.classes, DR_GRADING.outputs.quality)


def is_referable(grade: np.ndarray) -> np.ndarray:
    """Referable DR: grade >= 2 (moderate NPDR or worse)."""
    return np.asarray(grade) >= REFERABLE_MIN_GRADE


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def referable_probability(grade_logits: np.ndarray) -> np.ndarray:
    """P(grade >= 2) from grade logits (N x 5)."""
    return softmax(np.asarray(grade_logits, dtype=np.float64))[:, REFERABLE_MIN_GRADE:].sum(1)


def gradable_probability(gradable_logit: np.ndarray) -> np.ndarray:
    """P(gradable) from the gradable logit (N x 1 or N)."""
    x = np.asarray(gradable_logit, dtype=np.float64).reshape(-1)
    return 1.0 / (1.0 + np.exp(-x))
