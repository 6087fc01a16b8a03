"""The agent's HTTP service: KServe v2 inference, screening, review, status and metrics."""

from edge_agent.service.app import create_app
from edge_agent.service.auth import PERMISSIONS, Authenticator, Principal, TokenCache
from edge_agent.service.codec import InferRequest, decode_request, encode_response
from edge_agent.service.config import CONFIG_NAME, AgentConfig, load_config
from edge_agent.service.errors import ApiError
from edge_agent.service.metrics import AgentMetrics
from edge_agent.service.predictor import ModelInfo, Predictor, TensorInfo
from edge_agent.service.screen import CaseStore, Screening, ScreeningSettings
from edge_agent.service.server import serve

__all__ = [
    "CONFIG_NAME",
    "PERMISSIONS",
    "AgentConfig",
    "AgentMetrics",
    "ApiError",
    "Authenticator",
    "CaseStore",
    "InferRequest",
    "ModelInfo",
    "Predictor",
    "Principal",
    "Screening",
    "ScreeningSettings",
    "TensorInfo",
    "TokenCache",
    "create_app",
    "decode_request",
    "encode_response",
    "load_config",
    "serve",
]
