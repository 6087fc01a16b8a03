"""Screening as one object (decode -> infer -> recommend -> record, and review) and its routes:
``POST /v1/screen`` (one or both eyes) and ``POST /v1/cases/{id}/review``."""

import asyncio
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from edge_agent.screening import (
    DEFAULT_CHECKS,
    DecodeLimits,
    EyeResult,
    FundusCheckSettings,
    ImageError,
    PatientResult,
    eye_result,
    patient_recommendation,
    prepare_image,
)
from edge_agent.service.auth import Principal
from edge_agent.service.config import AgentConfig
from edge_agent.service.drift import DriftWatch
from edge_agent.service.errors import ApiError
from edge_agent.service.memory import MemoryBudget
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.predictor import Predictor
from edge_agent.service.review import ReviewBody, resolve_review, review_body
from edge_agent.service.uploads import Upload, parse_form
from edge_agent.service.workpool import WorkPool
from models import DR_GRADING, PreprocessSpec, TaskSpec

INLINE_FORM = 4 << 20
"""Forms up to this size are parsed on the event loop (a camera JPEG's takes ~0.2 ms)."""


@dataclass(frozen=True)
class ScreeningSettings:
    """The bundle's screening rules: preprocessing, operating point, gradability threshold and
    the task (classes, input channels and preprocessing, output names, patient rule)."""

    spec: PreprocessSpec
    referral_threshold: float
    gradable_threshold: float = 0.5
    task: TaskSpec = DR_GRADING

    @property
    def checks(self) -> FundusCheckSettings:
        """The fundus checks: a grey (one-channel) task's photographs need not be red, and a
        task that does not crop to the fundus need not show a bordered circular field."""
        framed = self.task.input.preprocessing == "fundus_crop"
        red = DEFAULT_CHECKS.min_red_ratio if self.task.input.channels == 3 else 0.0
        return dataclasses.replace(DEFAULT_CHECKS, min_red_ratio=red, framed=framed)

    def __post_init__(self) -> None:
        for name in ("referral_threshold", "gradable_threshold"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")


class CaseStore(Protocol):
    """Where screenings, reviews and reviewed images go (``edge_agent.store.Store``)."""

    def record_screening(
        self,
        *,
        user: str,
        model_version: int | None,
        request: dict[str, Any],
        result: dict[str, Any],
    ) -> str:
        """Store one screened eye; returns its new case id."""
        ...

    def get_case(self, case_id: str) -> object | None:
        """The stored case, or None."""
        ...

    def record_review(
        self,
        case_id: str,
        *,
        user: str,
        grade: int | None,
        gradable: bool,
        comment: str,
        labels: tuple[str, ...] | None = None,
        num_classes: int = ...,
    ) -> object:
        """Store a clinician's review of a case (a later review supersedes; all are kept)."""
        ...

    def save_case_image(self, case_id: str, image: np.ndarray) -> object:
        """Keep a case's preprocessed image (uint8 S x S x 3) on the device."""
        ...


@dataclass(frozen=True)
class _Eye:
    eye: str
    square: np.ndarray
    checks: list[str]
    content_type: str
    size: int
    declared: tuple[int, int]
    decoded: tuple[int, int]

    def request(self) -> dict[str, Any]:
        """What the case record keeps about the upload (never its pixels)."""
        return {
            "eye": self.eye,
            "content_type": self.content_type,
            "bytes": self.size,
            "pixels": list(self.declared),
            "decoded": list(self.decoded),
        }


def _prepare(
    upload: Upload,
    limits: DecodeLimits,
    settings: ScreeningSettings,
    memory: MemoryBudget | None,
) -> _Eye:
    name = "unknown" if upload.name == "image" else upload.name
    spec, checks, data, kind = settings.spec, settings.checks, upload.data, upload.content_type
    try:
        ready = prepare_image(data, kind, spec, checks, limits, memory=memory)
    except ImageError as exc:
        retry = {"Retry-After": "1"} if exc.status == 503 else None
        raise ApiError(exc.status, f"{name}: {exc}", headers=retry) from None
    return _Eye(
        name, ready.square, ready.checks, kind or "", len(data), ready.declared, ready.decoded
    )


class _PendingImages:
    """Preprocessed images of cases not yet reviewed, in memory only (bounded, oldest dropped).

    A review moves the image to the store; images that are never reviewed are never written,
    unless the configuration says to keep every image.
    """

    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._images: dict[str, np.ndarray] = {}

    def put(self, case_id: str, image: np.ndarray) -> None:
        if len(self._images) >= self._limit:
            self._images.pop(next(iter(self._images)))
        self._images[case_id] = image

    def pop(self, case_id: str) -> np.ndarray | None:
        return self._images.pop(case_id, None)


class Screening:
    """Screening over a model and a case store: decode -> infer -> recommend -> record.

    ``screen`` runs the whole pipeline for one request; ``review`` records a clinician's
    verdict on a screened case and keeps its image when it was gradable.
    """

    drift: DriftWatch | None = None
    """Counts every screened eye against the bundle's drift reference, when set."""

    def __init__(
        self,
        predictor: Predictor,
        cases: CaseStore,
        settings: ScreeningSettings,
        config: AgentConfig,
        metrics: AgentMetrics,
        pool: WorkPool | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        self.predictor, self.cases, self.settings = predictor, cases, settings
        self.pool = pool or WorkPool(config.screen_workers, config.screen_queue, name="screening")
        self.memory = memory
        self.config, self.metrics = config, metrics
        self.limits = DecodeLimits(
            max_bytes=config.max_image_bytes, max_pixels=config.max_image_pixels
        )
        self.pending = _PendingImages()
        self.task = settings.task
        self.info = info = predictor.info
        self.model = {
            "name": info.name,
            "version": info.version,
            "backend": info.backend,
            "precision": info.precision,
        }

    async def screen(
        self, body: bytes, content_type: str | None, user: Principal
    ) -> dict[str, Any]:
        """Grade the eye(s) of a multipart ``body`` and store each as a case; the response body
        (4xx for a bad form or image, 503 with Retry-After while the image pool is full)."""
        async with self.pool.admitted():
            if len(body) <= INLINE_FORM:
                uploads = parse_form(body, content_type)
            else:
                uploads = await self.pool.run(parse_form, body, content_type)
            eyes = await self.decode(uploads)
            outputs = await self.infer(eyes)
            results, patient = self.recommend(eyes, outputs)
            if self.drift is not None:
                self.drift.observe([e.square for e in eyes], results)
            return await self.record(user, eyes, results, patient)

    async def decode(self, uploads: list[Upload]) -> list[_Eye]:
        """The uploaded eye(s), decoded, checked and cropped to the model's square (4xx if bad)."""
        eyes: list[_Eye] = []
        for upload in uploads:
            prepare = functools.partial(_prepare, upload, self.limits, self.settings, self.memory)
            eyes.append(await self.pool.run(prepare))
        return eyes

    async def infer(self, eyes: list[_Eye]) -> dict[str, np.ndarray]:
        """The model's outputs for the eyes, as one batch in the task's channels."""
        batch = self.settings.spec.normalise(np.stack([e.square for e in eyes]))
        return await self.predictor.infer(batch)

    def recommend(
        self, eyes: list[_Eye], outputs: dict[str, np.ndarray]
    ) -> tuple[list[EyeResult], PatientResult]:
        """Each eye's result at the bundle's operating point, and the patient's (the task's
        patient rule)."""
        task = self.task
        quality = outputs[task.outputs.quality] if task.quality_head else None
        results = [
            eye_result(
                outputs[task.outputs.classes][i],
                None if quality is None else quality[i],
                e.checks,
                referral_threshold=self.settings.referral_threshold,
                gradable_threshold=self.settings.gradable_threshold,
                eye=e.eye,
                task=task,
            )
            for i, e in enumerate(eyes)
        ]
        return results, patient_recommendation(results)

    async def record(
        self,
        user: Principal,
        eyes: list[_Eye],
        results: list[EyeResult],
        patient: PatientResult,
    ) -> dict[str, Any]:
        """Store each eye as a case (its image kept or held until review), count the screening;
        the response body."""
        body_eyes = []
        for e, result in zip(eyes, results, strict=True):
            entry = result.to_dict()
            case_id = await asyncio.to_thread(
                functools.partial(
                    self.cases.record_screening,
                    user=user.name,
                    model_version=self.info.version,
                    request=e.request(),
                    result={**entry, "patient": patient.to_dict(), "model": self.model},
                )
            )
            if self.config.keep_images:
                await asyncio.to_thread(self.cases.save_case_image, case_id, e.square)
            else:
                self.pending.put(case_id, e.square)
            body_eyes.append({"case_id": case_id, **entry})
        self.metrics.screenings.labels(patient.recommendation.value).inc()
        body = {
            "case_id": body_eyes[0]["case_id"],
            "patient": patient.to_dict(),
            "eyes": body_eyes,
            "model": self.model,
            "referral_threshold": self.settings.referral_threshold,
        }
        if self.task != DR_GRADING:  # DR answers stay exactly as they always were
            body["task"] = {
                "name": self.task.name,
                "kind": self.task.kind,
                "classes": list(self.task.classes),
                "patient_rule": self.task.patient_rule,
                "quality_head": self.task.quality_head,
            }
        return body

    async def review(self, case_id: str, request: Request, user: Principal) -> dict[str, Any]:
        """Record a clinician's verdict (a grade, or a label in the task's classes) for a
        screened case; the response body (4xx if refused: 422 for a label not in the task)."""
        body = review_body(await request.body())
        verdict = resolve_review(self.task, body.grade, body.label)
        if len(case_id) > 64 or await asyncio.to_thread(self.cases.get_case, case_id) is None:
            raise ApiError(404, f"no case {case_id[:64]!r} on this device")
        review = functools.partial(
            self.cases.record_review,
            case_id,
            user=user.name,
            grade=verdict.grade,
            gradable=body.gradable,
            comment=body.comment,
            labels=verdict.labels,
            num_classes=self.task.num_classes,
        )
        try:
            await asyncio.to_thread(review)
        except ValueError as exc:  # the store's own checks (StoreError is a ValueError)
            raise ApiError(400, f"review not recorded: {exc}") from None
        image = self.pending.pop(case_id)
        if image is not None and body.gradable:
            await asyncio.to_thread(self.cases.save_case_image, case_id, image)
        answer = verdict.as_dict(self.task, body.grade is not None or not body.gradable)
        return {
            "case_id": case_id,
            "reviewer": user.name,
            **answer,
            **body.model_dump(include={"gradable", "comment"}),
        }


def screening_router(
    screening: Screening,
    can_screen: Callable[[Request], Principal],
    can_review: Callable[[Request], Principal],
) -> APIRouter:
    """The screening and review routes over ``screening``, behind their permissions."""
    router = APIRouter()
    CanScreen = Annotated[Principal, Depends(can_screen)]
    CanReview = Annotated[Principal, Depends(can_review)]

    @router.post("/v1/screen")
    async def screen(request: Request, user: CanScreen) -> JSONResponse:
        """Grade one eye ('image', 'left' or 'right') or both eyes of a patient."""
        body = await screening.screen(
            await request.body(), request.headers.get("content-type"), user
        )
        return JSONResponse(body)  # plain JSON: no re-validation

    @router.post("/v1/cases/{case_id}/review")
    async def review(case_id: str, request: Request, user: CanReview) -> dict[str, Any]:
        """Record a clinician's grade for a screened case (confirming or correcting it)."""
        return await screening.review(case_id, request, user)

    return router


__all__ = ["CaseStore", "ReviewBody", "Screening", "ScreeningSettings", "screening_router"]
