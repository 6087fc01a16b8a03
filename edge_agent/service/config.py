"""The agent's configuration: ``agent.yaml`` in the device root, overridable by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_NAME = "agent.yaml"


class AgentConfig(BaseModel):
    """Everything ``fovea-agent serve`` can be told; every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "int8", "int8dyn"] = "auto"
    threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime intra-op threads")
    site: str | None = Field(
        None,
        description="this device's site as the federation names it (`fovea-agent node --site`; "
        "both default to the root folder's name): picks its entry in a bundle's "
        "site_thresholds.json",
    )
    worker_python: Path | None = Field(
        None,
        description="run TensorRT in an inference worker under this Python (JetPack 5: its own "
        "Python 3.8 venv, where JetPack's tensorrt imports); None: in the agent's process",
    )
    worker_backends: tuple[Literal["tensorrt", "onnxruntime"], ...] = Field(
        ("tensorrt",),
        description="what the worker hosts: add onnxruntime to use JetPack's onnxruntime-gpu",
    )
    max_batch: int = Field(16, ge=1, le=1024, description="dynamic batching: rows per run")
    max_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="dynamic batching: wait for a batch to fill (0: run as soon as the backend "
        "is free; what arrives meanwhile forms the next batch)",
    )
    inline_batches: bool | None = Field(
        None, description="run batches on the event loop, not a worker thread (None: on one core)"
    )
    max_request_rows: int = Field(64, ge=1, le=4096, description="rows in one KServe request")
    max_request_bytes: int | None = Field(
        None,
        ge=1024,
        description="one KServe infer body (None: max_request_rows of the model's input as "
        "binary float32, plus 1 MiB for the JSON header)",
    )
    max_image_bytes: int = Field(20 << 20, ge=1024, description="one uploaded image")
    max_image_pixels: int = Field(
        24_000_000, ge=1024, description="one decoded image (24 MP: a 6000 x 4000 camera)"
    )
    memory_budget_mb: int | None = Field(
        None,
        ge=16,
        description="request bodies and image decodes held at once; past it 503 (None: an "
        "eighth of the device's memory, 64 to 384 MiB)",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, le=600, description="a connection's next request headers, complete"
    )
    body_timeout_s: float = Field(
        10.0, gt=0, le=600, description="the longest pause while a request body arrives"
    )
    request_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="a whole request, from its first byte to its last"
    )
    max_connections: int | None = Field(
        None, ge=2, description="open connections (None: the open-file limit less 128)"
    )
    parse_workers: int = Field(
        1, ge=1, le=64, description="threads that inflate and parse JSON or compressed bodies"
    )
    parse_queue: int = Field(
        32,
        ge=0,
        le=1024,
        description="bodies that may wait for those threads (their memory is in the budget "
        "already); more get 503",
    )
    screen_workers: int = Field(
        2, ge=1, le=64, description="threads that decode, check and crop uploaded images"
    )
    screen_queue: int = Field(
        8,
        ge=0,
        le=1024,
        description="screenings that may wait for those threads; more are answered 503",
    )
    token_cache_seconds: float = Field(2.0, ge=0.0, le=300.0)
    keep_images: bool = Field(False, description="keep every screened image, not just reviewed")
    case_retention_count: int = Field(5000, ge=0, description="reviewed-case images kept")
    case_retention_days: float | None = Field(None, gt=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    refused_restart_s: float = Field(
        10.0,
        ge=0.0,
        description="after the served slot fails a re-check, answer 503 this long, then exit "
        "(code 1) so the supervisor starts the agent again on a slot that verifies (the other "
        "one, rolled back to); 0: stay refused until restarted by hand",
    )
    verify_interval_s: float = Field(
        3600.0,
        ge=0.0,
        description="re-hash the served slot's files this often while serving (0: never); on a "
        "mismatch the model stops answering (503) until the agent restarts on a slot that "
        "verifies",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> AgentConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def tls(self) -> bool:
        """True when a certificate and key are configured."""
        return self.tls_cert is not None


def load_config(root: Path, **overrides: Any) -> AgentConfig:
    """``root/agent.yaml`` (if present) with the non-None ``overrides`` on top.

    Relative TLS paths are taken relative to the root. Raises ValueError naming the file and
    the field when the file is not valid.
    """
    path = root / CONFIG_NAME
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
        data = dict(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ValueError(
            f"{path}: setting {field!r}: {first['msg']} (value: {first.get('input')!r})"
        ) from None
    updates = {
        name: root / value
        for name in ("tls_cert", "tls_key")
        if (value := getattr(config, name)) is not None and not value.is_absolute()
    }
    return config.model_copy(update=updates) if updates else config


__all__ = ["CONFIG_NAME", "AgentConfig", "load_config"]
