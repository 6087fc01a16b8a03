"""Model families (torch): ResNet teacher and students, MobileNetV2 students, a small ViT."""

from models.nets.base import FundusNet, StagedNet, count_parameters
from models.nets.checkpoint import (
    Ancestor,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from models.nets.registry import FAMILIES, PRESETS, build_model, family_of
from models.nets.vit import Attention, ViT

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Ancestor",
    "Attention",
    "CheckpointMeta",
    "FundusNet",
    "StagedNet",
    "ViT",
    "build_model",
    "count_parameters",
    "family_of",
    "load_checkpoint",
    "read_meta",
    "save_checkpoint",
]
