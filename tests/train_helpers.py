"""Shared helpers of the training tests: a tiny config (a 4-channel small_cnn with BatchNorm
and dropout, or LeNet-5, on a slice of the embedded digits) and a manual loop over the
compiled step on a given mesh. Compiled steps are cached per (run, optimizer, mesh) so a test
module compiles each program once (compiles dominate CPU test time)."""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ is a top-level folder, like in the Flax examples

from configs import smoke  # noqa: E402
from jaxcnn.data import OnDeviceData, make_mesh, train_indices  # noqa: E402
from jaxcnn.train import (  # noqa: E402
    enable_compilation_cache,
    initial_state,
    jit_train_step,
    make_optimizer,
    make_train_step,
    setup,
)

# Identical programs compiled by separate fit() calls (resume tests) hit this disk cache.
enable_compilation_cache(tempfile.mkdtemp(prefix="jaxcnn-test-xla-"), 0.0)


def tiny_config(model: str = "small_cnn", **model_kwargs):
    """The smoke config, no progress bar; small_cnn at width 4 with BN and dropout."""
    config = smoke.get_config()
    config.progress = False
    config.model.name = model
    if model == "small_cnn":
        config.model.kwargs.width = 4
        config.model.kwargs.dropout = 0.1
    for k, v in model_kwargs.items():
        config.model.kwargs[k] = v
    return config


_COMPILED: dict = {}


def _compiled(run, config, n_devices: int):
    key = (id(run), config.optimizer.to_json(), config.schedule.to_json(), n_devices)
    if key not in _COMPILED:
        mesh = make_mesh(jax.devices()[:n_devices])
        tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
        step_fn = jit_train_step(make_train_step(run.model, run.task, tx, run.augment,
                                                 run.steps_per_epoch), mesh)
        _COMPILED[key] = (mesh, tx, step_fn, OnDeviceData(run.splits.train, mesh))
    return _COMPILED[key]


def run_steps(run, n_steps: int, n_devices: int = 4, config=None):
    """(state, per-step host metrics, jitted step) after `n_steps` steps from the initial
    state of `run` on the first `n_devices` devices (optimizer from `config`, default run's)."""
    config = run.config if config is None else config
    mesh, tx, step_fn, feeder = _compiled(run, config, n_devices)
    state = initial_state(run, tx, mesh)
    spe, bs, n = run.steps_per_epoch, config.data.batch_size, len(run.splits.train)
    metrics = []
    for s in range(n_steps):
        idx = train_indices(config.seed, s // spe, s % spe, n, bs)
        state, m = step_fn(state, feeder.batch(idx))
        metrics.append(jax.device_get(m))
    return state, metrics, step_fn


@functools.cache
def tiny_run(model: str = "small_cnn", bf16: bool = False):
    """A cached `setup()` of `tiny_config(model)`."""
    config = tiny_config(model)
    config.bf16 = bf16
    return setup(config)


def leaves(tree) -> list[np.ndarray]:
    """Host copies of every leaf."""
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]
