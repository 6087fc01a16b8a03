"""The run report: one self-contained HTML page built from what ``fovea demo`` leaves behind."""

from server.report.page import build_report

__all__ = ["build_report"]
