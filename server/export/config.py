"""Export settings: what to build, how to calibrate, what accuracy loss is acceptable."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from server.training import ConfigError, read_yaml, validate

Precision = Literal["fp32", "fp16", "int8", "int8dyn"]
CalibrationName = Literal["MinMax", "Entropy", "Percentile"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8", "int8dyn")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorRTConfig(_Strict):
    """Engine build settings (used only where TensorRT and a GPU exist)."""

    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(8, ge=1)
    max_batch: int = Field(32, ge=1)
    workspace_mb: int = Field(1024, ge=16)
    """Explicit workspace limit: on a Jetson the GPU shares memory with the CPU."""
    precisions: list[Literal["fp32", "fp16", "int8"]] = ["fp16", "int8"]
    dla_core: int | None = Field(None, ge=0)
    dla_batches: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    """DLA needs static shapes: with ``dla_core``, one engine per batch size here."""

    @model_validator(mode="after")
    def _dla_batches_positive(self) -> TensorRTConfig:
        if any(b < 1 for b in self.dla_batches):
            raise ValueError(f"dla_batches must be >= 1, got {self.dla_batches}")
        return self


class ExportConfig(_Strict):
    """Everything ``fovea export`` needs besides the run directory."""

    schema_version: Literal[1] = 1
    opset: int = Field(17, ge=13, le=17)
    """TensorRT 8.5 (JetPack 5.1) reads ONNX opsets up to 17."""
    precisions: list[Precision] = Field(default_factory=lambda: list(PRECISIONS))
    budget: float = Field(1.0, ge=0, le=100)
    """INT8 may lose at most this many accuracy points against fp32 on the held-out split."""
    fp16_budget: float = Field(0.2, ge=0, le=100)
    calibration_size: int = Field(256, ge=1)
    min_calibration: int = Field(32, ge=1)
    """Fewer calibration images than this is an error, not a silently poor INT8 model."""
    calibration_methods: list[CalibrationName] = ["MinMax", "Entropy", "Percentile"]
    int8_source: Literal["calibrate", "qat"] = "calibrate"
    """"qat": take the run's ``model.qat.onnx`` (``fovea compress``'s QAT step, already Q/DQ)
    as the INT8 model instead of calibrating."""
    max_excluded: int = Field(8, ge=0)
    """The accuracy-aware fallback keeps at most this many layers in float."""
    sensitivity_samples: int = Field(128, ge=8)
    golden_size: int = Field(16, ge=1)
    validation_size: int = Field(300, ge=1)
    heldout_limit: int | None = Field(2000, ge=32)
    """Score each precision on at most this many held-out images (None: all)."""
    parity_atol: dict[str, float] = Field(
        default_factory=lambda: {"fp32": 1e-3, "fp16": 5e-2, "int8": 1.0, "int8dyn": 1.0}
    )
    """Largest absolute logit difference against PyTorch on golden.npz, per precision."""
    latency_runs: int = Field(30, ge=1)
    throughput_batch: int = Field(32, ge=1)
    threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads for latency (0: its default)."""
    tensorrt: TensorRTConfig = Field(default_factory=TensorRTConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _fp32_is_the_baseline(self) -> ExportConfig:
        if "fp32" not in self.precisions:
            raise ValueError(
                "precisions must include fp32: every other precision is scored against it"
            )
        if (
            self.tensorrt.min_batch > self.tensorrt.opt_batch
            or self.tensorrt.opt_batch > self.tensorrt.max_batch
        ):
            raise ValueError("tensorrt: need min_batch <= opt_batch <= max_batch")
        return self

    def tolerance(self, precision: str) -> float:
        """Parity tolerance of ``precision`` (absolute logit error)."""
        return self.parity_atol.get(precision, 1.0)


ExportConfigError = ConfigError
"""A config that cannot be used, with the file and field named."""


def parse_export_config(data: Any, source: str = "<config>") -> ExportConfig:
    """Validate a mapping (as read from YAML) into an :class:`ExportConfig`."""
    return validate(ExportConfig, data, source, "export config")


def load_export_config(path: str | Path) -> ExportConfig:
    """Read a YAML export config (``yaml.safe_load``: data only)."""
    return parse_export_config(read_yaml(path), str(path))
