"""Shared helpers of the training tests: a tiny config (LeNet-5 or a 4-channel small_cnn on
a slice of the embedded digits) and a manual loop over the compiled step on a given mesh."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ is a top-level folder, like in the Flax examples

from configs import smoke  # noqa: E402
from jaxcnn.data import OnDeviceData, make_mesh, train_indices  # noqa: E402
from jaxcnn.train import (  # noqa: E402
    initial_state,
    jit_train_step,
    make_optimizer,
    make_train_step,
    setup,
)


def tiny_config(model: str = "small_cnn", **model_kwargs):
    """The smoke config, no progress bar; small_cnn at width 4 with BN (and dropout)."""
    config = smoke.get_config()
    config.progress = False
    config.model.name = model
    if model == "small_cnn":
        config.model.kwargs.width = 4
        config.model.kwargs.dropout = 0.1
    for k, v in model_kwargs.items():
        config.model.kwargs[k] = v
    return config


def run_steps(config, n_steps: int, devices=None):
    """(state, per-step metrics) after `n_steps` compiled steps on a mesh over `devices`."""
    mesh = make_mesh(devices)
    run = setup(config)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx, mesh)
    step_fn = jit_train_step(make_train_step(run.model, run.task, tx, run.prep,
                                             run.steps_per_epoch), mesh)
    feeder = OnDeviceData(run.splits.train, mesh)
    spe, bs, n = run.steps_per_epoch, config.data.batch_size, len(run.splits.train)
    metrics = []
    for s in range(n_steps):
        state, m = step_fn(state, feeder.batch(train_indices(config.seed, s // spe, s % spe, n,
                                                             bs)))
        metrics.append(jax.device_get(m))
    return state, metrics, step_fn


def leaves(tree) -> list[np.ndarray]:
    """Host copies of every leaf."""
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]
