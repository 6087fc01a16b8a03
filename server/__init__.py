"""Training side: distillation (and later compression, export, federation) and the CLI."""

__all__: list[str] = []
