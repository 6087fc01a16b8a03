"""A clinician's verdict in the bundle's task: a grade or a label checked against its classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from edge_agent.service.errors import ApiError
from models import TaskSpec

Label = str | int


@dataclass(frozen=True)
class Verdict:
    """A checked verdict: the class index (single-label kinds) and the class names given."""

    grade: int | None
    labels: tuple[str, ...] | None

    def as_dict(self, task: TaskSpec, by_grade: bool) -> dict[str, object]:
        """The review's answer: ``grade`` for a grading task reviewed by grade (as DR reviews
        always were), else ``label`` (a name; for ``multilabel`` the list of names), with the
        index as ``grade`` (grading) or ``class_index`` (other single-label kinds)."""
        if task.kind == "grading":
            if by_grade:
                return {"grade": self.grade}
            return {"grade": self.grade, "label": self.labels[0] if self.labels else None}
        if task.kind == "multilabel":
            return {"label": None if self.labels is None else list(self.labels)}
        return {"label": self.labels[0] if self.labels else None, "class_index": self.grade}


def _valid(task: TaskSpec) -> str:
    last = task.num_classes - 1
    return (
        f"task {task.name} ({task.kind}) has the classes {list(task.classes)} (0-{last} by index)"
    )


def _index(task: TaskSpec, value: Label) -> int:
    """The class index of a name or an index; 422 naming the value and the valid classes."""
    if isinstance(value, str):
        if value not in task.classes:
            raise ApiError(422, f"label {value!r} is not a class: {_valid(task)}")
        return task.classes.index(value)
    if not 0 <= value < task.num_classes:
        raise ApiError(422, f"label {value} is not a class index: {_valid(task)}")
    return value


def resolve_review(
    task: TaskSpec, grade: int | None, label: Label | Sequence[Label] | None
) -> Verdict:
    """The verdict of a review body in ``task``'s classes (None, None: ungradable).

    ``grade`` (an index) is for grading tasks and answered 400 when out of range, as DR reviews
    always were; a ``label`` not among the task's classes is answered 422, naming it and them.
    """
    if grade is not None:
        if task.kind != "grading":
            raise ApiError(
                422,
                f"grade {grade}: {_valid(task)}; review it with 'label' (a class name or index)",
            )
        if grade >= task.num_classes:
            raise ApiError(400, f"invalid review: grade {grade} is out of range: {_valid(task)}")
        return Verdict(grade, (task.classes[grade],))
    if label is None:
        return Verdict(None, None)
    if task.kind == "multilabel":
        values = [label] if isinstance(label, str | int) else list(label)
        present = sorted({_index(task, v) for v in values})
        return Verdict(None, tuple(task.classes[i] for i in present))
    if not isinstance(label, str | int):
        raise ApiError(422, f"label {list(label)}: one class per review, {_valid(task)}")
    index = _index(task, label)
    return Verdict(index, (task.classes[index],))


class ReviewBody(BaseModel):
    """A clinician's verdict on one case: a ``grade`` (grading tasks, by index) or a ``label``
    (any task: a class name or index; for a multilabel task a list of them, [] for none)."""

    model_config = ConfigDict(extra="forbid")

    grade: int | None = Field(None, ge=0)
    label: StrictStr | StrictInt | list[StrictStr | StrictInt] | None = None
    gradable: bool = True
    comment: str = Field("", max_length=2000)

    @model_validator(mode="after")
    def _verdict_if_gradable(self) -> ReviewBody:
        given = self.grade is not None or self.label is not None
        if self.gradable and not given:
            raise ValueError("a gradable image needs a grade (or a label)")
        if not self.gradable and given:
            raise ValueError("an ungradable image has no grade or label: send them null")
        if self.grade is not None and self.label is not None:
            raise ValueError("send a grade or a label, not both")
        return self


def review_body(raw: bytes) -> ReviewBody:
    """The review request's JSON body, checked (ApiError 400 naming the bad field)."""
    try:
        return ReviewBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"invalid review: {where}: {first['msg']}") from None


__all__ = ["ReviewBody", "Verdict", "resolve_review", "review_body"]
