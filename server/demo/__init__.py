"""``fovea demo``: the whole loop on built-in defaults, one module per group of stages.

:mod:`server.demo.run` holds the stages from data to export and the driver, :mod:`.agent` the
devices and the rollout, :mod:`.federation` the federated rounds.
"""

from server.demo.run import BUDGET_SECONDS, compress_config, run_demo, student_config

__all__ = ["BUDGET_SECONDS", "compress_config", "run_demo", "student_config"]
