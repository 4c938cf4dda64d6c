"""configs/cifar10_speedrun.py end to end through `fit` on a narrow airbench and random
32x32 images: the fractional last epoch stops at ceil(steps_per_epoch * num_epochs), the
whitening kernel is set from the data and never trained, the whitening bias freezes after
its epochs, the weights end as the lookahead copy, and the test accuracy is the TTA one."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import cifar10_speedrun  # noqa: E402
from jaxcnn.data import from_arrays  # noqa: E402
from jaxcnn.errors import ConfigError  # noqa: E402
from jaxcnn.models import create_model  # noqa: E402
from jaxcnn.models.airbench import whitening_kernel  # noqa: E402
from jaxcnn.train import fit, setup  # noqa: E402
from jaxcnn.train.checkpoint import Checkpointer  # noqa: E402
from jaxcnn.train.run import init_from_data  # noqa: E402


def _data(n_train=256, n_test=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 4, n_train + n_test).astype(np.int32)
    return from_arrays(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                       class_names=("a", "b", "c", "d"))


def _config():
    config = cifar10_speedrun.get_config()
    config.model.kwargs.widths = (8, 16, 16)
    config.data.batch_size = 64  # 4 steps per epoch
    config.data.eval_batch_size = 32
    config.num_epochs = 1.5  # 6 steps: the second epoch stops half way
    config.init.data_examples = 64
    config.optimizer.groups.whiten_bias.freeze_after_epochs = 1.0
    config.bf16 = False
    config.progress = False
    config.checkpoint.async_save = False
    return config


@pytest.mark.slow
def test_speedrun_config_trains_end_to_end(tmp_path):
    config, data = _config(), _data()
    result = fit(config, tmp_path, data=data)
    assert result["steps"] == 6 and 0.0 <= result["test_accuracy"] <= 1.0
    run = setup(config, data=data)
    kernel0 = np.asarray(run.variables["params"]["whiten"]["kernel"])
    # Set from 64 normalized training images (the same draw as the trainer's):
    np.testing.assert_array_equal(kernel0[..., 12:], -kernel0[..., :12])
    state = _final_state(config, data, tmp_path)
    np.testing.assert_allclose(state["params"]["whiten"]["kernel"], kernel0, rtol=1e-6)
    # Lookahead: after the last step the weights are the slow copy.
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(state["slow"]["params"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def _final_state(config, data, workdir):
    from jaxcnn.train import initial_state, make_optimizer

    run = setup(config, data=data)
    tx, _ = make_optimizer(config, run.variables["params"], run.steps_per_epoch)
    target = initial_state(run, tx)
    ckpt = Checkpointer(workdir, read_only=True)
    try:
        state, _ = ckpt.restore(ckpt.latest_step(), target, run.mesh)
    finally:
        ckpt.manager.close()
    return {"params": jax.device_get(state.params), "slow": jax.device_get(state.slow)}


@pytest.mark.slow
def test_init_from_data_uses_the_family_hook_and_names_models_without_one():
    config = _config()
    data = _data(n_train=64, n_test=8)
    config.init.data_examples = 0
    run = setup(config, data=data)
    out = init_from_data(run.model, run.augment, data.train, run.variables, 16, seed=3)
    pick = np.sort(np.random.default_rng([3, 0xA1B]).permutation(64)[:16])
    images = run.augment(None, {"image": data.train.arrays["image"][pick]}, train=False)["image"]
    np.testing.assert_allclose(out["params"]["whiten"]["kernel"], whitening_kernel(images),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="data-dependent"):
        init_from_data(create_model("lenet5"), run.augment, data.train, run.variables, 16, seed=0,
                       name="lenet5")
