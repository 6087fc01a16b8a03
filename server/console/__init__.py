"""What the workstation prints: progress bars, one-screen run summaries and tables."""

from server.console.progress import progress_reporter
from server.console.summary import print_run_summary
from server.console.tables import print_devices, print_rollout, status_view

__all__ = [
    "print_devices",
    "print_rollout",
    "print_run_summary",
    "progress_reporter",
    "status_view",
]
