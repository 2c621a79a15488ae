"""What both training loops (metric learning in `simsearch.training`, autoencoders in `simsearch.pretraining`) share
about a run: its folder's layout and crash-safe writes, its recipe as data, resuming and the refusal to resume
another run, the best epoch, throughput and seeding."""

from simsearch.runs.folder import (
    HISTORY_FILE,
    LAST_DIR,
    STATE_FILE,
    forget_run,
    load_state,
    read_history,
    save_state,
    seed_everything,
    write_json,
)
from simsearch.runs.recipe import RecipeError, RunIdentity, parse_assignments, recipe_dict, with_changes
from simsearch.runs.run import Best, EpochProgress, RunFolder, Throughput

__all__ = [
    "HISTORY_FILE",
    "LAST_DIR",
    "STATE_FILE",
    "Best",
    "EpochProgress",
    "RecipeError",
    "RunFolder",
    "RunIdentity",
    "Throughput",
    "forget_run",
    "load_state",
    "parse_assignments",
    "read_history",
    "recipe_dict",
    "save_state",
    "seed_everything",
    "with_changes",
    "write_json",
]
