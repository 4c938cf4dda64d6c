"""The compiled train/eval steps: compiled once, state donated, finite metrics, the same
update on 4 devices as on 1 (global-batch BatchNorm, device-count-independent rngs), bf16
compute with float32 state, the NaN guard, and config validation before any compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_helpers import leaves, run_steps, tiny_config, tiny_run

from jaxcnn.data import OnDeviceData, eval_batches, make_mesh, train_indices
from jaxcnn.errors import ConfigError
from jaxcnn.train import (
    initial_state,
    jit_eval_step,
    make_eval_step,
    make_optimizer,
    setup,
)


def test_train_step_compiles_once_donates_state_and_reports_finite_metrics():
    run = tiny_run()
    config = run.config
    state, metrics, step_fn = run_steps(run, 2)
    feeder = OnDeviceData(run.splits.train, run.mesh)
    bs, n = config.data.batch_size, len(run.splits.train)
    old_leaf = jax.tree_util.tree_leaves(state.params)[0]
    state, last = step_fn(state, feeder.batch(train_indices(0, 0, 2, n, bs)))
    assert old_leaf.is_deleted()  # donated: no second copy of the state
    for m in [*metrics, jax.device_get(last)]:
        assert all(np.isfinite(float(v)) for v in m.values())
    assert step_fn._cache_size() == 1
    assert int(state.step) == 3 and int(state.bad_step) == -1
    assert float(state.sums["count"]) == 3 * bs
    # The state stays replicated, the batch sharded over the 4 forced devices.
    assert jax.tree_util.tree_leaves(state.params)[0].sharding.is_fully_replicated
    batch = feeder.batch(np.arange(bs))
    assert len(batch["image"].sharding.device_set) == 4
    assert not batch["image"].sharding.is_fully_replicated


def test_four_devices_match_one_device_with_the_same_global_batch():
    assert jax.device_count() == 4
    run = tiny_run()  # small_cnn with BatchNorm and dropout
    state4, m4, _ = run_steps(run, 3)
    state1, m1, _ = run_steps(run, 3, n_devices=1)
    for a, b in zip(leaves(state4.params), leaves(state1.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    for a, b in zip(leaves(state4.batch_stats), leaves(state1.batch_stats), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose([m["loss"] for m in m4], [m["loss"] for m in m1], rtol=1e-5)
    # and training moved the parameters at all
    moved = [np.abs(a - b).max() for a, b in zip(leaves(state4.params),
                                                 leaves(run.variables["params"]), strict=True)]
    assert max(moved) > 1e-4


def test_eval_step_weights_padding_rows_out():
    run = tiny_run()  # 360 test images in batches of 64: 6 batches, the last 40 rows padding
    tx, _ = make_optimizer(run.config, run.variables["params"], run.steps_per_epoch)
    state = initial_state(run, tx)
    eval_fn = jit_eval_step(make_eval_step(run.model, run.task, run.augment), run.mesh)
    feeder = OnDeviceData(run.splits.test, run.mesh)
    total = None
    for batch in eval_batches(feeder, len(run.splits.test), 64):
        assert batch["image"].shape[0] == 64
        out = jax.device_get(eval_fn(state, batch))
        total = out if total is None else {k: total[k] + out[k] for k in out}
    assert total["count"] == 360
    # the same numbers example by example
    images = {"image": jnp.asarray(run.splits.test.arrays["image"])}
    logits = run.model.apply(jax.device_get(state.variables),
                             run.augment(None, images, train=False)["image"])
    correct = np.sum(np.argmax(np.asarray(logits), -1) == run.splits.test.arrays["label"])
    assert total["accuracy"] == pytest.approx(correct, abs=0.5)
    assert eval_fn._cache_size() == 1


def test_bf16_compute_keeps_float32_params_optimizer_state_and_bn_stats():
    run = tiny_run(bf16=True)
    assert run.model.dtype == jnp.bfloat16
    state, metrics, _ = run_steps(run, 2)
    for tree in (state.params, state.opt_state, state.batch_stats):
        for leaf in jax.tree_util.tree_leaves(tree):
            if jnp.issubdtype(leaf.dtype, jnp.floating):
                assert leaf.dtype == jnp.float32
    assert np.isfinite(metrics[-1]["loss"])


def test_non_finite_step_freezes_the_state_and_records_the_step():
    run = tiny_run()
    config = tiny_config()
    config.optimizer.name = "sgd"
    config.optimizer.lr = float("inf")  # the first update is not finite
    state, metrics, _ = run_steps(run, 3, config=config)
    bad = int(state.bad_step)
    assert bad == 0
    assert int(state.step) == bad  # frozen: later steps did not apply
    for a, b in zip(leaves(state.params), leaves(run.variables["params"]), strict=True):
        np.testing.assert_array_equal(a, b)  # still the last good (initial) values


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("optimizer.lr", "fast", "must be float"),
        ("data.batch_size", 30, "multiple of the number of devices"),
        ("data.on_device", "sometimes", "auto, on or off"),
        ("num_epochs", 0, "positive"),
    ],
)
def test_bad_config_values_fail_at_setup(key, value, message):
    config = tiny_config()
    group, _, name = key.rpartition(".")
    node = config[group] if group else config
    with node.unlocked():
        node.__dict__["_fields"][name] = value  # bypass ConfigDict's own type check
    with pytest.raises(ConfigError, match=message):
        setup(config)


def test_unknown_config_key_is_named_with_a_suggestion():
    config = tiny_config()
    config.optimizer.unlock()
    config.optimizer.momentun = 0.9
    with pytest.raises(ConfigError, match=r"'optimizer.momentun'.*optimizer\.momentum"):
        setup(config)


def test_one_device_mesh_uses_the_first_device():
    mesh = make_mesh(jax.devices()[:1])
    assert mesh.devices.size == 1 and mesh.axis_names == ("data",)
