"""The lesson's worked examples, degenerate inputs and jit for jaxcnn.similarity.metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.errors import InputError
from jaxcnn.similarity import METRICS, cosine, l1, mse, ncc


def test_mse_worked_example_is_0_23():
    assert float(mse(jnp.array([1, 2, 4, 5.0]), jnp.array([1.2, 2.4, 3.4, 5.6]))) == (
        pytest.approx(0.23, abs=1e-6)
    )


def test_l1_worked_example_is_sum_of_absolute_differences_7():
    assert float(l1(jnp.array([100, 105, 98, 110]), jnp.array([102, 107, 97, 108]))) == 7.0


def test_cosine_worked_example():
    expected = 70 / (math.sqrt(30) * math.sqrt(174))
    got = float(cosine(jnp.array([1, 2, 3, 4]), jnp.array([5, 6, 7, 8])))
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == pytest.approx(0.96886, abs=1e-5)


def test_ncc_worked_example():
    expected = -8 / math.sqrt(38 * 5)
    got = float(ncc(jnp.array([1, 2, 4, 9]), jnp.array([4, 3, 1, 2])))
    assert got == pytest.approx(expected, abs=1e-6)
    assert got == pytest.approx(-0.58038, abs=1e-5)


def test_metrics_flatten_any_equal_shape_and_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
    fa, fb = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    assert float(l1(a, b)) == pytest.approx(np.abs(fa - fb).sum(), rel=1e-5)
    assert float(mse(a, b)) == pytest.approx(np.mean((fa - fb) ** 2), rel=1e-5)
    cos = fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb)
    assert float(cosine(a, b)) == pytest.approx(cos, abs=1e-6)
    ca, cb = fa - fa.mean(), fb - fb.mean()
    assert float(ncc(a, b)) == pytest.approx(ca @ cb / np.linalg.norm(ca) / np.linalg.norm(cb),
                                             abs=1e-6)


def test_identical_inputs_are_most_similar():
    x = jnp.linspace(-1.0, 3.0, 17)
    assert float(l1(x, x)) == 0.0 and float(mse(x, x)) == 0.0
    assert float(cosine(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(ncc(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_ncc_is_invariant_to_brightness_and_contrast():
    x = jnp.array([0.1, 0.5, 0.2, 0.9, 0.4])
    assert float(ncc(x, 3.0 * x + 7.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(ncc(x, -x)) == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize(
    "fn, a, b, expected",
    [
        (cosine, np.zeros(6), np.arange(6.0), 0.0),  # zero vs non-zero: no direction
        (cosine, np.zeros(6), np.zeros(6), 1.0),  # two blanks compare as identical
        (ncc, np.full(6, 0.1), np.arange(6.0), 0.0),  # constant vs varying
        (ncc, np.full(6, 0.1), np.full(6, 0.3), 1.0),  # two constants (0.1 is inexact)
        (ncc, np.full(7, 1e-30), np.full(7, 5e20), 1.0),
        (cosine, np.full(5, 1e-30), np.full(5, 2e-30), 1.0),  # no underflow to 0/0
    ],
)
def test_degenerate_inputs_give_documented_values_not_nan(fn, a, b, expected):
    got = float(fn(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
    assert not math.isnan(got)
    assert got == pytest.approx(expected, abs=1e-6)


def test_metrics_are_jittable_and_directions_are_declared():
    a, b = jnp.arange(12.0).reshape(3, 4), jnp.ones((3, 4))
    for name, metric in METRICS.items():
        assert float(jax.jit(metric.fn)(a, b)) == pytest.approx(float(metric.fn(a, b)), rel=1e-6)
        assert metric.higher_is_better == (name in ("cosine", "ncc"))


def test_shape_mismatch_is_rejected_with_the_fix():
    with pytest.raises(InputError, match="same shape.*Resize"):
        mse(jnp.ones((4, 4)), jnp.ones((4, 5)))
    with pytest.raises(InputError, match="empty"):
        l1(jnp.ones((0,)), jnp.ones((0,)))
