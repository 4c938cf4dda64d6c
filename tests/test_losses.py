"""Losses on the course's printed tensors and against PyTorch.

The course prints only the results (`nn.L1Loss` 1.2850, `nn.MSELoss` 2.3280,
`nn.CrossEntropyLoss` 1.0393 with targets [4, 0, 3]) of `torch.randn` inputs; the input
tensors are those printed next to the same outputs in the guide the course cites
(neptune.ai, "PyTorch Loss Functions: The Ultimate Guide"), reproduced from their 4-decimal
print-out. Rounded to 4 decimals they give L1 1.28501 and cross-entropy 1.03929, as printed,
but MSE 2.32806 (prints 2.3281): the guide's true inputs differ from the print-out by up to
5e-5 each. Moving two inputs inside their rounding interval (0.2391 -> 0.23914 and
2.2488 -> 2.24876, the two largest residuals, so the smallest moves) gives a tensor that
prints exactly as the guide's and whose MSE prints as 2.3280. The other reference numbers
were computed once with torch 2.14 (`torch.nn.functional.<loss>` on the same tensors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import losses

L1_INPUT = [[0.2423, 2.0117, -0.0648, -0.0672, -0.1567],
            [-0.2198, -1.4090, 1.3972, -0.7907, -1.0242],
            [0.6674, -0.2657, -0.9298, 1.0873, 1.6587]]
L1_TARGET = [[-0.7271, -0.6048, 1.7069, -1.5939, 0.1023],
             [-0.7733, -0.7241, 0.3062, 0.9830, 0.4515],
             [-0.4787, 1.3675, -0.7110, 2.0257, -0.9578]]
MSE_INPUT = [[0.3177, 1.1312, -0.8966, -0.0772, 2.24876],  # prints as 2.2488
             [0.23914, 0.1840, -1.2232, 0.2017, 0.9083],  # prints as 0.2391
             [-0.0057, -3.0228, 0.0529, 0.4084, -0.0084]]
MSE_TARGET = [[0.2767, 0.0823, 1.0074, 0.6112, -0.1848],
              [2.6384, -1.4199, 1.2608, 1.8084, 0.6511],
              [0.2333, -0.9921, 1.5340, 0.3703, -0.5324]]
CE_LOGITS = [[0.1639, -1.2095, 0.0496, 1.1746, 0.9474],
             [1.0429, 1.3255, -1.2967, 0.2183, 0.3562],
             [-0.1680, 0.2891, 1.9272, 2.2542, 0.1844]]
CE_TARGETS = [4, 0, 3]


def a(x):
    return jnp.asarray(x, jnp.float32)


def test_lecture_printed_values():
    # the reconstructed inputs print as the guide's
    np.testing.assert_array_equal(np.round(np.asarray(MSE_INPUT), 4)[[0, 1], [4, 0]],
                                  [2.2488, 0.2391])
    assert round(float(losses.l1_loss(a(L1_INPUT), a(L1_TARGET))), 4) == 1.2850
    assert round(float(losses.mse_loss(a(MSE_INPUT), a(MSE_TARGET))), 4) == 2.3280
    ce = losses.cross_entropy(a(CE_LOGITS), jnp.asarray(CE_TARGETS))
    assert round(float(ce), 4) == 1.0393


def test_label_smoothing_matches_torch():
    logits, labels = a(CE_LOGITS), jnp.asarray(CE_TARGETS)
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(1.0392884, abs=1e-6)
    for eps, torch_value in ((0.1, 1.1323777), (0.3, 1.3185564)):
        assert float(losses.cross_entropy(logits, labels, label_smoothing=eps)) == pytest.approx(
            torch_value, abs=1e-6)
    # probability targets: the smoothed one-hot gives the same number
    k = logits.shape[-1]
    soft = 0.9 * jax.nn.one_hot(labels, k) + 0.1 / k
    assert float(losses.cross_entropy(logits, soft)) == pytest.approx(1.1323777, abs=1e-6)


def test_huber_and_smooth_l1_match_torch():
    x, y = a(L1_INPUT), a(L1_TARGET)
    assert float(losses.huber_loss(x, y)) == pytest.approx(0.8337645, abs=1e-6)
    assert float(losses.huber_loss(x, y, delta=0.5)) == pytest.approx(0.5220752, abs=1e-6)
    assert float(losses.smooth_l1_loss(x, y, beta=0.5)) == pytest.approx(1.0441504, abs=1e-6)
    assert float(losses.smooth_l1_loss(x, y, beta=0.0)) == pytest.approx(1.2850068, abs=1e-6)
    # small residuals: quadratic; large: linear
    d = jnp.asarray([0.5, 3.0])
    np.testing.assert_allclose(losses.huber_loss(d, jnp.zeros(2), delta=1.0, reduction="none"),
                               [0.125, 2.5])


def test_binary_cross_entropy_matches_torch_and_clamps_logs():
    x, y = a(L1_INPUT), (a(L1_TARGET) > 0).astype(jnp.float32)
    assert float(losses.binary_cross_entropy(jax.nn.sigmoid(x), y)) == pytest.approx(
        0.8677766, abs=1e-6)
    assert float(losses.binary_cross_entropy_with_logits(x, y)) == pytest.approx(0.8677766,
                                                                                abs=1e-6)
    # torch.nn.BCELoss clamps log(0) at -100: p = 0 for a positive costs 100, not inf
    clamped = losses.binary_cross_entropy(a([0.0, 1.0, 0.5]), a([1.0, 0.0, 1.0]))
    assert float(clamped) == pytest.approx(66.897713, abs=1e-4)


def test_reductions_and_errors():
    x, y = a(L1_INPUT), a(L1_TARGET)
    per = losses.l1_loss(x, y, reduction="none")
    assert per.shape == (3, 5)
    assert float(losses.l1_loss(x, y, reduction="sum")) == pytest.approx(float(per.sum()))
    with pytest.raises(jaxcnn.ConfigError, match="reduction"):
        losses.mse_loss(x, y, reduction="avg")
    with pytest.raises(jaxcnn.InputError, match="same shape"):
        losses.mse_loss(x, y[:, :1])
    with pytest.raises(jaxcnn.InputError, match="integer labels"):
        losses.cross_entropy(a(CE_LOGITS), jnp.asarray([4.0, 0.0, 3.0]))
    with pytest.raises(jaxcnn.ConfigError, match="unknown loss 'l3'"):
        losses.get_loss("l3")
    assert losses.get_loss("mae") is losses.l1_loss


def test_losses_are_differentiable_and_jittable():
    x, y = a(L1_INPUT), a(L1_TARGET)
    for name in losses.REGRESSION_LOSSES:
        g = jax.jit(jax.grad(lambda p, name=name: losses.get_loss(name)(p, y)))(x)
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    # d/dx mean|x - y| = sign(x - y) / n, as torch's L1Loss backward
    g = jax.grad(lambda p: losses.l1_loss(p, y))(x)
    np.testing.assert_allclose(g, np.sign(np.asarray(x) - np.asarray(y)) / 15, rtol=1e-6)
