"""The device side: bundles, install, runtime, screening, service, store, telemetry, fl.

The package front holds only what is cheap to import: ``agent_version``.
"""

from edge_agent.version import agent_version

__all__ = ["agent_version"]
