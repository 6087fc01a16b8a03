"""What every training stage shares: data, evaluation, sampling, augmentation, state and resume.

Distillation, compression, export (its accuracy checks) and federated fine-tuning build on these:
settings files and the shared config sections, dataset splits, predictions and scores with
confidence intervals, class-balanced sampling, label-preserving augmentation, checkpointed
training state, and the device and ``torchrun`` set-up.
"""

from server.training.augmentation import augment
from server.training.config import AugmentConfig, DataConfig, ModelRef, Schedule, TrainConfig
from server.training.data import (
    DATASET_FILE,
    Splits,
    TrainingData,
    dataset_matches,
    load_site,
    load_splits,
    read_task,
    split_patients,
    synthesise,
)
from server.training.device import Reporter, init_distributed, pick_device, world
from server.training.evaluate import metrics_json, point_metrics, predict
from server.training.loader import auto_workers, eval_batch_size, read_batches, row_batches
from server.training.prepare import (
    PREPARE_LAYOUTS,
    PrepareOptions,
    PrepareResult,
    index_source,
    prepare_dataset,
)
from server.training.sampling import (
    balanced_weights,
    class_of,
    epoch_indices,
    loss_targets,
    sampling_classes,
)
from server.training.scoring import (
    HEADLINE,
    Scored,
    ScoreOptions,
    calibration_json,
    compare,
    score_model,
    validation_point,
)
from server.training.scoring import headline as score_headline
from server.training.settings import ConfigError, read_yaml, validate
from server.training.sources import build_ref, ref_file
from server.training.state import load_state, read_info, save_state

__all__ = [
    "DATASET_FILE",
    "HEADLINE",
    "PREPARE_LAYOUTS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ModelRef",
    "PrepareOptions",
    "PrepareResult",
    "Reporter",
    "Schedule",
    "ScoreOptions",
    "Scored",
    "Splits",
    "TrainConfig",
    "TrainingData",
    "augment",
    "auto_workers",
    "balanced_weights",
    "build_ref",
    "calibration_json",
    "class_of",
    "compare",
    "dataset_matches",
    "epoch_indices",
    "eval_batch_size",
    "index_source",
    "init_distributed",
    "load_site",
    "load_splits",
    "load_state",
    "loss_targets",
    "metrics_json",
    "pick_device",
    "point_metrics",
    "predict",
    "prepare_dataset",
    "read_batches",
    "read_info",
    "read_task",
    "read_yaml",
    "ref_file",
    "row_batches",
    "sampling_classes",
    "save_state",
    "score_headline",
    "score_model",
    "split_patients",
    "synthesise",
    "validate",
    "validation_point",
    "world",
]
