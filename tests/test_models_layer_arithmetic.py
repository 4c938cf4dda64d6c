"""The lessons' worked examples of convolution, pooling, output sizes and BatchNorm, computed
with jaxcnn's own layers (and flax's, where jaxcnn models call them directly), plus plain
Python loops as references for the general case.

Where the issue quotes only a lesson's printed OUTPUT, the input below was reconstructed: an
integer input (and kernel) found by solving the linear equations output = f(input) with
scipy's `milp`, preferring values near the middle of the range so most taps are non-zero.
Any input with the stated output checks the same arithmetic; these are documented per test.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import conv_output_size
from jaxcnn.errors import InputError
from jaxcnn.models.layers import BatchNorm, ConvBNAct, max_pool


def conv2d(x: np.ndarray, kernel: np.ndarray, *, bias: float = 0.0, stride=(1, 1),
           padding=((0, 0), (0, 0)), groups: int = 1) -> np.ndarray:  # fmt: skip
    """One image [H, W, C] through `flax.linen.Conv` with a given HWIO kernel."""
    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], stride, padding=padding,
                   feature_group_count=groups)  # fmt: skip
    params = {"kernel": jnp.asarray(kernel, jnp.float32),
              "bias": jnp.full(kernel.shape[-1], bias, jnp.float32)}  # fmt: skip
    return np.asarray(conv.apply({"params": params}, jnp.asarray(x, jnp.float32)[None])[0])


def loop_conv(x, kernel, stride, padding):
    """Plain-Python cross-correlation of [H, W, C] with [kh, kw, C, O] (the reference)."""
    (pt, pb), (pl, pr) = padding
    xp = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
    kh, kw, _, out_c = kernel.shape
    oh = (xp.shape[0] - kh) // stride[0] + 1
    ow = (xp.shape[1] - kw) // stride[1] + 1
    out = np.zeros((oh, ow, out_c))
    for i, j, o in itertools.product(range(oh), range(ow), range(out_c)):
        window = xp[i * stride[0]: i * stride[0] + kh, j * stride[1]: j * stride[1] + kw]
        out[i, j, o] = np.sum(window * kernel[..., o])
    return out


def test_conv_with_padding_and_stride_worked_example():
    # Lesson: 4x4 input, 3x3 kernel, padding 1, stride 2, bias 1 -> [[7, 8], [15, 13]].
    # Reconstructed input and kernel (the issue prints only the output).
    x = np.array([[2, 2, 2, 2], [2, 4, 2, 1], [5, 2, 0, 2], [2, 5, 2, 2]], np.float32)
    k = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)
    y = conv2d(x[..., None], k[..., None, None], bias=1.0, stride=(2, 2),
               padding=((1, 1), (1, 1)))  # fmt: skip
    assert conv_output_size(4, 3, 2, 1) == 2
    np.testing.assert_array_equal(y[..., 0], [[7, 8], [15, 13]])


def test_two_channel_convolution_worked_example():
    # Lesson: each channel of a 2-channel 3x3 input correlated with its 2x2 kernel slice gives
    # [[15, 19], [23, 18]] and [[25, 36], [30, 37]]; the convolution (one 2x2x2 filter) adds
    # them. Reconstructed inputs; kernels [[0, 1], [2, 3]] and [[1, 2], [3, 4]].
    x = np.stack([np.array([[3, 3, 6], [3, 2, 3], [6, 3, 3]]),
                  np.array([[3, 4, 3], [2, 2, 5], [4, 3, 4]])], axis=-1).astype(np.float32)
    k = np.stack([np.array([[0, 1], [2, 3]]), np.array([[1, 2], [3, 4]])], axis=-1)
    per_channel = conv2d(x, k[:, :, None, :].astype(np.float32), groups=2)  # depthwise
    np.testing.assert_array_equal(per_channel[..., 0], [[15, 19], [23, 18]])
    np.testing.assert_array_equal(per_channel[..., 1], [[25, 36], [30, 37]])
    summed = conv2d(x, k[..., None].astype(np.float32))
    np.testing.assert_array_equal(summed[..., 0], [[40, 55], [53, 55]])


def test_vertical_edge_filter_on_6x6():
    x = np.tile(np.array([10, 10, 10, 0, 0, 0], np.float32), (6, 1))
    k = np.tile(np.array([1, 0, -1], np.float32), (3, 1))
    y = conv2d(x[..., None], k[..., None, None])
    np.testing.assert_array_equal(y[..., 0], np.tile([0, 30, 30, 0], (4, 1)))


@pytest.mark.parametrize("stride,padding", [((2, 3), ((1, 0), (2, 1))), ((1, 2), ((0, 2), (1, 1)))])
def test_conv_matches_a_python_loop_with_non_square_stride_and_padding(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (7, 9, 2)).astype(np.float32)
    k = rng.integers(-2, 3, (3, 2, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(conv2d(x, k, stride=stride, padding=padding),
                                  loop_conv(x, k, stride, padding))  # fmt: skip


# The lesson's 6x6 pooling input, reconstructed: its (3, 2)-window sums at stride 2 are
# [[12, 10, 5], [11, 10, 8]], i.e. the averages the lesson prints.
POOL_INPUT = np.array([[2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 0, 1], [2, 2, 0, 2, 0, 0],
                       [2, 1, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 2]], np.float32)


def loop_pool(x, window, stride, reduce):
    oh = (x.shape[0] - window[0]) // stride[0] + 1
    ow = (x.shape[1] - window[1]) // stride[1] + 1
    return np.array([[reduce(x[i * stride[0]: i * stride[0] + window[0],
                              j * stride[1]: j * stride[1] + window[1]])
                      for j in range(ow)] for i in range(oh)])  # fmt: skip


def test_average_pool_non_square_window_worked_example():
    y = nn.avg_pool(jnp.asarray(POOL_INPUT)[None, ..., None], (3, 2), (2, 2))[0, ..., 0]
    np.testing.assert_allclose(y, [[2, 1.667, 0.833], [1.833, 1.667, 1.333]], atol=5e-4)
    np.testing.assert_allclose(y, loop_pool(POOL_INPUT, (3, 2), (2, 2), np.mean), rtol=1e-6)


@pytest.mark.parametrize("window,stride", [((3, 2), (2, 2)), ((2, 3), (1, 3)), ((2, 2), (2, 1))])
def test_max_pool_non_square_matches_a_python_loop(window, stride):
    x = np.arange(36, dtype=np.float32).reshape(6, 6) * 7 % 11  # no ties in a window order
    y = max_pool(jnp.asarray(x)[None, ..., None], window, stride)[0, ..., 0]
    np.testing.assert_array_equal(y, loop_pool(x, window, stride, np.max))
    assert y.shape == conv_output_size((6, 6), window, stride)


def test_conv_output_size_formula_matches_xla_shapes():
    """floor((M + P_low + P_high - D(K - 1) - 1) / S) + 1 against the shapes XLA computes,
    non-square kernels, strides, paddings and dilations included."""
    cases = itertools.product((7, 10), (1, 3), (2, 5), (1, 2, 3), (0, 1, 2), (1, 2))
    for m, kh, kw, s, p, d in cases:
        size, kernel, stride, padding = (m, m + 3), (kh, kw), (s, s + 1), ((p, 0), (1, p))
        if min(size[0] + p - d * (kh - 1), size[1] + 1 + p - d * (kw - 1)) < 1:
            continue
        out = jax.eval_shape(
            lambda x, w, stride=stride, padding=padding, d=d: jax.lax.conv_general_dilated(
                x, w, stride, padding, rhs_dilation=(d, d),
                dimension_numbers=("NHWC", "HWIO", "NHWC")),
            jax.ShapeDtypeStruct((1, *size, 1), jnp.float32),
            jax.ShapeDtypeStruct((*kernel, 1, 1), jnp.float32),
        ).shape[1:3]  # fmt: skip
        assert conv_output_size(size, kernel, stride, padding, d) == out


def test_conv_output_size_lesson_values_and_errors():
    assert conv_output_size(227, 11, 4) == 55  # AlexNet conv1
    assert conv_output_size(224, 7, 2, 3) == 112  # ResNet stem
    assert conv_output_size((6, 6), (3, 2), 2) == (2, 3)  # the average-pool example
    assert conv_output_size((5, 7), 3, (2, 1), (1, 0)) == (3, 5)
    with pytest.raises(InputError, match="does not fit"):
        conv_output_size(4, 7)
    with pytest.raises(InputError, match="one value per axis"):
        conv_output_size((4, 4), (3, 3, 3))


def test_dilated_conv_block_equals_a_conv_with_a_zero_inserted_kernel():
    x = np.random.default_rng(1).normal(size=(1, 9, 9, 2)).astype(np.float32)
    block = ConvBNAct(3, 3, dilation=2, norm=None, act=None)
    kernel = np.random.default_rng(2).normal(size=(3, 3, 2, 3)).astype(np.float32)
    variables = {"params": {"conv": {"kernel": kernel}}}
    sparse = np.zeros((5, 5, 2, 3), np.float32)
    sparse[::2, ::2] = kernel
    y = block.apply(variables, x)
    assert y.shape == x.shape[:3] + (3,)  # same padding: dilation * (k - 1) // 2 = 2
    np.testing.assert_allclose(y[0], loop_conv(x[0], sparse, (1, 1), ((2, 2), (2, 2))),
                               rtol=1e-5, atol=1e-5)


# The lesson's BatchNorm batch: 4 examples x 3 features. Reconstructed from what the issue
# prints: column means [2.25, 2.5, 1.25], the first column's normalized values
# [-0.169, 1.183, -1.521, 0.507] (deviations in ratio -1 : 7 : -9 : 3), and torch's running
# variances after one step from 1, [1.1917, 1.0667, 1.2583] (unbiased batch variances
# 35/12, 5/3, 43/12). Column 2 holds the entries of the lecture's two printing errors.
LESSON = np.array([[2, 1, 0], [4, 3, 4], [0, 2, 1], [3, 4, 0]], np.float32)
FRESH = {"params": {"scale": np.ones(3, np.float32), "bias": np.zeros(3, np.float32)},
         "batch_stats": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)}}


def test_batchnorm_training_step_on_the_lesson_batch():
    bn = BatchNorm(use_running_average=False, epsilon=1e-5)
    y, updates = bn.apply(FRESH, LESSON, mutable=["batch_stats"])
    mu = LESSON.mean(0)
    np.testing.assert_allclose(mu, [2.25, 2.5, 1.25])
    np.testing.assert_allclose(y[:, 0], [-0.169, 1.183, -1.521, 0.507], atol=5e-4)
    # Row 4, column 2 (x = 4): (4 - 2.5) / sqrt(1.25) = +1.342. The lecture prints -1.342.
    np.testing.assert_allclose(y[3, 1], 1.342, atol=5e-4)
    np.testing.assert_allclose(y[0, 1], -1.342, atol=5e-4)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mu, rtol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], [1.1917, 1.0667, 1.2583], atol=5e-5)


def test_batchnorm_scale_shift_and_inference_on_the_lesson_batch():
    variables = {"params": {"scale": np.full(3, 0.5, np.float32),
                            "bias": np.full(3, 0.05, np.float32)},
                 "batch_stats": {"mean": LESSON.mean(0), "var": LESSON.var(0)}}  # fmt: skip
    train = BatchNorm(use_running_average=False, epsilon=1e-5)
    y_train, _ = train.apply(variables, LESSON, mutable=["batch_stats"])
    # Row 3, column 2 (x = 2): 0.5 * (2 - 2.5) / sqrt(1.25) + 0.05 = -0.174. The lecture
    # prints -0.129.
    np.testing.assert_allclose(y_train[2, 1], -0.174, atol=5e-4)
    np.testing.assert_allclose(y_train[3, 1], 0.5 * 1.342 + 0.05, atol=5e-4)
    # Inference normalizes with the stored (population) statistics, here the batch's own, so
    # it reproduces the training output; gamma * x_hat + beta everywhere.
    y_eval = BatchNorm(use_running_average=True, epsilon=1e-5).apply(variables, LESSON)
    np.testing.assert_allclose(y_eval, y_train, rtol=1e-6, atol=1e-6)
    x_hat = (LESSON - LESSON.mean(0)) / np.sqrt(LESSON.var(0) + 1e-5)
    np.testing.assert_allclose(y_eval, 0.5 * x_hat + 0.05, rtol=1e-5, atol=1e-6)
