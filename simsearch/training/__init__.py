"""Metric learning: a recipe (`TrainConfig`, `simsearch.training.recipe`), the model it names
(`simsearch.training.model`), its learning-rate schedule (`simsearch.training.schedule`) and the loop that trains,
validates, checkpoints and resumes it (`simsearch.training.loop`, through `simsearch.runs`)."""

from simsearch.models import channel_data_config
from simsearch.runs import LAST_DIR, STATE_FILE
from simsearch.training.loop import TrainProgress, TrainResult, train
from simsearch.training.model import build_embedder, frozen_stages
from simsearch.training.plan import RunPlan
from simsearch.training.recipe import (
    AUGMENT_OPTIONS,
    RANDOM_PREFIX,
    SAMPLERS,
    TrainConfig,
    TrainingError,
    class_disjoint_split,
    split_classes,
)

__all__ = [
    "AUGMENT_OPTIONS",
    "LAST_DIR",
    "RANDOM_PREFIX",
    "SAMPLERS",
    "RunPlan",
    "STATE_FILE",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingError",
    "build_embedder",
    "channel_data_config",
    "class_disjoint_split",
    "frozen_stages",
    "split_classes",
    "train",
]
