"""The export stage: ONNX at fp32/fp16/INT8, accuracy checked at each, TensorRT recipes."""

from server.export.any_module import ModuleExport, export_module_onnx
from server.export.config import (
    ExportConfig,
    ExportConfigError,
    load_export_config,
    parse_export_config,
)
from server.export.int8 import CalibrationReader, quiet
from server.export.latency import Speed, measure, onnx_speed
from server.export.onnx_export import ExportError, export_onnx
from server.export.report import EXPORT_FILE, print_export_summary
from server.export.run import ExportInputError, ExportResult, export
from server.export.scoring import predict_onnx, score, session

__all__ = [
    "EXPORT_FILE",
    "CalibrationReader",
    "ExportConfig",
    "ExportConfigError",
    "ExportError",
    "ExportInputError",
    "ExportResult",
    "ModuleExport",
    "Speed",
    "export",
    "export_module_onnx",
    "export_onnx",
    "load_export_config",
    "measure",
    "onnx_speed",
    "parse_export_config",
    "predict_onnx",
    "print_export_summary",
    "quiet",
    "score",
    "session",
]
