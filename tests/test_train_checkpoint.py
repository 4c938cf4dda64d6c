"""Checkpoints: the N latest plus the best are kept, a resumed run continues at the right
step, epoch and in-epoch batch and ends bit-identical to an uninterrupted one (in-process,
CPU), leftover temporary directories do not break resuming, restores work on another device
count, architecture mismatches and failing saves are reported with paths and shapes, and a
non-finite step stops training without writing a checkpoint."""

import contextlib
import io
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_helpers import leaves, tiny_config, tiny_run

from jaxcnn.data import make_mesh, replicated
from jaxcnn.errors import CheckpointError, TrainingError
from jaxcnn.train import Checkpointer, create_state, fit


def _fit(config, workdir):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fit(config, workdir)
    return result, out.getvalue()


def _state(num_classes=10, n_devices=4, value=0.0):
    """A small TrainState (LeNet-5 shaped params) replicated on `n_devices` devices."""
    run = tiny_run("lenet5")
    params = jax.tree.map(lambda p: jnp.full(p.shape, value, p.dtype), run.variables["params"])
    if num_classes != 10:
        params["fc2"] = {"kernel": jnp.zeros((84, num_classes)), "bias": jnp.zeros(num_classes)}
    state = create_state({"params": params}, optax.sgd(0.1, 0.9), 0, ("count", "loss"))
    return jax.device_put(state, replicated(make_mesh(jax.devices()[:n_devices])))


def test_keeps_the_n_latest_and_the_best_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2, best_metric="accuracy", async_save=False)
    state = _state()
    accuracies = {10: 0.5, 20: 0.9, 25: None, 30: 0.6, 35: None, 40: 0.7}
    for step, acc in accuracies.items():
        ckpt.save(step, state, {"step": step}, None if acc is None else {"accuracy": acc})
    ckpt.wait()
    assert ckpt.all_steps() == [20, 35, 40]  # best (0.9) + the 2 latest
    assert ckpt.best_step() == 20 and ckpt.latest_step() == 40
    assert ckpt.read_meta(35) == {"step": 35}
    ckpt.close()


def test_restore_on_one_device_of_a_checkpoint_saved_on_four(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=True)
    ckpt.save(7, _state(n_devices=4, value=0.25), {"step": 7})
    ckpt.close()
    assert len(jax.tree_util.tree_leaves(_state().params)[0].sharding.device_set) == 4
    one = make_mesh(jax.devices()[:1])
    target = _state(n_devices=1)
    restored, meta = Checkpointer(tmp_path).restore(7, target, one)
    leaf = jax.tree_util.tree_leaves(restored.params)[0]
    assert leaf.sharding.device_set == {jax.devices()[0]}
    assert meta["step"] == 7
    assert all(np.all(x == 0.25) for x in leaves(restored.params))


def test_restoring_into_another_head_names_the_path_and_both_shapes(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(1, _state(num_classes=10), {"step": 1})
    with pytest.raises(CheckpointError, match=r"params/fc2/bias.*\(10,\).*\(7,\)"):
        ckpt.restore(1, _state(num_classes=7), make_mesh())
    ckpt.close()


def test_a_failing_save_raises_with_the_path_and_reason(tmp_path):
    ckpt = Checkpointer(tmp_path / "run", async_save=False)
    shutil.rmtree(ckpt.directory)
    ckpt.directory.write_text("not a directory")  # every write below it now fails
    with pytest.raises(CheckpointError, match=r"step 3 .*checkpoints.*failed: \w+"):
        ckpt.save(3, _state(), {"step": 3})
        ckpt.wait()


def test_resume_mid_epoch_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    config = tiny_config()  # 8 steps per epoch, checkpoints every 3 steps, 2 epochs
    config.checkpoint.keep = 10
    full, _ = _fit(config, tmp_path / "full")
    ckpt_full = Checkpointer(tmp_path / "full")
    assert ckpt_full.all_steps() == [3, 6, 8, 9, 12, 15, 16]
    ckpt_full.close()
    # "Crash" after step 9 (epoch 2, batch 1): keep only what existed then, plus a torn save.
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    for step in (12, 15, 16):
        shutil.rmtree(part / "checkpoints" / str(step))
    (part / "checkpoints" / "12.orbax-checkpoint-tmp-1234").mkdir()
    (part / "checkpoints" / "12.orbax-checkpoint-tmp-1234" / "junk").write_text("torn")
    resumed, _ = _fit(config, part)
    assert resumed["steps"] == full["steps"] == 16
    a, b = Checkpointer(tmp_path / "full"), Checkpointer(part)
    target = _resume_target(config)
    state_full, meta_full = a.restore(16, target, make_mesh())
    state_part, meta_part = b.restore(16, target, make_mesh())
    for x, y in zip(leaves(state_full), leaves(state_part), strict=True):
        np.testing.assert_array_equal(x, y)  # params, BN stats, opt state, rng, sums
    strip = lambda h: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in h]
    assert strip(meta_full["history"]) == strip(meta_part["history"])
    assert resumed["test_accuracy"] == full["test_accuracy"]
    a.close()
    b.close()
    lines = (part / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # two epochs + the final record, no duplicates


def _resume_target(config):
    from jaxcnn.train import initial_state, make_optimizer, setup

    run = setup(config)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    return initial_state(run, tx)


def test_non_finite_loss_stops_training_without_writing_a_checkpoint(tmp_path):
    config = tiny_config()
    config.optimizer.name = "sgd"
    # Finite (an infinite rate is refused at start-up) but large enough that the first
    # update's norm overflows float32: the NaN guard must stop at step 0.
    config.optimizer.lr = 1e38
    with pytest.raises(TrainingError, match="step 0 "):
        _fit(config, tmp_path)
    ckpt = Checkpointer(tmp_path)
    assert ckpt.all_steps() == []
    ckpt.close()
