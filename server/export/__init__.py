"""The export stage: ONNX at fp32/fp16/INT8, accuracy checked at each, TensorRT recipes."""

from server.export.config import ExportConfig, load_export_config, parse_export_config
from server.export.onnx_export import ExportError
from server.export.run import ExportInputError, ExportResult, export

__all__ = [
    "ExportConfig",
    "ExportError",
    "ExportInputError",
    "ExportResult",
    "export",
    "load_export_config",
    "parse_export_config",
]
