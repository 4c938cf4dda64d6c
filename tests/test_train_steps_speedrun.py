"""The speedrun pieces inside jaxcnn's compiled steps: lookahead syncs the state's slow copy
every `period` steps (and at the last step) exactly as `jaxcnn.train.averaging.Lookahead`
does on the plain step's result; the eval and predict steps average the logits over the
test-time-augmentation views; the train step hands the epoch to alternating flips. A tiny
dense + BatchNorm model keeps the compiles to a fraction of a second."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.data.augment import Augment, tta_logits
from jaxcnn.train import (
    create_state,
    default_config,
    make_optimizer,
    make_predict_step,
    make_train_step,
)
from jaxcnn.train.averaging import Lookahead
from jaxcnn.train.tasks import get_task

SUMS = ("accuracy", "count", "loss")


class Tiny(nn.Module):
    """Position-sensitive logits (a dense layer over the pixels) with BatchNorm statistics."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _setup(**prep):
    config = default_config()
    config.optimizer.lr = 0.5
    model, task = Tiny(), get_task("classification", config)
    rng = np.random.default_rng(0)
    batch = {"image": jnp.asarray(rng.integers(0, 256, (8, 4, 4, 2)), jnp.uint8),
             "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)}
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 2)), train=False)
    tx, _ = make_optimizer(config, variables["params"], 4)
    return model, task, tx, Augment(mean=(127.5,), std=(64.0,), **prep), variables, batch


def test_train_step_lookahead_matches_lookahead_on_the_plain_step():
    model, task, tx, prep, variables, batch = _setup()
    look = Lookahead(total_steps=3, period=2)
    plain = jax.jit(make_train_step(model, task, tx, prep, 4))
    ahead = jax.jit(make_train_step(model, task, tx, prep, 4, lookahead=look))
    look_ref = jax.jit(look)
    state = create_state(variables, tx, 0, SUMS, lookahead=True)
    init = jax.device_get(state.slow)
    for s in range(3):
        ref, _ = plain(state, batch)
        slow, fast = look_ref(state.slow, ref.variables, s + 1)
        state, _ = ahead(state, batch)
        for a, b in zip(jax.tree.leaves((slow, fast)), jax.tree.leaves((state.slow,
                                                                          state.variables)),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        if s == 0:  # no sync yet: the slow copy is still the initial variables
            for a, b in zip(jax.tree.leaves(state.slow), jax.tree.leaves(init), strict=True):
                np.testing.assert_array_equal(a, b)
        else:  # synced at step 2 (period) and step 3 (the last): the variables are the copy
            for a, b in zip(jax.tree.leaves(state.variables), jax.tree.leaves(state.slow),
                            strict=True):
                np.testing.assert_array_equal(a, b)
    assert not np.allclose(jax.tree.leaves(state.slow["params"])[0],
                           jax.tree.leaves(init["params"])[0])


def test_predict_step_tta_averages_mirror_and_translated_views():
    model, task, tx, prep, variables, batch = _setup()
    state = create_state(variables, tx, 0, SUMS)
    plain = jax.jit(make_predict_step(model, task, prep))
    normalized = prep(None, batch, train=False)["image"]
    forward = lambda x: model.apply(variables, x, train=False)
    for level in (1, 2):
        tta = jax.jit(make_predict_step(model, task, prep, tta=level))
        np.testing.assert_allclose(tta(state, batch), tta_logits(forward, normalized, level),
                                   rtol=1e-5, atol=1e-5)
        assert not np.allclose(tta(state, batch), plain(state, batch))


def test_train_step_alternates_flips_by_epoch():
    model, task, tx, prep, variables, batch = _setup(flip=True, flip_mode="alternate")
    step = jax.jit(make_train_step(model, task, tx, prep, steps_per_epoch=4))
    state = create_state(variables, tx, 0, SUMS)
    # No other randomness (no crop, no dropout): the loss differs only through the flips.
    loss = {s: float(step(state.replace(step=jnp.asarray(s)), batch)[1]["loss"])
            for s in (0, 3, 4, 7, 8)}
    assert loss[0] == loss[3] == loss[8]  # epochs 0, 0, 2: as stored
    assert loss[4] == loss[7] != loss[0]  # epoch 1: every image mirrored
