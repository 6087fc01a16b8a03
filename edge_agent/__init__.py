"""The device side: bundles, runtime, service (filled in by the edge-agent issue)."""

__all__: list[str] = []
