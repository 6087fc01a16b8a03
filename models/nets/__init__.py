"""Model families (torch): ResNet teacher and students, MobileNetV2 students, a small ViT."""

from models.nets.base import FundusNet, count_parameters
from models.nets.checkpoint import (
    Ancestor,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from models.nets.registry import FAMILIES, PRESETS, build_model, family_of

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Ancestor",
    "CheckpointMeta",
    "FundusNet",
    "build_model",
    "count_parameters",
    "family_of",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
]
