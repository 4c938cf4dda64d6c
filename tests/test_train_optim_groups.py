"""airbench94's optimizer pieces against airbench 0.1.8's `train` (utils.py lines 250-283),
transcribed in numpy: the triangle learning-rate schedule, parameter-group labels and a
group that trains for a number of steps and is then frozen."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.train.optim import freeze_after, param_labels, triangle_schedule


def _airbench_triangle(steps, start=0.0, end=0.0, peak=0.5):
    """utils.py `triangle`, lines 273-281, in numpy."""
    xp = np.array([0, int(peak * steps), steps])
    fp = np.array([start, 1, end])
    x = np.arange(1 + steps)
    m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    b = fp[:-1] - (m * xp[:-1])
    indices = np.sum(x[:, None] >= xp[None, :], 1) - 1
    indices = np.clip(indices, 0, len(m) - 1)
    return m[indices] * x + b[indices]


def test_triangle_schedule_matches_airbench94_lr_schedule():
    total = 476  # ceil(48 steps per epoch * 9.9 epochs)
    expected = _airbench_triangle(total, start=0.2, end=0.07, peak=0.23)
    sched = triangle_schedule(1.5, total, 0.2, 0.23, 0.07)
    ours = np.asarray(jax.vmap(sched)(jnp.arange(total + 1)))
    np.testing.assert_allclose(ours, 1.5 * expected, rtol=1e-5, atol=1e-6)
    assert np.isclose(ours[int(0.23 * total)], 1.5)


def test_param_labels_take_the_first_matching_rule():
    params = {"whiten": {"kernel": 0, "bias": 0},
              "block1": {"conv1": {"kernel": 0}, "norm1": {"bias": 0}},
              "fc": {"kernel": 0}}
    labels = param_labels(params, {"frozen": r"^whiten/kernel$", "norm_bias": r"/norm\d+/bias$",
                                   "whiten_bias": r"^whiten/"})
    assert labels == {"whiten": {"kernel": "frozen", "bias": "whiten_bias"},
                      "block1": {"conv1": {"kernel": "default"}, "norm1": {"bias": "norm_bias"}},
                      "fc": {"kernel": "default"}}


def test_freeze_after_passes_updates_then_zeros():
    tx = freeze_after(3)
    params = {"b": jnp.ones(2)}
    state = tx.init(params)
    seen = []
    for _ in range(5):
        updates, state = tx.update({"b": jnp.full(2, 0.5)}, state, params)
        seen.append(float(updates["b"][0]))
    assert seen == [0.5, 0.5, 0.5, 0.0, 0.0]

