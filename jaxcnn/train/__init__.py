"""Training: `fit(config, workdir)`, the TrainState, pure compiled steps, tasks, optimizers
and schedules from config, transfer-learning policy, warm starts, orbax checkpoints, the
loop's periodic actions, logs and plots."""

from jaxcnn.train import (  # noqa: F401  (registers the "detection", "localization", "siamese")
    detection_task,
    localization_task,
    siamese_task,
)
from jaxcnn.train.averaging import Lookahead, ema_update
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.config import default_config, validate_config
from jaxcnn.train.evaluate import confusion_matrix, evaluate_checkpoint
from jaxcnn.train.loop import fit
from jaxcnn.train.lr_finder import lr_find
from jaxcnn.train.optim import decay_mask, make_optimizer, make_schedule, triangle_schedule
from jaxcnn.train.run import Run, init_from_data, initial_state, setup
from jaxcnn.train.state import TrainState, create_state
from jaxcnn.train.steps import (
    enable_compilation_cache,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    make_predict_step,
    make_train_step,
)
from jaxcnn.train.tasks import Task, get_task, register_task
from jaxcnn.train.warmstart import load_init_variables, merge_variables

__all__ = [
    "Checkpointer",
    "Lookahead",
    "Run",
    "Task",
    "TrainState",
    "confusion_matrix",
    "create_state",
    "decay_mask",
    "default_config",
    "ema_update",
    "enable_compilation_cache",
    "evaluate_checkpoint",
    "fit",
    "get_task",
    "init_from_data",
    "initial_state",
    "jit_eval_step",
    "jit_train_step",
    "load_init_variables",
    "lr_find",
    "make_eval_step",
    "make_optimizer",
    "make_predict_step",
    "make_schedule",
    "make_train_step",
    "merge_variables",
    "register_task",
    "setup",
    "triangle_schedule",
    "validate_config",
]
