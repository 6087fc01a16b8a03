"""Teacher-assistant chains: when teacher and student differ too much in size, distil through
intermediate models (each generation with the foundation's temperature and weight search) and
record how much each generation loses.

Assistant sizes are chosen automatically: configs interpolated geometrically (width, depth,
heads) between student and teacher in the student's family, picked so that parameter counts
fall in equal ratio steps from the teacher down to the student.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from models.nets import build_model, count_parameters, load_checkpoint, save_checkpoint
from server.compress.steps import Log, StepContext, StepResult, StepSettings, register_step
from server.distill import DistillConfig, run
from server.training import ModelRef

_FIXED = {"patch", "image_size", "dropout", "mlp_ratio", "head_dim"}
"""Config keys an assistant always takes from the student (they must match the data)."""
_NOT_WIDTH = {"depth", "depths", "heads", "expand"}


@dataclass(frozen=True)
class ChainConfig:
    """When to insert assistants and how many at most."""

    max_ratio: float = 8.0
    """Largest teacher/student parameter ratio distilled in one step."""
    max_assistants: int = 3

    def __post_init__(self) -> None:
        if self.max_ratio <= 1 or self.max_assistants < 0:
            raise ValueError(
                f"max_ratio must be > 1 and max_assistants >= 0, got {self.max_ratio}, "
                f"{self.max_assistants}"
            )


def _geo(a: float, b: float, t: float) -> int:
    return max(1, round(a ** (1 - t) * b**t))


def interpolate_config(
    family: str, low: dict[str, Any], high: dict[str, Any], t: float
) -> dict[str, Any]:
    """A config of ``family`` between ``low`` (t=0) and ``high`` (t=1), geometric per number.

    Keys that must match the data (patch, image size) and non-numeric values come from ``low``.
    """
    out: dict[str, Any] = {}
    for key, a in low.items():
        b = high.get(key, a)
        if key in _FIXED:
            out[key] = a
        elif isinstance(a, int) and isinstance(b, int):
            out[key] = _geo(a, b, t)
        elif (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(isinstance(v, int) for v in [*a, *b])
        ):
            out[key] = [_geo(x, y, t) for x, y in zip(a, b, strict=True)]
        else:
            out[key] = a
    if family == "vit" and isinstance(out.get("heads"), int) and "head_dim" not in out:
        heads = out["heads"]
        out["dim"] = max(heads, round(out["dim"] / heads) * heads)
    return out


def _widened(config: dict[str, Any], factor: float) -> dict[str, Any]:
    """``config`` with every width-like number multiplied by ``factor``."""
    out = dict(config)
    for key, v in config.items():
        if key in _FIXED or key in _NOT_WIDTH:
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            out[key] = max(1, round(v * factor))
        elif isinstance(v, list) and all(isinstance(x, int) for x in v):
            out[key] = [max(1, round(x * factor)) for x in v]
    return out


def _family_config(ref: ModelRef) -> tuple[str, dict[str, Any]]:
    model = build_model(ref.name, ref.config)
    return model.family, dict(model.config)


def _size(family: str, config: dict[str, Any]) -> int:
    """Parameters of a config, built on the meta device (no memory, no initialisation)."""
    with torch.device("meta"):
        return count_parameters(build_model(family, config))


def plan_chain(teacher: ModelRef, student: ModelRef, chain: ChainConfig) -> list[ModelRef]:
    """The assistants between ``teacher`` and ``student``, largest first (empty: go direct).

    Their number makes every step's parameter ratio at most ``chain.max_ratio`` (capped at
    ``chain.max_assistants``); each is the student-family config closest to its target size.
    """
    t_family, t_cfg = _family_config(teacher)
    s_family, s_cfg = _family_config(student)
    p_t, p_s = _size(t_family, t_cfg), _size(s_family, s_cfg)
    ratio = p_t / p_s
    if ratio <= chain.max_ratio:
        return []
    steps = min(math.ceil(math.log(ratio) / math.log(chain.max_ratio)), chain.max_assistants + 1)
    # the upper end of the ladder: the teacher's config, or a widened student of its size
    high = t_cfg if t_family == s_family else _widened(s_cfg, math.sqrt(ratio))
    candidates: dict[int, dict[str, Any]] = {}
    for i in range(101):
        cfg = interpolate_config(s_family, s_cfg, high, i / 100)
        try:
            candidates.setdefault(_size(s_family, cfg), cfg)
        except ValueError:
            continue
    chosen: list[ModelRef] = []
    upper = p_t
    for i in range(1, steps):
        target = p_t * (p_s / p_t) ** (i / steps)
        fits = [p for p in candidates if p_s < p < upper]
        if not fits:
            break
        best = min(fits, key=lambda p: abs(math.log(p / target)))
        chosen.append(ModelRef(name=s_family, config=candidates[best]))
        upper = best
    return chosen


@dataclass
class Generation:
    """One link of the chain: who taught whom, and what it cost."""

    name: str
    parameters: int
    teacher_parameters: int
    accuracy: float
    teacher_accuracy: float
    decay: float
    """accuracy / this generation's teacher's accuracy (on the report split)."""
    cumulative_decay: float
    """accuracy / the chain's first teacher's accuracy."""
    search: dict[str, Any] | None
    checkpoint: str


@dataclass
class ChainOutcome:
    """Every generation, and the final student's checkpoint."""

    split: str
    generations: list[Generation] = field(default_factory=list)
    checkpoint: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "split": self.split,
            "generations": [asdict(g) for g in self.generations],
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
        }


def distil_chain(
    cfg: DistillConfig,
    models: list[ModelRef],
    out: Path,
    *,
    search: bool = True,
    log: Log = print,
) -> ChainOutcome:
    """Distil ``cfg.teacher`` into ``models[0]``, that into ``models[1]`` ... (the last is the
    student), each generation a full distillation run under ``out/gen<i>`` (with the
    temperature and weight search when ``search``). Finished generations are reused on resume.
    """
    if cfg.teacher is None:
        raise ValueError("a teacher-assistant chain needs a teacher checkpoint (teacher: PATH)")
    teacher: Path | ModelRef = cfg.teacher  # a source teacher (onnx:, hf:...) starts a chain too
    outcome = ChainOutcome(split="val")
    first_accuracy: float | None = None
    for i, ref in enumerate(models, 1):
        gen_out = out / f"gen{i}"
        gen_cfg = cfg.model_copy(
            update={
                "teacher": teacher,
                "student": ref,
                "out": gen_out,
                "search": cfg.search.model_copy(update={"enabled": search}),
            }
        )
        name = "student" if i == len(models) else f"assistant{i}"
        log(f"chain generation {i}/{len(models)}: {ref.name} {ref.config}")
        result = run(gen_cfg, name=name, log=log).metrics
        split = "test" if "test" in result[name] else "val"
        outcome.split = split
        acc = result[name][split]["accuracy"]["value"]
        t_acc = result["teacher"][split]["accuracy"]["value"]
        if first_accuracy is None:
            first_accuracy = t_acc
        outcome.generations.append(
            Generation(
                name=name,
                parameters=result[name]["parameters"],
                teacher_parameters=result["teacher"]["parameters"],
                accuracy=acc,
                teacher_accuracy=t_acc,
                decay=acc / max(t_acc, 1e-9),
                cumulative_decay=acc / max(first_accuracy, 1e-9),
                search=result.get("search"),
                checkpoint=str(gen_out / f"{name}.json"),
            )
        )
        teacher = gen_out / f"{name}.json"
    outcome.checkpoint = teacher if isinstance(teacher, Path) else None
    return outcome


class AssistantChainSettings(StepSettings):
    """``assistant_chain`` step settings."""

    student: ModelRef
    """The target student (registry name and config)."""
    start: Literal["model", "teacher"] = "model"
    """Top of the chain: the step's input model, or the run's original teacher."""
    max_ratio: float = Field(8.0, gt=1)
    max_assistants: int = Field(3, ge=0)
    search: bool = True


@register_step("assistant_chain", AssistantChainSettings)
def assistant_chain_step(
    model: Any, context: StepContext, settings: AssistantChainSettings
) -> StepResult:
    """Distil the top model into ``settings.student`` through automatically sized assistants."""
    if settings.start == "teacher":
        if context.teacher_path is None or context.teacher is None:
            raise ValueError("assistant_chain start: teacher needs a run with a teacher")
        top_path, top = context.teacher_path, context.teacher
    else:
        top = model
        top_path = save_checkpoint(
            model, context.out_dir / "top", name="top", preprocess=context.data.spec
        )
    top_ref = ModelRef(name=top.family, config=dict(top.config))
    chain = ChainConfig(settings.max_ratio, settings.max_assistants)
    assistants = plan_chain(top_ref, settings.student, chain)
    context.log(
        f"assistant_chain: {len(assistants)} assistant(s) "
        + ", ".join(f"{a.name} {a.config}" for a in assistants)
    )
    cfg = context.distill.model_copy(update={"teacher": top_path})
    outcome = distil_chain(
        cfg,
        [*assistants, settings.student],
        context.out_dir,
        search=settings.search,
        log=context.log,
    )
    assert outcome.checkpoint is not None
    student, meta = load_checkpoint(outcome.checkpoint)
    return StepResult(
        model=student,
        metrics=dict(meta.metrics),
        details=outcome.as_dict(),
        curve=[
            {"label": g.name, "parameters": g.parameters, "accuracy": g.accuracy}
            for g in outcome.generations
        ],
    )
