"""Lookahead / EMA of the weights against airbench 0.1.8 (utils.py `LookaheadState`, lines
193-201, and `train`, lines 285-329), transcribed in numpy: the slow copy is lerped towards
the trained weights every 5 steps with decay 0.95**5 * (t / T)**3, training continues
from it, and the final weights are the slow copy."""

import jax.numpy as jnp
import numpy as np

from jaxcnn.train.averaging import Lookahead, ema_update


def test_ema_update_is_torch_lerp_and_keeps_integer_leaves():
    avg = {"w": jnp.asarray([1.0, 2.0]), "n": jnp.asarray(3, jnp.int32)}
    new = {"w": jnp.asarray([3.0, 6.0]), "n": jnp.asarray(7, jnp.int32)}
    out = ema_update(avg, new, 0.75)
    # torch: avg.lerp_(new, 1 - decay) = avg + 0.25 * (new - avg)
    np.testing.assert_allclose(out["w"], [1.5, 3.0])
    assert int(out["n"]) == 7


def test_lookahead_decay_follows_airbench_alpha_schedule():
    look = Lookahead(total_steps=476)
    steps = np.arange(477)
    expected = 0.95**5 * (steps / 476) ** 3  # alpha_schedule, line 285
    np.testing.assert_allclose(look.decay(jnp.asarray(steps)), expected, rtol=1e-6)


def test_lookahead_trajectory_matches_airbench_training_loop():
    total, rng = 23, np.random.default_rng(0)
    deltas = rng.normal(size=(total, 3)).astype(np.float32)
    alpha = 0.95**5 * (np.arange(total + 1) / total) ** 3
    # airbench: after each optimizer step, every 5 steps lerp + copy; at the end decay=1.0.
    net, ema = np.zeros(3), np.zeros(3)
    for i in range(total):
        net = net + deltas[i]
        steps = i + 1
        if steps % 5 == 0:
            ema = ema + (1 - alpha[steps]) * (net - ema)
            net = ema.copy()
        if steps >= total:
            net = ema.copy()  # lookahead_state.update(model, decay=1.0)
    look = Lookahead(total_steps=total)
    fast, slow = jnp.zeros(3), jnp.zeros(3)
    for i in range(total):
        fast = fast + deltas[i]
        slow, fast = look(slow, fast, i + 1)
    np.testing.assert_allclose(fast, net, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slow, ema, rtol=1e-5, atol=1e-6)
