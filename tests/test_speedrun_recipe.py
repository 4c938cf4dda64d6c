"""configs/cifar10_speedrun.py against airbench 0.1.8's `train` (utils.py lines 250-329),
transcribed in numpy: the optimizer built from the config (per-group rates and decays,
Nesterov momentum, triangle schedule, frozen whitening kernel, whitening bias frozen after
3 epochs) moves every parameter exactly as airbench's torch SGD param groups do with the
summed loss; the label smoothing is torch's; the config is validated."""

import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import cifar10_speedrun  # noqa: E402
from jaxcnn.errors import ConfigError  # noqa: E402
from jaxcnn.train import default_config, make_optimizer, validate_config  # noqa: E402
from jaxcnn.train.tasks import get_task  # noqa: E402

HYP = cifar10_speedrun.HYP
SHAPES = {"whiten": {"kernel": (2, 2, 3, 4), "bias": (4,)},
          "block1": {"conv1": {"kernel": (3, 3, 4, 4)}, "norm1": {"bias": (4,)}},
          "fc": {"kernel": (4, 3)}}


def _airbench_sgd(params, grads_sum, spe, total, batch, whiten_bias_epochs):
    """airbench's torch.optim.SGD param groups + LambdaLR(triangle) + whiten freezing, with
    the summed loss's gradients `grads_sum[t]` (a list of {path: array}) (lines 251-303)."""
    m = HYP["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - m))
    lr = HYP["lr"] / kilostep_scale
    wd = HYP["weight_decay"] * batch / kilostep_scale
    lr_biases = lr * HYP["bias_scaler"]
    xp = [0, int(0.23 * total), total]
    sched = lambda i: np.interp(i, xp, [0.2, 1.0, 0.07])
    p = {k: v.astype(np.float64).copy() for k, v in params.items()}
    buf = {}
    for t, g_all in enumerate(grads_sum):
        epoch = t // spe
        for k in p:
            if k == "whiten/kernel" or (k == "whiten/bias" and epoch >= whiten_bias_epochs):
                continue  # requires_grad False: torch SGD skips the parameter
            group_lr, group_wd = (lr_biases, wd / lr_biases) if "norm" in k else (lr, wd / lr)
            d = g_all[k] + group_wd * p[k]
            buf[k] = d.copy() if k not in buf else m * buf[k] + d
            d = d + m * buf[k]  # nesterov
            p[k] = p[k] - group_lr * sched(t) * d
    return p


def _flat(tree):
    return {"/".join(str(q.key) for q in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_speedrun_optimizer_moves_parameters_like_airbench_param_groups():
    batch, spe, epochs = 1024, 2, 2.6  # whiten bias frozen after 3 epochs = step 6 of 6
    config = cifar10_speedrun.get_config()
    config.num_epochs = epochs
    total = math.ceil(spe * epochs)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), SHAPES,
                          is_leaf=lambda s: isinstance(s, tuple))
    grads = [jax.tree.map(lambda s: rng.normal(size=s).astype(np.float32), SHAPES,
                          is_leaf=lambda s: isinstance(s, tuple)) for _ in range(total)]
    # freeze_after_epochs 3 > 2.6 epochs: lower it to exercise the freeze inside the run.
    config.optimizer.groups.whiten_bias.freeze_after_epochs = 2.0
    tx, _ = make_optimizer(config, params, spe)
    state = tx.init(params)
    p = jax.tree.map(jnp.asarray, params)
    for g in grads:  # jaxcnn averages the loss: its gradient is the sum's / batch
        updates, state = tx.update(jax.tree.map(lambda a: jnp.asarray(a) / batch, g), state, p,
                                   value=jnp.asarray(0.0))
        p = optax.apply_updates(p, updates)
    ref = _airbench_sgd(_flat(params), [_flat(g) for g in grads], spe, total, batch,
                        whiten_bias_epochs=2)
    ours = _flat(p)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=2e-4, atol=2e-5, err_msg=k)
    np.testing.assert_array_equal(ours["whiten/kernel"], _flat(params)["whiten/kernel"])


def test_speedrun_hyperparameters_are_airbench94s():
    config = cifar10_speedrun.get_config()
    assert np.isclose(config.optimizer.lr, 1.5)  # 11.5 / (1024 * (1 + 1/0.15)) * 1024
    assert np.isclose(config.optimizer.weight_decay, 0.0153 / 11.5)
    assert config.data.batch_size == 1024 and config.num_epochs == 9.9
    assert config.lookahead.period == 5 and np.isclose(config.lookahead.base, 0.95**5)
    assert (config.data.crop_padding, config.data.padding_mode) == (2, "reflect")
    assert (config.data.flip_mode, config.data.tta) == ("alternate", 2)
    assert config.init.data_examples == 5000 and config.model.name == "airbench94"
    validate_config(config)


def test_label_smoothing_is_torch_cross_entropy_label_smoothing():
    # torch CrossEntropyLoss(label_smoothing=0.2): target (1 - 0.2) onehot + 0.2 / K.
    config = default_config()
    config.label_smoothing = 0.2
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]], np.float32)
    labels = np.array([0, 2])
    loss, _ = get_task("classification", config).loss(jnp.asarray(logits),
                                                      {"label": jnp.asarray(labels)})
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    target = 0.8 * np.eye(3)[labels] + 0.2 / 3
    np.testing.assert_allclose(loss, np.mean(-(target * logp).sum(1)), rtol=1e-6)


@pytest.mark.parametrize("key,value,match", [
    ("data.padding_mode", "wrap", "padding_mode"),
    ("data.flip_mode", "sometimes", "flip_mode"),
    ("data.tta", 3, "tta"),
    ("lookahead.period", -1, "lookahead.period"),
])
def test_bad_speedrun_settings_are_config_errors(key, value, match):
    config = default_config()
    group, name = key.split(".")
    config[group][name] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_bad_parameter_groups_are_config_errors():
    config = default_config()
    config.optimizer.groups = {"bias": {"lr_scale": 2.0}}
    with pytest.raises(ConfigError, match="pattern"):
        validate_config(config)
    config.optimizer.groups = {"bias": {"pattern": "bias$", "lr_scal": 2.0}}
    with pytest.raises(ConfigError, match="lr_scal"):
        validate_config(config)
    config.optimizer.groups = {"bias": {"pattern": "bias$", "lr_scale": -1.0}}
    with pytest.raises(ConfigError, match=">= 0"):
        validate_config(config)
