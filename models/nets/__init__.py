"""Model families (torch): ResNet teacher and students, MobileNetV2 students, a small ViT, and
adapters for backbones from elsewhere (your own module, Hugging Face, timm, torchvision, ONNX)."""

from models.nets.adapters import HFNet, ModuleNet, SourceNet, TimmNet, TorchvisionNet
from models.nets.attention import HeadSite, head_rows, head_sites
from models.nets.base import FundusNet, StagedNet, count_parameters
from models.nets.checkpoint import (
    Ancestor,
    CheckpointMeta,
    load_checkpoint,
    model_with_state,
    read_meta,
    save_checkpoint,
)
from models.nets.onnx_teacher import OnnxTeacher
from models.nets.registry import FAMILIES, PRESETS, build_model, family_of
from models.nets.taps import Probed, auto_taps, capture, first_tensor, observe
from models.nets.vit import Attention, ViT
from models.nets.weights import WeightsError, WeightsReport, load_weights_, read_weights

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Ancestor",
    "Attention",
    "CheckpointMeta",
    "FundusNet",
    "HFNet",
    "HeadSite",
    "ModuleNet",
    "OnnxTeacher",
    "Probed",
    "SourceNet",
    "StagedNet",
    "TimmNet",
    "TorchvisionNet",
    "ViT",
    "WeightsError",
    "WeightsReport",
    "auto_taps",
    "build_model",
    "capture",
    "count_parameters",
    "family_of",
    "first_tensor",
    "head_rows",
    "head_sites",
    "load_checkpoint",
    "load_weights_",
    "model_with_state",
    "observe",
    "read_meta",
    "read_weights",
    "save_checkpoint",
]
