"""Early stopping and reduce-on-plateau on a validation metric: the decisions equal Keras'
EarlyStopping and torch's ReduceLROnPlateau on the same metric sequences, bad settings are
explained, and a run interrupted mid-epoch and resumed stops at the same epoch with the same
learning rates and bit-identical weights as the uninterrupted run."""

import shutil

import jax
import numpy as np
import pytest
from train_helpers import tiny_config

import jaxcnn
from jaxcnn.data import make_mesh
from jaxcnn.train import fit
from jaxcnn.train.checkpoint import Checkpointer
from jaxcnn.train.stopping import EarlyStopping, EpochControl, PlateauLR

# torch 2.14: ReduceLROnPlateau(SGD(lr=1.0), mode="min", factor=0.5, patience=2, cooldown=1,
# threshold=1e-4, min_lr=0.1), scheduler.step(v) for each v; the lr after each step.
TORCH_VALUES = [1.0, 0.9, 0.9, 0.95, 0.9, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7,
                0.7, 0.7, 0.7]
TORCH_LRS = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125,
             0.125, 0.125, 0.1, 0.1]
# mode="max", factor=0.1, patience=1 from lr 0.1 (the AlexNet recipe on accuracy)
TORCH_MAX_VALUES = [0.5, 0.6, 0.6, 0.6, 0.65, 0.6, 0.6, 0.6]
TORCH_MAX_LRS = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]


def test_plateau_matches_torch_reduce_lr_on_plateau():
    plateau = PlateauLR("loss", "min", factor=0.5, patience=2, rtol=1e-4, cooldown=1,
                        min_scale=0.1)
    scales = [plateau.update(e, v) for e, v in enumerate(TORCH_VALUES, 1)]
    np.testing.assert_allclose(scales, TORCH_LRS)
    plateau = PlateauLR("accuracy", "max", factor=0.1, patience=1)
    lrs = [0.1 * plateau.update(e, v) for e, v in enumerate(TORCH_MAX_VALUES, 1)]
    np.testing.assert_allclose(lrs, TORCH_MAX_LRS, rtol=1e-12)


def test_early_stopping_matches_keras():
    # Keras EarlyStopping(monitor, mode="max", patience=2, min_delta=0.01): an epoch improves
    # only when it beats the best by MORE than min_delta.
    es = EarlyStopping("accuracy", "max", patience=2, min_delta=0.01)
    stops = [es.update(e, v) for e, v in enumerate([0.5, 0.6, 0.605, 0.609, 0.9], 1)]
    assert stops == [False, False, False, True, True]
    assert es.best == 0.6 and es.best_epoch == 2 and es.stopped_epoch == 4
    es = EarlyStopping("loss", "min", patience=1)
    assert [es.update(e, v) for e, v in enumerate([1.0, 0.5, 0.7], 1)] == [False, False, True]


def test_settings_are_checked_against_the_task_metrics():
    config = tiny_config()
    task = jaxcnn.train.get_task("classification", config)
    names = lambda: ["accuracy", "loss", "top5_accuracy"]
    config.early_stopping.patience = 3
    config.early_stopping.metric = "valid_accuracy"
    control = EpochControl.from_config(config, task, names)
    assert (control.early_stopping.metric, control.early_stopping.mode) == ("accuracy", "max")
    config.early_stopping.metric = "valid_iou"
    with pytest.raises(jaxcnn.ConfigError, match="valid_iou.*top5_accuracy"):
        EpochControl.from_config(config, task, names)
    config.early_stopping.metric = ""
    config.schedule.name = "plateau"
    config.schedule.plateau_metric = "loss"
    with pytest.raises(jaxcnn.ConfigError, match="valid_<name>"):
        EpochControl.from_config(config, task, names)
    config.schedule.plateau_metric = "valid_loss"
    control = EpochControl.from_config(config, task, names)
    assert (control.plateau.metric, control.plateau.mode) == ("loss", "min")


def _stopping_config():
    """Decisions independent of how training goes: min_delta / rtol so large that no epoch
    after the first improves. Early stopping ends epoch 3; the plateau halves the rate after
    epochs 2 and 3."""
    config = tiny_config("lenet5")  # 8 steps per epoch, checkpoints every 3 steps
    config.num_epochs = 6
    config.checkpoint.keep = 20
    config.early_stopping.metric = "valid_loss"
    config.early_stopping.patience = 2
    config.early_stopping.min_delta = 100.0
    config.schedule.name = "plateau"
    config.schedule.plateau_metric = "valid_accuracy"
    config.schedule.factor = 0.5
    config.schedule.patience = 0
    config.schedule.rtol = 10.0
    return config


def _crash_after(source, target, step):
    """A copy of a finished workdir as it was when the run died after `step`."""
    shutil.copytree(source, target)
    for path in (target / "checkpoints").iterdir():
        if path.name.isdigit() and int(path.name) > step:
            shutil.rmtree(path)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted run: (config, workdir, result, final state, final metadata)."""
    config, workdir = _stopping_config(), tmp_path_factory.mktemp("full")
    result = fit(config, workdir)
    ckpt = Checkpointer(workdir)
    state, meta = ckpt.restore(24, _target(config), make_mesh())
    ckpt.close()
    return config, workdir, result, state, meta


def test_early_stopping_ends_the_run_and_the_plateau_halves_the_rate(full_run):
    config, workdir, result, _, meta = full_run
    assert result["stopped_epoch"] == 3 and result["steps"] == 24  # not num_epochs=6
    # epoch 3 trains at half the rate; the cut after epoch 3 is recorded for a resume
    np.testing.assert_allclose([r["lr"] for r in meta["history"]], [3e-3, 3e-3, 1.5e-3],
                               rtol=1e-6)
    assert [r["lr_scale"] for r in meta["history"]] == [1.0, 0.5, 0.25]
    assert meta["epoch_control"]["early_stopping"]["stopped_epoch"] == 3
    again = fit(config, workdir)  # a stopped run stays stopped
    assert again["steps"] == 24 and again["stopped_epoch"] == 3


def _resumed_equals_full(full_run, tmp_path, crash):
    config, workdir, full, state_full, meta_full = full_run
    part = tmp_path / f"part{crash}"
    _crash_after(workdir, part, crash)
    resumed = fit(config, part)
    assert resumed["stopped_epoch"] == 3 and resumed["steps"] == 24
    ckpt = Checkpointer(part)
    state_part, meta_part = ckpt.restore(24, _target(config), make_mesh())
    ckpt.close()
    for x, y in zip(jax.tree.leaves(state_full), jax.tree.leaves(state_part), strict=True):
        np.testing.assert_array_equal(x, y)  # params, opt state (with the scale), sums
    assert meta_part["epoch_control"] == meta_full["epoch_control"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(meta_part["history"]) == strip(meta_full["history"])
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_run_killed_mid_epoch_resumes_the_counters_exactly(full_run, tmp_path):
    """Died at step 12 (mid-epoch 2): the early-stopping and plateau counters of epoch 1 come
    back from the checkpoint; without them epoch 2 would count as an improvement and the
    resumed run would not stop at epoch 3."""
    _resumed_equals_full(full_run, tmp_path, 12)


@pytest.mark.slow
def test_run_killed_after_a_rate_cut_resumes_the_scale_exactly(full_run, tmp_path):
    """Died right after epoch 2's end (step 16): the halved rate comes back in the optimizer
    state."""
    _resumed_equals_full(full_run, tmp_path, 16)


def _target(config):
    from jaxcnn.train import initial_state, make_optimizer, setup

    run = setup(config)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    return initial_state(run, tx)


STOPPING_FLAGS = (
    "--config.num_epochs=6", "--config.checkpoint.every_steps=3", "--config.checkpoint.keep=20",
    "--config.early_stopping.metric=valid_loss", "--config.early_stopping.patience=2",
    "--config.early_stopping.min_delta=100.0", "--config.schedule.name=plateau",
    "--config.schedule.plateau_metric=valid_accuracy", "--config.schedule.factor=0.5",
    "--config.schedule.patience=0", "--config.schedule.rtol=10.0", "--config.progress=False",
)


@pytest.mark.slow
def test_sigterm_mid_epoch_3_then_rerun_ends_as_the_uninterrupted_train_py(tmp_path):
    """The real thing: train.py preempted by SIGTERM during epoch 3 (after the rate was cut
    at the end of epoch 2), then rerun with the same command."""
    import signal
    import time

    from reliability_helpers import (
        ROOT,
        TIMING_KEYS,
        Train,
        complete_steps,
        epoch_records,
        read_checkpoint,
        run_train,
    )

    config = str(ROOT / "configs" / "smoke.py")
    cache = tmp_path / "xla"
    full = run_train(tmp_path / "full", *STOPPING_FLAGS, config=config, cache_dir=cache)
    assert full.proc.returncode == 0, full.stderr[-3000:]
    assert full.result()["stopped_epoch"] == 3 and full.result()["steps"] == 24
    part = Train(tmp_path / "part", *STOPPING_FLAGS, config=config, cache_dir=cache)
    while 18 not in complete_steps(tmp_path / "part"):  # a step checkpoint inside epoch 3
        assert part.proc.poll() is None, part.stderr[-3000:]
        time.sleep(0.05)
    part.signal(signal.SIGTERM)
    assert part.finish() == 0 and part.result()["preempted"], part.stderr[-3000:]
    assert part.result()["step"] < 24
    again = run_train(tmp_path / "part", *STOPPING_FLAGS, config=config, cache_dir=cache)
    assert again.proc.returncode == 0, again.stderr[-3000:]
    assert again.result()["stopped_epoch"] == 3 and again.result()["steps"] == 24
    a, b = read_checkpoint(tmp_path / "full", 24), read_checkpoint(tmp_path / "part", 24)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert epoch_records(tmp_path / "full") == epoch_records(tmp_path / "part")
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING_KEYS}
    assert strip(full.result()) == strip(again.result())
