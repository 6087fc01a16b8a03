"""Settings files: YAML read with safe_load (data only), validated, offending keys named."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and the keys."""


def validate(model: type[M], data: Any, source: str, what: str) -> M:
    """``data`` (as read from YAML; None means empty) validated into ``model``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid {what}"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            if err["type"] == "extra_forbidden":
                lines.append(f"  unknown key {where!r}")
            else:
                lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def read_yaml(path: str | Path) -> Any:
    """The data in a YAML file (``yaml.safe_load``: never code)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
