"""pairwise and topk: a Python double loop and numpy argsort as references; blocked ==
unblocked; sharded over the 4 forced CPU devices == one device; bf16; error messages."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.errors import InputError
from jaxcnn.similarity import METRICS, pairwise, topk

RNG = np.random.default_rng(0)
X = RNG.normal(size=(11, 6)).astype(np.float32)
Y = RNG.normal(size=(9, 6)).astype(np.float32)
Y[3] = 0.0  # a zero vector (cosine rule) ...
Y[5] = 0.25  # ... and a constant one (ncc rule)


def _loop(x, y, metric):
    fn = METRICS[metric].fn
    return np.array([[float(fn(a, b)) for b in y] for a in x])


REF = {name: _loop(X, Y, name) for name in METRICS}


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_pairwise_equals_python_double_loop_blocked_and_unblocked(metric):
    ref = REF[metric]
    unblocked = np.asarray(pairwise(X, Y, metric))
    blocked = np.asarray(pairwise(X, Y, metric, block_size=2))  # uneven: pads 11 and 9
    np.testing.assert_allclose(unblocked, ref, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(blocked, unblocked, rtol=1e-6, atol=1e-6)
    assert unblocked.shape == (11, 9) and unblocked.dtype == np.float32


@pytest.mark.parametrize("metric", ["cosine", "l1"])
def test_sharded_over_four_devices_equals_single_device(metric):
    assert len(jax.devices()) == 4
    one = [jax.devices()[0]]
    np.testing.assert_allclose(np.asarray(pairwise(X, Y, metric, block_size=3)),
                               np.asarray(pairwise(X, Y, metric, devices=one)), rtol=1e-6,
                               atol=1e-6)
    s4, i4 = topk(X, Y, 4, metric, block_size=2)
    s1, i1 = topk(X, Y, 4, metric, devices=one)
    np.testing.assert_array_equal(np.asarray(i4), np.asarray(i1))
    np.testing.assert_allclose(np.asarray(s4), np.asarray(s1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_topk_equals_numpy_argsort(metric):
    ref = REF[metric]
    higher = METRICS[metric].higher_is_better
    order = np.argsort(-ref if higher else ref, axis=1, kind="stable")[:, :5]
    scores, idx = topk(X, Y, 5, metric, block_size=2, query_block_size=4)
    np.testing.assert_array_equal(np.asarray(idx), order)
    np.testing.assert_allclose(np.asarray(scores), np.take_along_axis(ref, order, 1),
                               rtol=1e-5, atol=2e-6)


def test_topk_k_equal_to_database_size_and_ties_go_to_lower_index():
    db = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]], np.float32)
    scores, idx = topk(np.array([[1.0, 0.0]], np.float32), db, 4, "cosine", block_size=1)
    np.testing.assert_array_equal(np.asarray(idx)[0], [0, 2, 3, 1])  # three ties at cosine 1
    np.testing.assert_allclose(np.asarray(scores)[0], [1, 1, 1, 0], atol=1e-6)


def test_bfloat16_inputs_accumulate_in_float32():
    x = RNG.normal(size=(8, 64)).astype(np.float32)
    y = RNG.normal(size=(10, 64)).astype(np.float32)
    exact = np.asarray(pairwise(x, y, "cosine"))
    bf16 = np.asarray(pairwise(x, y, "cosine", dtype=jnp.bfloat16))
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, exact, atol=2e-2)
    assert np.abs(bf16 - exact).max() > 0  # really rounded to bf16
    xs = jnp.asarray(x, jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(pairwise(xs, xs, "mse", dtype=jnp.bfloat16)).diagonal(),
                               0.0, atol=1e-6)
    _, idx = topk(x, y, 3, "cosine", dtype=jnp.bfloat16)
    assert np.asarray(idx).shape == (8, 3)


def test_pairwise_of_a_set_with_itself_is_symmetric():
    m = np.asarray(pairwise(X, None, "ncc"))
    np.testing.assert_allclose(m, m.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pairwise(X, Y[:, :5]), "same vector length"),
        (lambda: pairwise(X[0], Y), "rank-2.*a\\[None\\]"),
        (lambda: pairwise(np.zeros((0, 6)), Y), "empty"),
        (lambda: topk(X, Y, 10), "k=10 is larger than the database \\(9 vectors\\)"),
        (lambda: topk(X, Y, 0), "positive integer"),
        (lambda: topk(X, Y[:, :3], 2), "same vector length"),
        (lambda: topk(X, Y, 2, "euclid"), "unknown similarity metric"),
        (lambda: pairwise(X, Y, block_size=0), "positive integers"),
    ],
)
def test_bad_inputs_raise_input_error_with_the_fix(call, message):
    with pytest.raises(InputError, match=message):
        call()
