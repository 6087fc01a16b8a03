"""Getting bundles onto devices (filled in by the deploy issue)."""

__all__: list[str] = []
