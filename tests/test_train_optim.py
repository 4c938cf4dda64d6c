"""Every optimizer and schedule built from config, checked against the update rules of the
papers / PyTorch written out by hand in numpy, with numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.train import decay_mask, default_config, make_optimizer, make_schedule
from jaxcnn.train.optim import current_lr

LR, WD = 0.1, 0.01
P0 = {"conv": {"kernel": np.full((2, 2), 1.0, np.float32), "bias": np.full((2,), 1.0, np.float32)}}
G = {"conv": {"kernel": np.full((2, 2), 0.5, np.float32), "bias": np.full((2,), -0.25, np.float32)}}


def _config(name: str, **opt):
    config = default_config()
    config.optimizer.name = name
    config.optimizer.lr = LR
    for k, v in opt.items():
        config.optimizer[k] = v
    config.schedule.name = "constant"
    return config


def _run(config, steps: int = 3, grads=G):
    params = jax.tree.map(jnp.asarray, P0)
    tx, _ = make_optimizer(config, params, steps_per_epoch=10)
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params,
                                   value=jnp.asarray(1.0))
        params = optax.apply_updates(params, updates)
    return jax.tree.map(np.asarray, params)


def _reference(step_fn, steps: int = 3):
    """Apply a hand-written per-leaf rule `step_fn(p, g, slots, t, decay) -> p`."""
    out = {}
    for name in ("kernel", "bias"):
        p, g, slots = P0["conv"][name].astype(np.float64), G["conv"][name], {}
        for t in range(1, steps + 1):
            p = step_fn(p, g, slots, t, name == "kernel")
        out[name] = p
    return out


def _check(config, rule):
    got, want = _run(config)["conv"], _reference(rule)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7)


def test_sgd_momentum_with_coupled_weight_decay_matches_torch():
    def rule(p, g, s, t, decay):
        g = g + (WD * p if decay else 0)  # torch SGD(weight_decay): L2 added to the gradient
        s["buf"] = g if t == 1 else 0.9 * s["buf"] + g
        return p - LR * s["buf"]

    _check(_config("sgd", momentum=0.9, weight_decay=WD), rule)


def test_sgd_nesterov_matches_torch():
    def rule(p, g, s, t, decay):
        s["buf"] = g if t == 1 else 0.9 * s["buf"] + g
        return p - LR * (g + 0.9 * s["buf"])

    _check(_config("sgd", momentum=0.9, nesterov=True), rule)


def test_plain_sgd_without_momentum():
    _check(_config("sgd", momentum=0.0), lambda p, g, s, t, d: p - LR * g)


def _adam(p, g, s, t, b1=0.9, b2=0.999, eps=1e-8):
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    return (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps)


def test_adam_with_coupled_l2_matches_torch_adam():
    def rule(p, g, s, t, decay):
        g = g + (WD * p if decay else 0)
        return p - LR * _adam(p, g, s, t)

    _check(_config("adam", weight_decay=WD), rule)


def test_adamw_decouples_decay_and_skips_biases():
    def rule(p, g, s, t, decay):
        return p - LR * (_adam(p, g, s, t) + (WD * p if decay else 0))

    _check(_config("adamw", weight_decay=WD), rule)
    # the same as sgd with decoupled=True semantics for any optimizer
    _check(_config("adam", weight_decay=WD, decoupled=True), rule)


def test_rmsprop_matches_torch():
    def rule(p, g, s, t, decay):
        s["v"] = 0.99 * s.get("v", 0) + 0.01 * g * g
        return p - LR * g / (np.sqrt(s["v"]) + 1e-8)

    _check(_config("rmsprop", momentum=0.0), rule)


def test_rmsprop_with_momentum_matches_torch():
    def rule(p, g, s, t, decay):
        s["v"] = 0.99 * s.get("v", 0) + 0.01 * g * g
        s["buf"] = 0.9 * s.get("buf", 0) + g / (np.sqrt(s["v"]) + 1e-8)
        return p - LR * s["buf"]

    _check(_config("rmsprop", momentum=0.9), rule)


def test_adagrad_matches_torch():
    def rule(p, g, s, t, decay):
        s["sum"] = s.get("sum", 0.1) + g * g
        return p - LR * g / np.sqrt(s["sum"])

    _check(_config("adagrad", initial_accumulator=0.1, eps=1e-10), rule)


def test_clip_by_global_norm_and_by_value():
    norm = np.sqrt(4 * 0.5**2 + 2 * 0.25**2)
    got = _run(_config("sgd", momentum=0.0, clip_norm=0.5), steps=1)["conv"]
    np.testing.assert_allclose(got["kernel"], 1 - LR * 0.5 * 0.5 / norm, rtol=1e-6)
    got = _run(_config("sgd", momentum=0.0, clip_value=0.2), steps=1)["conv"]
    np.testing.assert_allclose(got["kernel"], 1 - LR * 0.2, rtol=1e-6)
    np.testing.assert_allclose(got["bias"], 1 + LR * 0.2, rtol=1e-6)


def test_decay_mask_skips_biases_and_norm_scales():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
              "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)}, "fc": {"kernel": jnp.ones((4, 2))}}
    mask = decay_mask(params)
    assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False},
                    "fc": {"kernel": True}}
    assert all(jax.tree_util.tree_leaves(decay_mask(params, decay_all=True)))


def _schedule(name, epochs=10, spe=10, **kw):
    config = default_config()
    config.schedule.name = name
    for k, v in kw.items():
        config.schedule[k] = v
    return make_schedule(config.schedule, 1.0, spe, epochs)


def test_constant_and_step_decay_schedules():
    assert float(_schedule("constant")(57)) == 1.0
    step = _schedule("step", milestones=(3, 6), gamma=0.1)
    values = [float(step(s)) for s in (0, 29, 30, 59, 60, 99)]
    np.testing.assert_allclose(values, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_cosine_and_warmup_cosine_schedules():
    cos = _schedule("cosine", end_factor=0.0)
    np.testing.assert_allclose([float(cos(s)) for s in (0, 50, 100)], [1.0, 0.5, 0.0], atol=1e-6)
    warm = _schedule("warmup_cosine", warmup_epochs=2)
    np.testing.assert_allclose([float(warm(s)) for s in (0, 10, 20, 60, 100)],
                               [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    warm_step = _schedule("step", warmup_epochs=1, milestones=(6,))
    np.testing.assert_allclose([float(warm_step(s)) for s in (0, 5, 10, 59, 60)],
                               [0.0, 0.5, 1.0, 1.0, 0.1], atol=1e-6)


def test_onecycle_schedule():
    one = _schedule("onecycle", pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    np.testing.assert_allclose(float(one(0)), 1 / 25, rtol=1e-5)
    np.testing.assert_allclose(float(one(30)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(one(100)), 1 / 25 / 1e4, rtol=1e-3)
    values = [float(one(s)) for s in range(101)]
    assert np.argmax(values) == 30


def test_reduce_on_plateau_cuts_the_rate_after_patience_epochs_without_improvement():
    config = _config("sgd", momentum=0.0)
    config.schedule.name = "plateau"
    config.schedule.plateau_metric = "train_loss"  # in the step (a validation metric: stopping)
    config.schedule.patience = 2
    config.schedule.factor = 0.5
    spe = 4
    params = jax.tree.map(jnp.asarray, P0)
    tx, schedule = make_optimizer(config, params, steps_per_epoch=spe)
    state = tx.init(params)
    lrs = []
    for step in range(6 * spe):
        # flat loss: no improvement after the first epoch
        _, state = tx.update(jax.tree.map(jnp.zeros_like, params), state, params,
                             value=jnp.asarray(1.0))
        if (step + 1) % spe == 0:
            lrs.append(current_lr(schedule, state, step))
    # epoch 1 sets the best; epochs 2-3 exhaust the patience -> halved at epoch 3, again at 5
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025], rtol=1e-6)


def test_unknown_optimizer_and_schedule_names_are_config_errors():
    from jaxcnn.errors import ConfigError

    with pytest.raises(ConfigError, match="adamax"):
        _run(_config("adamax"))
    with pytest.raises(ConfigError, match="linear"):
        _schedule("linear")
